"""Monitoring API: health (with its own worker, beat and Redis), routes, workflow health,
alert rules (validation, built-ins, secrets), and the evaluator on real services."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from sqlalchemy import text
from werkzeug.serving import make_server

from atom.client import ApiError, Client
from atom.config import Settings
from tests.conftest import Processes, wait_for_worker
from tests.integration.helpers import action, trigger, workflow

HEALTH = "/api/workflows/monitoring/health"


def serve(settings: Settings) -> tuple[str, Callable[[], None]]:
    from api.app import create_app

    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server.shutdown


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_health_is_public_and_not_swallowed_by_the_workflow_routes(api_url: str, worker):
    answer = requests.get(api_url + HEALTH, timeout=30)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["components"]["database"] == {"status": "ok"}
    assert body["components"]["broker"] == {"status": "ok"}
    assert body["components"]["workers"]["count"] >= 1
    assert body["status"] in ("ok", "degraded")  # degraded while no beat runs
    for path in ("/api/workflows/monitoring", "/api/workflows/monitoring/nothing"):
        missing = requests.get(api_url + path, timeout=30)
        assert missing.status_code == 404 and missing.json()["code"] == 404, path
    spec = requests.get(api_url + "/api/openapi.json", timeout=30).json()["paths"]
    for path in (
        HEALTH,
        "/api/workflows/monitoring/metrics",
        "/api/workflows/monitoring/alerts",
        "/api/workflows/monitoring/status",
        "/api/workflows/{workflow_id}/health",
        "/api/executions/{execution_id}/events",
    ):
        assert path in spec, path
    assert "security" not in spec[HEALTH]["get"]


@pytest.mark.parametrize("broken", ["database", "broker"])
def test_health_is_503_and_down_without_database_or_broker(settings_with, broken: str):
    from cli.embedded import free_port

    dead = free_port()
    changes = (
        {"database_url": f"postgresql+psycopg2://postgres@127.0.0.1:{dead}/atom"}
        if broken == "database"
        else {"redis_url": f"redis://127.0.0.1:{dead}/0", "broker_url": None}
    )
    url, stop = serve(settings_with(**changes))
    try:
        answer = requests.get(url + HEALTH, timeout=30)
    finally:
        stop()
    assert answer.status_code == 503
    body = answer.json()
    assert body["status"] == "down"
    assert body["components"][broken] == {"status": "down"}
    other = "broker" if broken == "database" else "database"
    assert body["components"][other] == {"status": "ok"}
    assert "127.0.0.1" not in answer.text  # public: no connection details


@pytest.fixture
def own_platform(
    settings: Settings, processes: Processes, tmp_path: Path
) -> Iterator[tuple[Settings, str]]:
    """A Redis, API, beat and workers of their own: stopping these workers stops the last
    worker this API can see, without touching the session's worker."""
    from cli import embedded

    redis = embedded.start_redis(tmp_path / "redis")
    own = Settings(
        **{
            **settings.__dict__,
            "redis_url": redis.url,
            "auto_recovery_enabled": False,
            "monitoring_enabled": False,
        }
    )
    url, stop = serve(own)
    try:
        yield own, url
    finally:
        stop()
        redis.stop()


def test_health_turns_degraded_without_workers_or_beat_and_ok_again(
    own_platform: tuple[Settings, str], processes: Processes
):
    own, url = own_platform
    env = own.as_env()

    def health() -> dict:
        return requests.get(url + HEALTH, timeout=30).json()

    first = health()
    assert first["status"] == "degraded"
    assert first["components"]["workers"]["count"] == 0
    assert first["components"]["beat"]["status"] == "down"

    def start_worker(n: int):
        name = f"health{n}@{socket.gethostname()}"
        proc = processes.start(
            "worker",
            "--queues=health-only",
            "--concurrency=1",
            f"--hostname={name}",
            env=env,
            name=name.split("@")[0],
        )
        wait_for_worker(own, proc, hostname=name)
        return proc

    beat = processes.start("beat", env=env, name="health-beat")
    worker = start_worker(1)
    try:
        wait_for(lambda: health()["status"] == "ok", 30, "ok with a worker and a beat")
        assert health()["components"]["beat"]["age_s"] < 30
        processes.stop(worker)
        took = wait_for(lambda: health()["status"] == "degraded", 30, "degraded")
        assert took < 30
        print(f"health turned degraded {took:.1f} s after the last worker stopped")
        assert health()["components"]["workers"]["count"] == 0
        worker = start_worker(2)
        wait_for(lambda: health()["status"] == "ok", 30, "ok again")
    finally:
        processes.stop(worker)
        processes.stop(beat)


# ---------------------------------------------------------------------------------------------
# Workflow health and alert rules

SLOW = workflow(
    "slow", [trigger(), action("w", "delay", seconds="{{ input.s }}")], [("start", "w")]
)


def _age_runs(settings: Settings, execution_ids: list[str], days: float) -> None:
    """Move runs into the past, as if they ran ``days`` ago (the latency baseline)."""
    from sqlalchemy import create_engine

    engine = create_engine(settings.database_url or "")
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE executions SET created_at = created_at - make_interval(secs => :s), "
                "started_at = started_at - make_interval(secs => :s), "
                "finished_at = finished_at - make_interval(secs => :s) "
                "WHERE id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"s": days * 86400, "ids": execution_ids},
        )
    engine.dispose()


def test_workflow_health_scores_success_latency_and_alerts(
    client: Client, api_url: str, settings: Settings, make_key
):
    from atom.alerts import evaluation as alerts
    from atom.celery_app import make_celery
    from atom.observe.probe import Probe
    from atom.store.db import make_engine, make_sessionmaker

    wf = client.create_workflow(SLOW)
    fresh = client.request("GET", f"/api/workflows/{wf['id']}/health")
    assert fresh["score"] == 100 and fresh["status"] == "healthy"
    assert set(fresh["factors"]) == {"success_rate", "latency", "open_alerts", "anomalies"}

    baseline = [client.execute(wf["id"], {"s": 0.05}) for _ in range(6)]
    for run in baseline:
        assert client.wait(run["id"])["status"] == "succeeded"
    _age_runs(settings, [r["id"] for r in baseline], days=2)
    slow = [client.execute(wf["id"], {"s": 0.8}) for _ in range(2)]
    failed = client.execute(wf["id"], {"s": "soon"})  # not a number: the step fails
    for run in slow + [failed]:
        client.wait(run["id"])

    health = client.request("GET", f"/api/workflows/{wf['id']}/health?window=1h")
    factors = health["factors"]
    assert factors["success_rate"]["value"] == pytest.approx(2 / 3)
    assert factors["success_rate"]["points"] == pytest.approx(45 * 2 / 3, abs=0.1)
    assert factors["latency"]["baseline_runs"] == 6 and factors["latency"]["value"] > 3
    assert factors["latency"]["points"] == 0
    assert health["score"] == round(45 * 2 / 3 + 0 + 15 + 15)

    # The built-in performance rule sees the same degradation and fires about the workflow.
    factory = make_sessionmaker(make_engine(settings.database_url or ""))
    celery = make_celery(settings)
    probe = Probe(factory, celery, settings)
    try:
        alerts.evaluate(factory, probe, settings)
    finally:
        probe.close()
        celery.close()
    active = client.request("GET", "/api/workflows/monitoring/alerts")["active"]
    perf = [a for a in active if a["metric"] == "performance_degradation"]
    assert [(a["workflow_id"], a["severity"]) for a in perf] == [(wf["id"], "high")]
    assert perf[0]["value"] > 2
    after = client.request("GET", f"/api/workflows/{wf['id']}/health?window=1h")
    assert after["factors"]["open_alerts"]["value"] == 1
    assert after["factors"]["open_alerts"]["points"] == 5  # high: -10
    assert after["score"] == health["score"] - 10

    stranger = Client(api_url, make_key("admin"))
    with pytest.raises(ApiError) as caught:
        stranger.request("GET", f"/api/workflows/{wf['id']}/health")
    assert caught.value.status == 404
    with pytest.raises(ApiError) as caught:
        client.request("GET", f"/api/workflows/{wf['id']}/health?window=-1h")
    assert caught.value.status == 422


RULES = "/api/workflows/monitoring/alerts"


def test_alert_rule_validation_lists_every_problem(client: Client):
    with pytest.raises(ApiError) as caught:
        client.request(
            "POST",
            RULES,
            json={
                "metric": "vibes",
                "threshold": "high",
                "window": "forever",
                "severity": "urgent",
                "cooldown": -5,
                "channels": [
                    {"type": "pager"},
                    {"type": "webhook", "url": "ftp://x"},
                    {"type": "email", "to": "not-an-address"},
                ],
                "colour": "red",
            },
        )
    assert caught.value.status == 422
    errors = caught.value.body["errors"]
    assert set(errors) == {
        "name",
        "metric",
        "threshold",
        "window",
        "severity",
        "cooldown",
        "channels[0]",
        "channels[1]",
        "channels[2]",
        "colour",
    }
    with pytest.raises(ApiError) as caught:
        client.request("POST", RULES, json={"name": "x", "metric": "error_rate", "threshold": 10})
    assert "fraction" in caught.value.body["errors"]["threshold"][0]
    with pytest.raises(ApiError) as caught:
        client.request(
            "POST",
            RULES,
            json={
                "name": "x",
                "metric": "workers",
                "workflow_id": "00000000-0000-0000-0000-000000000000",
            },
        )
    assert "platform" in caught.value.body["errors"]["workflow_id"][0]
    with pytest.raises(ApiError) as caught:
        client.request(
            "POST",
            RULES,
            json={
                "name": "x",
                "metric": "error_rate",
                "threshold": 0.2,
                "workflow_id": "6a0f3c52-1111-4a5e-9d1e-5d2b0a1c9e77",
            },
        )
    assert caught.value.body["errors"] == {
        "workflow_id": ["no workflow 6a0f3c52-1111-4a5e-9d1e-5d2b0a1c9e77"]
    }
    with pytest.raises(ApiError) as caught:
        client.request("POST", RULES, data="[1, 2", headers={"Content-Type": "application/json"})
    assert caught.value.status == 400  # the body is not JSON at all: where it breaks
    assert caught.value.body["errors"] == {
        "json": ["Expecting ',' delimiter at line 1, column 6 (character 5)"]
    }


def test_rules_crud_builtins_roles_and_redacted_secrets(client: Client, api_url: str, make_key):
    overview = client.request("GET", RULES)
    builtins = {r["builtin"]: r for r in overview["rules"] if r["builtin"]}
    assert set(builtins) == {"performance_degradation", "error_rate", "anomaly"}
    assert (
        builtins["performance_degradation"]["threshold"],
        builtins["performance_degradation"]["severity"],
        builtins["performance_degradation"]["cooldown"],
    ) == (2.0, "high", 300)
    assert (
        builtins["error_rate"]["threshold"],
        builtins["error_rate"]["severity"],
        builtins["error_rate"]["cooldown"],
    ) == (0.1, "critical", 600)

    secret = "https://hooks.example.com/services/T000/B000/s3cr3t-t0ken?x=1"
    client.request("PUT", "/api/settings", json={"email_allowed_domains": ["b.example"]})
    created = client.session.post(
        api_url + RULES,
        json={
            "name": "queue backlog",
            "metric": "queue_depth",
            "threshold": 1000,
            "channels": [
                {"type": "slack", "url": secret},
                {"type": "email", "to": ["a@b.example"]},
            ],
        },
        timeout=30,
    )
    assert created.status_code == 201, created.text
    rule = created.json()
    assert "s3cr3t" not in created.text
    assert rule["channels"][0] == {"type": "slack", "url": "https://hooks.example.com/***"}
    assert rule["comparison"] == ">" and rule["window"] == "5m" and rule["cooldown"] == 300
    assert created.headers["Location"].endswith(f"/monitoring/alerts/rules/{rule['id']}")
    assert "s3cr3t" not in client.session.get(api_url + RULES, timeout=30).text

    item = f"{RULES}/rules/{rule['id']}"
    with pytest.raises(ApiError) as caught:  # a redacted URL sent back is refused
        client.request("PATCH", item, json={"channels": rule["channels"]})
    assert "redacted" in caught.value.body["errors"]["channels[0]"][0]
    tuned = client.request(
        "PATCH",
        f"{RULES}/rules/{builtins['error_rate']['id']}",
        json={"threshold": 0.25, "window": "30m"},
    )
    assert (tuned["threshold"], tuned["window"], tuned["metric"]) == (0.25, "30m", "error_rate")
    with pytest.raises(ApiError) as caught:
        client.request(
            "PATCH", f"{RULES}/rules/{builtins['error_rate']['id']}", json={"metric": "workers"}
        )
    assert caught.value.status == 422
    with pytest.raises(ApiError) as caught:
        client.request("DELETE", f"{RULES}/rules/{builtins['error_rate']['id']}")
    assert caught.value.status == 409
    assert (
        client.request(
            "PATCH", f"{RULES}/rules/{builtins['error_rate']['id']}", json={"enabled": False}
        )["enabled"]
        is False
    )

    viewer = Client(api_url, make_key("viewer"))
    with pytest.raises(ApiError) as caught:
        viewer.request("POST", RULES, json={"name": "x", "metric": "workers"})
    assert caught.value.status == 403
    with pytest.raises(ApiError) as caught:
        viewer.request("GET", item)
    assert caught.value.status == 404  # another tenant's rule
    client.request("DELETE", item)
    assert all(r["id"] != rule["id"] for r in client.request("GET", RULES)["rules"])

    status = client.request("GET", "/api/workflows/monitoring/status")
    assert status["enabled"] is True and status["interval_s"] == 30
    assert status["rules"] == {"total": 3, "enabled": 2}
    assert status["alerts"] == {"firing": 0}


def test_the_evaluator_is_scheduled_by_beat(settings: Settings):
    from beat.main import periodic_jobs

    jobs = periodic_jobs(settings)
    assert jobs["atom-monitor"]["task"] == "atom.maintenance.evaluate_alerts"
    assert jobs["atom-monitor"]["schedule"] == timedelta(seconds=30)
    assert jobs["atom-monitor"]["options"]["queue"] == "atom.maintenance"
    off = Settings(**{**settings.__dict__, "monitoring_enabled": False})
    assert "atom-monitor" not in periodic_jobs(off)
