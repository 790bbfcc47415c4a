"""Troubleshooting on real failures: loopback services that answer 429 with Retry-After, 503,
401 and 404, that are slow or down; a template naming a field the upstream stopped
returning; a new version that breaks. Transient causes end ``succeeded`` without a person;
permanent ones are never retried and get a suggestion that one call applies.

Automatic troubleshooting is off for the rest of the suite (its retries would change what
other tests assert), so this module runs a platform of its own with it on: its own broker
database, its own worker and its own API, on the session's PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
from werkzeug.serving import make_server

from atom.client import ApiError, Client
from atom.config import Settings, _with_db
from atom.runs import events
from tests.conftest import Processes, wait_for_worker
from tests.integration.helpers import action, by_node, trigger, workflow
from tests.integration.loopback import LoopbackService


@pytest.fixture(scope="module")
def platform(settings: Settings, processes: Processes) -> Iterator[Settings]:
    """A worker and an API with automatic troubleshooting on, on their own broker."""
    assert settings.redis_url
    own = replace(
        settings,
        broker_url=_with_db(settings.redis_url, 5),
        result_backend=_with_db(settings.redis_url, 6),
        auto_troubleshoot=True,
        troubleshoot_max_retries=3,
        heartbeat_interval=1.0,
        heartbeat_timeout=4.0,
    )
    proc = processes.start(
        "worker",
        "--concurrency=3",
        f"--hostname=troubleshoot@{socket.gethostname()}",
        env=own.as_env(),
        name="troubleshoot-worker",
    )
    wait_for_worker(own, proc)
    # The reconciler, as in production: a run left without progress is re-driven.
    beat = processes.start("beat", env=own.as_env(), name="troubleshoot-beat")
    yield own
    processes.stop(beat)
    processes.stop(proc)


@pytest.fixture(scope="module")
def api(platform: Settings) -> Iterator[str]:
    """The API of that platform, on a loopback port."""
    from api.app import create_app

    server = make_server("127.0.0.1", 0, create_app(platform), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def client(api: str, make_key: Callable[..., str]) -> Client:
    """An admin of a tenant of its own."""
    return Client(api, make_key("admin"))


@pytest.fixture
def service() -> Iterator[LoopbackService]:
    """A loopback service, stopped after the test."""
    svc = LoopbackService().start()
    yield svc
    svc.stop()


def _until(check: Callable[[], Any], timeout: float = 90, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _session_done(client: Client, execution_id: str, timeout: float = 90) -> dict[str, Any]:
    """The execution's session once it has ended (resolved or needs_attention)."""

    def check() -> dict[str, Any] | None:
        execution = client.execution(execution_id)
        session_id = execution.get("troubleshooting_session_id")
        if not session_id or execution["status"] not in ("succeeded", "failed"):
            return None
        found = client.request("GET", f"/api/workflows/troubleshooting/sessions/{session_id}")
        return found if found["status"] != "open" else None

    return _until(check, timeout, f"the session of {execution_id}")


def _fetch_flow(url: str, name: str, **fetch: Any) -> dict[str, Any]:
    node = action("fetch", "http_request", url=url)
    node.update(fetch)
    return workflow(
        name,
        [
            trigger(),
            node,
            action("use", "transform", output={"got": "{{ steps.fetch.output.body }}"}),
        ],
        [("start", "fetch"), ("fetch", "use")],
    )


def _run(client: Client, definition: dict[str, Any]) -> tuple[str, str]:
    created = client.create_workflow(definition)
    return created["id"], client.execute(created["id"])["id"]


def test_429_with_retry_after_is_waited_out_and_resolved(client, service) -> None:
    calls: list[float] = []

    def limited(request, match):
        calls.append(time.monotonic())
        if len(calls) <= 3:
            return 429, {"error": "slow down"}, {"Retry-After": "2"}
        return 200, {"ok": True}

    service.route("GET /items", limited)
    flow = _fetch_flow(
        f"{service.url}/items", "ts-429", retry={"max_retries": 1, "retry_delay": 0.2}
    )
    _, execution_id = _run(client, flow)
    session = _session_done(client, execution_id)
    execution = client.execution(execution_id)
    assert execution["status"] == "succeeded" and session["status"] == "resolved"
    assert session["origin"] == "auto"
    root = session["issues"][0]
    assert (root["category"], root["node_id"], root["root_cause"]) == (
        "rate_limited",
        "fetch",
        True,
    )
    assert {"kind": "retry_after", "seconds": 2.0} in root["evidence"]
    assert root["resolution"]["automatic"] and root["resolution"]["applied"]
    assert root["resolution"]["result"].startswith("succeeded after 1 automatic retry")
    decisions = [d["decision"] for d in session["decisions"]]
    assert decisions[:3] == ["diagnosed", "retry_scheduled", "retried"]
    assert decisions[-1] == "resolved"
    # Retry-After was honoured between the failed step and the automatic retry, and the
    # retried step kept its idempotency key.
    assert calls[2] - calls[1] >= 2.0
    keys = {r.headers.get("Idempotency-Key") for r in service.calls("GET", "/items")}
    assert keys == {f"{execution_id}:fetch"}


def test_503_burst_that_outlasts_the_retry_policy_is_backed_off(client, service) -> None:
    started = time.monotonic()

    def outage(request, match):
        return (503, {"error": "down"}) if time.monotonic() - started < 6 else (200, {"ok": 1})

    service.route("GET /report", outage)
    flow = _fetch_flow(
        f"{service.url}/report", "ts-503", retry={"max_retries": 1, "retry_delay": 0.5}
    )
    _, execution_id = _run(client, flow)
    session = _session_done(client, execution_id)
    assert client.execution(execution_id)["status"] == "succeeded"
    assert session["status"] == "resolved"
    assert session["issues"][0]["category"] == "upstream_5xx"
    scheduled = [d for d in session["decisions"] if d["decision"] == "retry_scheduled"]
    assert scheduled and scheduled[0]["policy"]["fetch"]["retry"]["max_retries"] >= 3


def test_service_down_then_back_is_a_connection_failure_resolved(client) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    later = LoopbackService(port=port)
    later.route("GET /ping", lambda request, match: (200, {"pong": True}))
    timer = threading.Timer(6.0, later.start)
    timer.start()
    try:
        flow = _fetch_flow(
            f"http://127.0.0.1:{port}/ping", "ts-down", retry={"max_retries": 1, "retry_delay": 0.3}
        )
        _, execution_id = _run(client, flow)
        session = _session_done(client, execution_id)
        assert client.execution(execution_id)["status"] == "succeeded"
        assert session["issues"][0]["category"] == "connection"
        assert session["status"] == "resolved"
    finally:
        timer.join()
        later.stop()


def test_timeout_close_to_the_limit_gets_a_longer_limit(client, service) -> None:
    def slow(request, match):
        time.sleep(1.6)
        return 200, {"ok": True}

    service.route("GET /slow", slow)
    flow = _fetch_flow(f"{service.url}/slow", "ts-timeout", timeout=1)
    _, execution_id = _run(client, flow)
    session = _session_done(client, execution_id)
    assert client.execution(execution_id)["status"] == "succeeded"
    root = session["issues"][0]
    assert root["category"] == "timeout" and session["status"] == "resolved"
    assert root["resolution"]["policy"]["fetch"]["timeout"] >= 2


@pytest.mark.parametrize(("code", "category"), [(401, "auth"), (404, "not_found")])
def test_permanent_http_failures_are_never_retried(
    client, service, platform: Settings, code, category
) -> None:
    service.route("GET /thing", lambda request, match: (code, {"error": "no"}))
    service.route("POST /hook", lambda request, match: (200, {}))
    flow = _fetch_flow(f"{service.url}/thing", f"ts-{code}", retry={"max_retries": 2})
    workflow_id = client.create_workflow(flow)["id"]
    client.request(
        "POST",
        "/api/workflows/monitoring/alerts",
        json={
            "name": "ops",
            "metric": "error_rate",
            "comparison": ">",
            "threshold": 0.99,
            "window": "1h",
            "severity": "high",
            "workflow_id": workflow_id,
            "channels": [{"type": "webhook", "url": f"{service.url}/hook"}],
        },
    )
    listener = redis.Redis.from_url(platform.redis_url or "").pubsub()
    listener.psubscribe(f"{events.CHANNEL_PREFIX}*")
    execution_id = client.execute(workflow_id)["id"]
    session = _session_done(client, execution_id)
    time.sleep(2)  # time for a wrongful retry to show
    execution = client.execution(execution_id)
    assert execution["status"] == "failed" and session["status"] == "needs_attention"
    root = session["issues"][0]
    assert (root["category"], root["node_id"]) == (category, "fetch")
    assert root["resolution"]["automatic"] is False and root["resolution"]["applied"] is False
    assert len(service.calls("GET", "/thing")) == 1
    assert [i["node_id"] for i in session["issues"][1:]] == ["use"]
    assert not any(d["decision"] == "retried" for d in session["decisions"])
    # The alert channels and the run's event channel carry "needs attention".
    hooks = _until(
        lambda: [
            c
            for c in service.calls("POST", "/hook")
            if str(c.body.get("event", "")).startswith("troubleshooting.")
        ],
        10,
        "the webhook notice",
    )
    assert hooks[0].body["event"] == "troubleshooting.needs_attention"
    assert hooks[0].body["session_id"] == session["id"]
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not seen:
        message = listener.get_message(timeout=0.5)
        if message and message["type"] == "pmessage":
            event = json.loads(message["data"])
            if event.get("type") == "troubleshooting" and event["execution_id"] == execution_id:
                seen.append(event)
    listener.close()
    assert seen and seen[0]["message"] == "needs attention"


def test_template_naming_a_field_the_upstream_dropped(client, service) -> None:
    shape = {"user": {"email": "a@example.com"}}
    service.route("GET /me", lambda request, match: (200, shape))
    flow = workflow(
        "ts-shape",
        [
            trigger(),
            action("fetch", "http_request", url=f"{service.url}/me"),
            action("greet", "transform", output={"to": "{{ steps.fetch.output.body.user.email }}"}),
        ],
        [("start", "fetch"), ("fetch", "greet")],
    )
    workflow_id, first = _run(client, flow)
    assert client.wait(first)["status"] == "succeeded"
    shape.clear()
    shape.update({"user": {"contact": {"email": "a@example.com"}}})  # the upstream changed
    second = client.execute(workflow_id)["id"]
    session = _session_done(client, second)
    root = session["issues"][0]
    assert (root["category"], root["node_id"]) == ("data_shape", "greet")
    missing = next(e for e in root["evidence"] if e["kind"] == "missing_field")
    assert missing["upstream"] == "fetch" and missing["available"] == ["contact"]
    assert session["status"] == "needs_attention"
    assert not any(d["decision"] == "retried" for d in session["decisions"])
    fix = root["resolution"]
    assert fix["action"] == "fix_template"
    assert fix["changes"]["template"] == "{{ steps.fetch.output.body.user.contact.email }}"
    applied = client.request(
        "POST", f"/api/workflows/troubleshooting/sessions/{session['id']}/apply", json={"issue": 0}
    )
    assert applied["status"] == "resolved"
    assert applied["issues"][0]["resolution"]["result"] == "saved as version 2"
    third = client.wait(client.execute(workflow_id)["id"])
    assert third["status"] == "succeeded"
    assert by_node(third)["greet"]["output"] == {"to": "a@example.com"}
    with pytest.raises(ApiError) as again:
        client.request(
            "POST",
            f"/api/workflows/troubleshooting/sessions/{session['id']}/apply",
            json={"issue": 0},
        )
    assert again.value.status == 409


def test_a_new_version_that_breaks_is_reverted_with_one_call(client, service) -> None:
    service.route("GET /v1/orders", lambda request, match: (200, {"orders": []}))
    flow = _fetch_flow(f"{service.url}/v1/orders", "ts-version")
    workflow_id, first = _run(client, flow)
    assert client.wait(first)["status"] == "succeeded"
    broken = _fetch_flow(f"{service.url}/v2/orders", "ts-version")
    assert client.request("PUT", f"/api/workflows/{workflow_id}", json=broken)["version"] == 2
    second = client.execute(workflow_id)["id"]
    session = _session_done(client, second)
    root = session["issues"][0]
    assert (root["category"], root["node_id"]) == ("version_regression", "fetch")
    change = next(e for e in root["evidence"] if e["kind"] == "version_change")
    assert change["last_good_version"] == 1 and change["symptom"] == "not_found"
    assert root["resolution"]["action"] == "revert_version"
    assert session["status"] == "needs_attention"
    client.request(
        "POST", f"/api/workflows/troubleshooting/sessions/{session['id']}/apply", json={"issue": 0}
    )
    current = client.request("GET", f"/api/workflows/{workflow_id}")
    assert (
        current["version"] == 3
        and "/v1/orders" in current["definition"]["nodes"][1]["config"]["url"]
    )
    assert client.wait(client.execute(workflow_id)["id"])["status"] == "succeeded"


def test_analyze_on_request_with_error_logs_and_manual_apply(
    client, service, make_key, api
) -> None:
    state = {"revoked": True}
    service.route(
        "GET /crm",
        lambda request, match: (401, {"e": 1}) if state["revoked"] else (200, {"ok": True}),
    )
    flow = _fetch_flow(f"{service.url}/crm", "ts-manual")
    workflow_id, execution_id = _run(client, flow)
    _session_done(client, execution_id)  # the automatic one: needs attention, no retry
    logs = [
        "requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: x",
        "INFO worker ready",
        "psycopg2.OperationalError: could not connect to server",
    ]
    opened = client.request(
        "POST",
        "/api/workflows/troubleshooting/analyze",
        json={"workflow_id": workflow_id, "execution_id": execution_id, "error_logs": logs},
    )
    assert opened["origin"] == "api" and opened["status"] == "needs_attention"
    assert [entry["category"] for entry in opened["logs"]] == ["auth", "unknown", "database"]
    root = opened["issues"][0]
    assert root["category"] == "auth" and root["resolution"]["action"] == "rotate_credential"
    assert {"kind": "log", "line": logs[0], "category": "auth"} in root["evidence"]
    listed = client.request(
        "GET", f"/api/workflows/troubleshooting/sessions?workflow_id={workflow_id}"
    )
    assert listed[0]["id"] == opened["id"] and len(listed) == 2
    state["revoked"] = False  # the user rotated the credential, then applies
    applied = client.request(
        "POST", f"/api/workflows/troubleshooting/sessions/{opened['id']}/apply", json={"issue": 0}
    )
    assert applied["issues"][0]["resolution"]["applied"] is True
    assert client.wait(execution_id)["status"] == "succeeded"
    assert client.execution(execution_id)["troubleshooting_session_id"] == opened["id"]
    closed = _until(
        lambda: (
            s
            if (
                s := client.request(
                    "GET", f"/api/workflows/troubleshooting/sessions/{opened['id']}"
                )
            )["status"]
            == "resolved"
            else None
        ),
        what="the session to close",
    )
    assert closed["resolved_at"]
    # Bad input: every problem named; another tenant sees nothing.
    with pytest.raises(ApiError) as bad:
        client.request(
            "POST",
            "/api/workflows/troubleshooting/analyze",
            json={"error_logs": "not a list", "auto_resolve": "maybe"},
        )
    assert bad.value.status == 422
    assert {"workflow_id", "error_logs", "auto_resolve"} <= set(bad.value.body["errors"]["json"])
    other = Client(api, make_key("admin"))
    with pytest.raises(ApiError) as hidden:
        other.request("GET", f"/api/workflows/troubleshooting/sessions/{opened['id']}")
    assert hidden.value.status == 404
    with pytest.raises(ApiError) as foreign:
        other.request(
            "POST", "/api/workflows/troubleshooting/analyze", json={"workflow_id": workflow_id}
        )
    assert foreign.value.status == 404
    assert other.request("GET", "/api/workflows/troubleshooting/sessions") == []


def test_stuck_run_whose_worker_was_killed_is_redriven(
    client, service, platform: Settings, processes: Processes
) -> None:
    slow_calls: list[float] = []

    def slow(request, match):
        slow_calls.append(time.monotonic())
        time.sleep(2)
        return 200, {"done": True}

    service.route("POST /work", slow)

    def lost_worker(name: str):
        hostname = f"{name}@{socket.gethostname()}"
        proc = processes.start(
            "worker",
            "--queues=ts-lost",
            "--concurrency=1",
            f"--hostname={hostname}",
            env=platform.as_env(),
            name=name,
        )
        wait_for_worker(platform, proc, hostname=hostname)
        return proc

    doomed = lost_worker("ts-lost-a")
    node = action("work", "http_request", method="POST", url=f"{service.url}/work")
    node["queue"] = "ts-lost"
    workflow_id, execution_id = _run(
        client, workflow("ts-lost", [trigger(), node], [("start", "work")])
    )
    _until(lambda: slow_calls, 30, "the step to start")
    processes.stop(doomed, signal.SIGKILL)
    rescuer = lost_worker("ts-lost-b")
    try:
        time.sleep(platform.heartbeat_timeout + 1.5)  # the heartbeat goes stale
        assert client.execution(execution_id)["status"] == "running"
        opened = client.request(
            "POST",
            "/api/workflows/troubleshooting/analyze",
            json={"workflow_id": workflow_id, "execution_id": execution_id, "auto_resolve": True},
        )
        root = opened["issues"][0]
        assert (root["category"], root["node_id"]) == ("worker_lost", "work")
        assert root["resolution"]["action"] == "redrive" and root["resolution"]["automatic"]
        done = client.wait(execution_id, timeout=60)
        assert done["status"] == "succeeded"
        assert {c.headers["Idempotency-Key"] for c in service.calls("POST", "/work")} == {
            f"{execution_id}:work"
        }
        closed = _until(
            lambda: (
                s
                if (
                    s := client.request(
                        "GET", f"/api/workflows/troubleshooting/sessions/{opened['id']}"
                    )
                )["status"]
                == "resolved"
                else None
            ),
            what="the session to close",
        )
        assert [d["decision"] for d in closed["decisions"]][-3:] == [
            "retry_scheduled",
            "retried",
            "resolved",
        ]
    finally:
        processes.stop(rescuer)


def test_logs_alone_when_the_workflow_never_ran(client) -> None:
    flow = _fetch_flow("http://127.0.0.1:9/never", "ts-logs-only")
    workflow_id = client.create_workflow(flow)["id"]
    logs = [
        "sqlalchemy.exc.OperationalError: (psycopg2.OperationalError) server closed the "
        "connection unexpectedly",
        "psycopg2.errors.DeadlockDetected: deadlock detected",
        "GET /health 200",
    ]
    opened = client.request(
        "POST",
        "/api/workflows/troubleshooting/analyze",
        json={"workflow_id": workflow_id, "error_logs": logs},
    )
    assert opened["execution_id"] is None and opened["status"] == "needs_attention"
    root = opened["issues"][0]
    assert (root["category"], root["node_id"], root["transient"]) == ("database", None, True)
    assert [e["line"] for e in root["evidence"]] == logs[:2]
    with pytest.raises(ApiError) as nothing:
        client.request(
            "POST",
            f"/api/workflows/troubleshooting/sessions/{opened['id']}/apply",
            json={"issue": 0},
        )
    assert nothing.value.status == 409
    with pytest.raises(ApiError) as bad_index:
        client.request(
            "POST",
            f"/api/workflows/troubleshooting/sessions/{opened['id']}/apply",
            json={"issue": 5},
        )
    assert bad_index.value.status == 422
    listed = client.request("GET", "/api/workflows/troubleshooting/sessions?status=needs_attention")
    assert opened["id"] in [s["id"] for s in listed]
