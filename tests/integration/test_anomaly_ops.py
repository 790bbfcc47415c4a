"""Custom metrics, scoring of ATOM's own metrics on the ML pool, ``anomaly`` alert rules and
the health score, on real processes: the API, the session's worker (maintenance queue), an
ML worker, and a beat that fires scoring and evaluation every second.

The first test runs before the module's ML worker starts: scoring waits, then resumes."""

from __future__ import annotations

import json
import random
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from atom.client import ApiError, Client
from atom.config import Settings
from tests.conftest import Processes
from tests.integration.helpers import action, trigger, workflow
from tests.integration.loopback import LoopbackService

pytestmark = pytest.mark.integration

METRICS = "/api/workflows/monitoring/metrics"
RULES = "/api/workflows/monitoring/alerts"


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _factory(settings: Settings):
    from atom.store.db import make_engine, make_sessionmaker

    return make_sessionmaker(make_engine(settings.database_url or "", pool_size=2))


def _points(client: Client, **query: object) -> list[dict]:
    return client.request("GET", f"{METRICS}/points", params={"page_size": 100, **query})


def test_scoring_waits_for_the_ml_pool_and_resumes(
    client: Client, settings: Settings, settings_with, request: pytest.FixtureRequest
):
    from atom.anomaly import scoring
    from atom.ml.client import MLClient

    name = f"queue.lag.{uuid.uuid4().hex[:6]}"
    start = datetime.now(UTC) - timedelta(minutes=30)
    client.request(
        "POST",
        f"{METRICS}/batch",
        json={
            "points": [
                {"name": name, "value": 10 + (i % 3), "unit": "s", "timestamp": iso}
                for i, iso in enumerate(
                    (start + timedelta(minutes=i)).isoformat() for i in range(30)
                )
            ]
        },
    )
    quick = settings_with(ml_timeout=1.0)
    factory = _factory(quick)
    try:
        started = time.monotonic()
        down = scoring.score_pass(
            factory, MLClient(settings).call, settings, ping=MLClient(quick).call
        )
        assert time.monotonic() - started < 4  # the quick ping, not the scoring wait
        assert down["waiting_for_ml"] is True and down["points_scored"] == 0
        assert not any(p["scored"] for p in _points(client, name=name))
        request.getfixturevalue("ml_worker")  # the pool comes up
        up = scoring.score_pass(factory, MLClient(settings).call, settings)
        assert up["waiting_for_ml"] is False and up["points_scored"] >= 30
    finally:
        factory.kw["bind"].dispose()
    points = _points(client, name=name)
    assert len(points) == 30 and all(p["scored"] for p in points)
    assert all(0 <= p["score"] <= 1 for p in points)
    assert [p["value"] for p in points] == [10 + (i % 3) for i in range(30)]
    assert points[-1]["expected"][0] < 11 < points[-1]["expected"][1]


def test_custom_metrics_record_read_paginate_isolate_validate_and_prune(
    client: Client, api_url: str, make_key, settings: Settings, settings_with
):
    from atom.anomaly import store

    wf = client.create_workflow(
        workflow("metered", [trigger(), action("a", "log", message="hi")], [("start", "a")])
    )
    one = client.request(
        "POST", METRICS, json={"name": "orders.processed", "value": 12, "unit": "orders"}
    )
    assert one["recorded"] == 1 and one["points"][0]["unit"] == "orders"
    base = datetime.now(UTC) - timedelta(hours=2)
    batch = client.request(
        "POST",
        f"{METRICS}/batch",
        json={
            "points": [
                {
                    "name": "orders.processed",
                    "value": float(i),
                    "workflow_id": wf["id"],
                    "timestamp": (base + timedelta(seconds=i)).timestamp(),
                }
                for i in range(25)
            ]
        },
    )
    assert batch["recorded"] == 25

    # Read back: oldest first, paginated like the other lists.
    response = client.session.get(
        f"{api_url}{METRICS}/points",
        params={"name": "orders.processed", "workflow_id": wf["id"], "page": 2, "page_size": 10},
        timeout=10,
    )
    assert response.status_code == 200
    assert json.loads(response.headers["X-Pagination"])["total"] == 25
    assert [p["value"] for p in response.json()] == [float(i) for i in range(10, 20)]
    # The tenant-wide series of that name is another series (the one point without workflow).
    assert [p["value"] for p in _points(client, name="orders.processed")] == [12.0]
    window = _points(
        client,
        name="orders.processed",
        workflow_id=wf["id"],
        since=(base + timedelta(seconds=5)).isoformat(),
        until=str((base + timedelta(seconds=8)).timestamp()),
    )
    assert [p["value"] for p in window] == [5.0, 6.0, 7.0]
    listed = client.request("GET", f"{METRICS}/series", params={"kind": "custom"})
    assert {(s["name"], s["workflow_id"]) for s in listed} == {
        ("orders.processed", None),
        ("orders.processed", wf["id"]),
    }

    # Another tenant: a 404 for the workflow, nothing under the name.
    stranger = Client(api_url, make_key("admin"))
    for call in (
        lambda: stranger.request(
            "POST", METRICS, json={"name": "x", "value": 1, "workflow_id": wf["id"]}
        ),
        lambda: _points(stranger, name="orders.processed", workflow_id=wf["id"]),
    ):
        with pytest.raises(ApiError) as caught:
            call()
        assert caught.value.status == 404
    assert _points(stranger, name="orders.processed") == []
    assert stranger.request("GET", f"{METRICS}/series", params={"kind": "custom"}) == []

    # Roles: a viewer reads, an operator records.
    viewer = Client(api_url, make_key("viewer"))
    with pytest.raises(ApiError) as caught:
        viewer.request("POST", METRICS, json={"name": "x", "value": 1})
    assert caught.value.status == 403

    # 422 names every problem, and where.
    with pytest.raises(ApiError) as caught:
        client.request(
            "POST",
            METRICS,
            json={
                "name": "9 bad name",
                "value": "12",
                "unit": "u" * 33,
                "timestamp": "yesterday",
                "extra": 1,
            },
        )
    assert caught.value.status == 422
    assert set(caught.value.body["errors"]) == {"name", "value", "unit", "timestamp", "extra"}
    ahead = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    for body, where in (
        ({"name": "m", "value": True}, "value"),
        ({"name": "m", "value": 1e300}, "value"),
        ({"name": "m", "value": 1, "timestamp": ahead}, "timestamp"),
        ({"name": "m", "value": 1, "timestamp": 0}, "timestamp"),  # past the retention
        ({"name": "m" * 201, "value": 1}, "name"),
        ({"value": 1}, "name"),
    ):
        with pytest.raises(ApiError) as caught:
            client.request("POST", METRICS, json=body)
        assert caught.value.status == 422 and list(caught.value.body["errors"]) == [where], body
    with pytest.raises(ApiError) as caught:
        client.request(
            "POST",
            f"{METRICS}/batch",
            json={"points": [{"name": "ok", "value": 1}, {"name": "ok", "value": None}]},
        )
    assert caught.value.status == 422 and list(caught.value.body["errors"]) == ["points[1].value"]
    for query in ({"kind": "custom"}, {"kind": "workflow_duration"}, {"name": "m", "min_score": 2}):
        with pytest.raises(ApiError) as caught:
            _points(client, **query)
        assert caught.value.status == 422

    # Retention: points older than it go, with the series they leave empty.
    factory = _factory(settings)
    try:
        pruned = store.prune(factory, retention_days=1 / 24)  # one hour
        assert pruned["points"] >= 25
    finally:
        factory.kw["bind"].dispose()
    assert _points(client, name="orders.processed", workflow_id=wf["id"]) == []
    assert [p["value"] for p in _points(client, name="orders.processed")] == [12.0]


def test_anomaly_rule_validation_and_the_builtin_rule(client: Client, api_url: str, make_key):
    wf = client.create_workflow(
        workflow("watched", [trigger(), action("a", "log", message="hi")], [("start", "a")])
    )
    rule = client.request(
        "POST",
        RULES,
        json={
            "name": "Slow checkout",
            "metric": "anomaly",
            "series": {"kind": "workflow_duration", "workflow_id": wf["id"]},
            "threshold": 0.95,
        },
    )
    assert (rule["comparison"], rule["window"], rule["workflow_id"]) == (">=", "1h", wf["id"])
    assert rule["series"] == {"kind": "workflow_duration", "workflow_id": wf["id"]}
    step = client.request(
        "POST",
        RULES,
        json={"name": "Slow HTTP", "metric": "anomaly", "series": {"action_type": "http_request"}},
    )
    assert step["series"] == {"kind": "step_duration", "name": "http_request"}
    assert step["threshold"] == 0.9
    moved = client.request(
        "PATCH", f"{RULES}/rules/{rule['id']}", json={"series": {"kind": "workflow_error_rate"}}
    )
    assert moved["series"] == {"kind": "workflow_error_rate", "workflow_id": wf["id"]}
    plain = client.request(
        "PATCH", f"{RULES}/rules/{step['id']}", json={"metric": "queue_depth", "threshold": 50}
    )
    assert (plain["metric"], plain["series"], plain["comparison"]) == ("queue_depth", None, ">=")

    bad = {
        "name": "x",
        "metric": "anomaly",
        "threshold": 1.5,
        "comparison": "<",
        "series": {"kind": "queue_depth", "workflow_id": wf["id"], "colour": "red"},
    }
    with pytest.raises(ApiError) as caught:
        client.request("POST", RULES, json=bad)
    assert caught.value.status == 422
    assert set(caught.value.body["errors"]) == {"threshold", "comparison", "series.colour"}
    for series, where in (
        ({"kind": "queue_depth", "workflow_id": wf["id"]}, "series.workflow_id"),
        ({"kind": "nope"}, "series.kind"),
        ({"kind": "workflow_duration", "name": "x"}, "series.name"),
        ({"kind": "custom", "queue": "q"}, "series.queue"),
        ({"kind": "workflow_duration", "workflow_id": str(uuid.uuid4())}, "workflow_id"),
    ):
        with pytest.raises(ApiError) as caught:
            client.request("POST", RULES, json={"name": "x", "metric": "anomaly", "series": series})
        assert caught.value.status == 422 and list(caught.value.body["errors"]) == [where], series
    with pytest.raises(ApiError) as caught:
        client.request(
            "POST",
            RULES,
            json={"name": "x", "metric": "error_rate", "threshold": 0.1, "series": {}},
        )
    assert list(caught.value.body["errors"]) == ["series"]
    # A workflow of another tenant is not a workflow of yours.
    stranger = Client(api_url, make_key("admin"))
    with pytest.raises(ApiError) as caught:
        stranger.request(
            "POST", RULES, json={"name": "x", "metric": "anomaly", "workflow_id": wf["id"]}
        )
    assert caught.value.status == 422 and list(caught.value.body["errors"]) == ["workflow_id"]

    builtin = next(r for r in client.request("GET", RULES)["rules"] if r["builtin"] == "anomaly")
    assert (builtin["metric"], builtin["series"], builtin["threshold"]) == ("anomaly", {}, 0.9)
    tuned = client.request(
        "PATCH",
        f"{RULES}/rules/{builtin['id']}",
        json={"threshold": 0.97, "severity": "high", "window": "2h"},
    )
    assert (tuned["threshold"], tuned["severity"], tuned["window"]) == (0.97, "high", "2h")
    for change in ({"series": {"kind": "custom"}}, {"threshold": -0.1}):
        with pytest.raises(ApiError) as caught:
            client.request("PATCH", f"{RULES}/rules/{builtin['id']}", json=change)
        assert caught.value.status == 422


def test_run_metrics_are_derived_from_runs_and_steps(client: Client, settings_with):
    from atom.anomaly import derive

    flaky = client.create_workflow(
        workflow(
            "flaky",
            [trigger(), action("charge", "transform", output="{{ input.card.number }}")],
            [("start", "charge")],
        )
    )
    runs = [client.execute(flaky["id"], {"card": {"number": 1}}), client.execute(flaky["id"])]
    ended = [client.wait(r["id"]) for r in runs]
    assert [e["status"] for e in ended] == ["succeeded", "failed"]
    time.sleep(1.1)  # the runs' one-second buckets are over
    quick = settings_with(anomaly_bucket=1, anomaly_settle=0)
    factory = _factory(quick)
    try:
        added = derive.derive(factory, quick)
    finally:
        factory.kw["bind"].dispose()
    assert added["workflow_duration"] >= 2 and added["workflow_error_rate"] >= 1
    durations = _points(client, kind="workflow_duration", workflow_id=flaky["id"])
    assert len(durations) == 2 and all(p["unit"] == "ms" for p in durations)
    expected = sorted(e["metrics"]["execution_time_ms"] for e in ended)
    assert [round(p["value"]) for p in sorted(durations, key=lambda p: p["value"])] == [
        pytest.approx(v, abs=2) for v in expected
    ]
    rates = _points(client, kind="workflow_error_rate", workflow_id=flaky["id"])
    # One bucket with both runs (0.5), or two buckets (1.0 and 0.0).
    assert sorted(p["value"] for p in rates) in ([0.5], [0.0, 1.0])
    steps = _points(client, kind="step_duration", name="transform")
    assert len(steps) >= 2


@pytest.fixture(scope="module")
def scoring_beat(processes: Processes, worker) -> Iterator[subprocess.Popen]:
    """A real beat firing scoring and alert evaluation every second (defaults: 30 s)."""
    proc = processes.start(
        "beat",
        env={"ATOM_MONITOR_INTERVAL": "1", "ATOM_ANOMALY_INTERVAL": "1"},
        name="anomaly-beat",
    )
    time.sleep(2)
    assert proc.poll() is None, Path(proc.log_path).read_text()
    yield proc
    processes.stop(proc)


SHIFTY = workflow(
    "shifty", [trigger(), action("w", "delay", seconds="{{ input.s }}")], [("start", "w")]
)


def test_a_level_shift_in_durations_raises_one_anomaly_alert_that_resolves(
    client: Client, service: LoopbackService, ml_worker, scoring_beat
):
    service.route(r"POST /hook", lambda req, m: (200, {"ok": True}))
    shifty = client.create_workflow(SHIFTY)
    steady = client.create_workflow({**SHIFTY, "name": "steady"})
    client.request(
        "POST",
        RULES,
        json={
            "name": "Run time anomaly",
            "metric": "anomaly",
            "series": {"kind": "workflow_duration"},  # both workflows
            "threshold": 0.9,
            "window": "10m",
            "severity": "high",
            "channels": [{"type": "webhook", "url": service.url + "/hook"}],
        },
    )
    noise = random.Random(15)

    def batch(shift: bool) -> None:
        """One run of each workflow at once (the worker runs four, so neither waits for a
        slot): steady runs take 0.35-0.65 s (noise of their own, so the machine's hiccups
        stay small beside it), shifted ones 5 s."""
        runs = [
            client.execute(shifty["id"], {"s": 5.0 if shift else 0.5 + noise.uniform(-0.15, 0.15)}),
            client.execute(steady["id"], {"s": 0.5 + noise.uniform(-0.15, 0.15)}),
        ]
        for run in runs:
            assert client.wait(run["id"])["status"] == "succeeded"

    def hooks(event: str) -> list[dict]:
        return [c.body for c in service.calls("POST", "/hook") if c.body["event"] == event]

    for _ in range(16):
        batch(shift=False)
    for _ in range(2):
        batch(shift=True)
    fired = wait_until(lambda: hooks("firing"), 60, "the anomaly alert")
    [alert] = fired  # type: ignore[misc]
    assert alert["metric"] == "anomaly" and alert["workflow_id"] == shifty["id"]
    assert alert["series"]["kind"] == "workflow_duration"
    assert alert["value"] > 4900 and alert["score"] >= 0.9 and alert["threshold"] == 0.9
    low, high = alert["expected"]
    assert low < 600 < high < 4900

    # The open anomaly costs the shifted workflow health; the steady one has none.
    health = client.request("GET", f"/api/workflows/{shifty['id']}/health")
    assert health["factors"]["anomalies"]["value"] >= 1
    assert health["factors"]["anomalies"]["points"] < 15
    calm = client.request("GET", f"/api/workflows/{steady['id']}/health")
    assert calm["factors"]["anomalies"]["value"] == 0
    assert calm["factors"]["anomalies"]["points"] == 15
    assert health["score"] < calm["score"]

    for _ in range(2):
        batch(shift=False)
    resolved = wait_until(lambda: hooks("resolved"), 60, "the resolution")
    assert [r["alert_id"] for r in resolved] == [alert["alert_id"]]  # type: ignore[index]
    durations = wait_until(
        lambda: (
            [
                p
                for p in _points(client, kind="workflow_duration", workflow_id=steady["id"])
                if p["scored"]
            ]
            if len(_points(client, kind="workflow_duration", workflow_id=steady["id"], min_score=0))
            == 20
            else None
        ),
        30,
        "every steady run scored",
    )
    assert max(p["score"] for p in durations) < 0.9  # type: ignore[union-attr]
    time.sleep(3)  # a few more passes: nothing new fires, for either workflow
    assert len(hooks("firing")) == 1 and len(hooks("resolved")) == 1
