"""Stuck runs, on real processes: a run whose step waits in a queue no worker consumes, and
a run whose worker was SIGKILLed mid-step. The reconciler heals (or leaves the message
waiting); the troubleshooter explains and records, bounded, with no person; and the
tenant's alert channels (a loopback webhook, a Slack-style hook, a real SMTP server behind
the email allowlist) carry "resolved automatically" and "needs attention".

A platform of its own (its own broker databases, worker and beat with a fast reconciler),
like tests/integration/test_troubleshoot.py: automatic troubleshooting is off elsewhere.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from email import message_from_bytes, policy
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from werkzeug.serving import make_server

from atom.client import Client
from atom.config import Settings, with_redis_db
from tests.conftest import Processes, wait_for_worker
from tests.integration.helpers import action, trigger, workflow
from tests.integration.loopback import LoopbackService

MAX_WAIT = 20.0
"""The platform's ATOM_TROUBLESHOOT_MAX_WAIT: how long a run waits for a worker before its
session asks for a person."""


@pytest.fixture(scope="module")
def platform(settings: Settings, processes: Processes) -> Iterator[Settings]:
    """A worker, and a beat whose reconciler runs every second and calls a run stalled
    after 4 s without progress."""
    assert settings.redis_url
    own = replace(
        settings,
        broker_url=with_redis_db(settings.redis_url, 7),
        result_backend=with_redis_db(settings.redis_url, 8),
        auto_troubleshoot=True,
        troubleshoot_max_retries=3,
        troubleshoot_max_wait=MAX_WAIT,
        heartbeat_interval=1.0,
        heartbeat_timeout=3.0,
        stall_seconds=4.0,
        reconcile_interval=1.0,
    )
    proc = processes.start(
        "worker",
        "--concurrency=2",
        f"--hostname=stuck@{socket.gethostname()}",
        env=own.as_env(),
        name="stuck-worker",
    )
    wait_for_worker(own, proc)
    beat = processes.start("beat", env=own.as_env(), name="stuck-beat")
    yield own
    processes.stop(beat)
    processes.stop(proc)


@pytest.fixture(scope="module")
def api(platform: Settings) -> Iterator[str]:
    """The API of that platform, on a loopback port."""
    from api.app import create_app

    server = make_server("127.0.0.1", 0, create_app(platform), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def client(api: str, make_key: Callable[..., str]) -> Client:
    """An admin of a tenant of its own."""
    return Client(api, make_key("admin"))


@pytest.fixture
def service() -> Iterator[LoopbackService]:
    """A loopback service (the steps' target and the alert hooks)."""
    svc = LoopbackService().start()
    svc.route("POST /hook", lambda request, match: (200, {}))
    svc.route("POST /slack", lambda request, match: (200, {}))
    yield svc
    svc.stop()


class Inbox:
    """What a real SMTP server (aiosmtpd) receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's name
        with self.lock:
            self.messages.append(
                (
                    list(envelope.rcpt_tos),
                    message_from_bytes(envelope.content, policy=policy.default),
                )
            )
        return "250 OK"


@pytest.fixture
def inbox(settings: Settings) -> Iterator[Inbox]:
    """A real SMTP server on the port the settings name."""
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=settings.smtp_port)
    controller.start()
    yield box
    controller.stop()


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _session_of(client: Client, execution_id: str) -> dict[str, Any] | None:
    session_id = client.execution(execution_id).get("troubleshooting_session_id")
    if not session_id:
        return None
    return client.request("GET", f"/api/workflows/troubleshooting/sessions/{session_id}")


def _decided(client: Client, execution_id: str, decision: str) -> Callable[[], Any]:
    def check() -> dict[str, Any] | None:
        found = _session_of(client, execution_id)
        if found and any(d["decision"] == decision for d in found["decisions"]):
            return found
        return None

    return check


def _notices(service: LoopbackService, session_id: str) -> list[dict[str, Any]]:
    return [
        c.body
        for c in service.calls("POST", "/hook")
        if isinstance(c.body, dict) and c.body.get("session_id") == session_id
    ]


def test_runs_waiting_for_a_worker(
    client, service, inbox, platform: Settings, processes: Processes
) -> None:
    """One run's worker comes: resolved automatically. The other's never does: after the
    bound, needs attention. Both told on every channel of the tenant, email allowlisted."""
    both = {"email_allowed_domains": ["example.com", "elsewhere.org"]}
    client.request("PUT", "/api/settings", json=both)
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
            "channels": [
                {"type": "webhook", "url": f"{service.url}/hook"},
                {"type": "slack", "url": f"{service.url}/slack"},
                {"type": "email", "to": ["ops@example.com"]},
                {"type": "email", "to": ["someone@elsewhere.org"]},
            ],
        },
    )

    # The allowlist narrows after the rule was saved: delivery checks it again.
    client.request("PUT", "/api/settings", json={"email_allowed_domains": ["example.com"]})

    def queued_on(queue: str) -> str:
        node = action("work", "transform", output={"done": True})
        node["queue"] = queue
        created = client.create_workflow(
            workflow(f"stuck-{queue}", [trigger(), node], [("start", "work")])
        )
        return client.execute(created["id"])["id"]

    comes, never = queued_on("ts-later"), queued_on("ts-never")
    waiting = _until(_decided(client, comes, "waiting_for_worker"), 30, "the waiting session")
    assert waiting["status"] == "open" and waiting["origin"] == "reconciler"
    root = waiting["issues"][0]
    assert (root["category"], root["node_id"]) == ("worker_lost", "work")
    assert {"kind": "no_worker", "queue": "ts-later"}.items() <= root["evidence"][0].items()
    assert root["resolution"]["action"] == "wait_for_worker"
    assert root["resolution"]["automatic"] and root["resolution"]["applied"]

    hostname = f"ts-later@{socket.gethostname()}"
    late = processes.start(
        "worker",
        "--queues=ts-later",
        "--concurrency=1",
        f"--hostname={hostname}",
        env=platform.as_env(),
        name="ts-later",
    )
    try:
        wait_for_worker(platform, late, hostname=hostname)
        assert client.wait(comes, timeout=60)["status"] == "succeeded"
        resolved = _until(
            lambda: (s := _session_of(client, comes)) and s["status"] == "resolved" and s,
            30,
            "the session to resolve",
        )
    finally:
        processes.stop(late)
    assert resolved["issues"][0]["resolution"]["result"] == "succeeded once a worker took it"
    assert resolved["summary"].startswith("root cause: worker_lost")

    # The run nobody serves: bounded, then a person is asked, with what to do.
    ended = _until(
        lambda: (s := _session_of(client, never)) and s["status"] == "needs_attention" and s,
        MAX_WAIT + 30,
        "the bound on waiting",
    )
    why = next(d for d in ended["decisions"] if d["decision"] == "needs_attention")["reason"]
    assert "atom worker --queues ts-never" in why
    assert client.execution(never)["status"] in ("queued", "running")  # nothing was lost
    client.request("POST", f"/api/executions/{never}/cancel")

    # Notices: the webhook, Slack and the allowlisted email; the other address is refused.
    good = _until(lambda: _notices(service, resolved["id"]), 15, "the resolved notice")
    assert good[0]["event"] == "troubleshooting.resolved"
    assert good[0]["auto_resolution"] == "succeeded"
    assert good[0]["root_cause"]["category"] == "worker_lost"
    bad = _until(lambda: _notices(service, ended["id"]), 15, "the needs-attention notice")
    assert (bad[0]["event"], bad[0]["auto_resolution"]) == (
        "troubleshooting.needs_attention",
        "failed",
    )
    slack = [c.body["text"] for c in service.calls("POST", "/slack")]
    assert any("stuck-ts-later resolved automatically (worker_lost" in t for t in slack), slack
    assert any("stuck-ts-never automatic resolution failed" in t for t in slack), slack
    subjects = _until(
        lambda: [
            (to, str(m["Subject"]))
            for to, m in inbox.messages
            if "[ATOM] troubleshooting" in str(m["Subject"])
        ],
        15,
        "the emails",
    )
    assert all(to == ["ops@example.com"] for to, _ in subjects), subjects
    assert any("resolved automatically" in subject for _, subject in subjects)
    recorded = _until(_decided(client, comes, "notified"), 15, "the recorded deliveries")
    deliveries = next(d for d in recorded["decisions"] if d["decision"] == "notified")
    by_target = {r["target"]: r for r in deliveries["deliveries"]}
    assert by_target["ops@example.com"]["ok"] is True
    refused = by_target["someone@elsewhere.org"]
    assert refused["ok"] is False and "email_allowed_domains" in refused["error"]
    assert sum(r["ok"] for r in deliveries["deliveries"]) == 3


def test_worker_killed_mid_step_is_redriven_and_recorded(
    client, service, platform: Settings, processes: Processes
) -> None:
    """No person asks: the reconciler re-drives, the session says why and how it ended."""
    calls: list[float] = []

    def slow(request, match):
        calls.append(time.monotonic())
        time.sleep(2)
        return 200, {"done": True}

    service.route("POST /work", slow)

    def worker(name: str):
        hostname = f"{name}@{socket.gethostname()}"
        proc = processes.start(
            "worker",
            "--queues=ts-killed",
            "--concurrency=1",
            f"--hostname={hostname}",
            env=platform.as_env(),
            name=name,
        )
        wait_for_worker(platform, proc, hostname=hostname)
        return proc

    doomed = worker("ts-killed-a")
    node = action("work", "http_request", method="POST", url=f"{service.url}/work")
    node["queue"] = "ts-killed"
    created = client.create_workflow(workflow("ts-killed", [trigger(), node], [("start", "work")]))
    execution_id = client.execute(created["id"])["id"]
    _until(lambda: calls, 30, "the step to start")
    processes.stop(doomed, signal.SIGKILL)
    rescuer = worker("ts-killed-b")
    try:
        assert client.wait(execution_id, timeout=90)["status"] == "succeeded"
        session = _until(
            lambda: (s := _session_of(client, execution_id)) and s["status"] == "resolved" and s,
            30,
            "the session to resolve",
        )
    finally:
        processes.stop(rescuer)
    assert session["origin"] == "reconciler"
    root = session["issues"][0]
    assert (root["category"], root["node_id"]) == ("worker_lost", "work")
    assert root["evidence"][0]["kind"] == "heartbeat"
    assert root["resolution"]["action"] == "redrive" and root["resolution"]["applied"]
    assert root["resolution"]["result"] == "succeeded after 1 re-drive(s) by the reconciler"
    decisions = [d["decision"] for d in session["decisions"]]
    assert decisions[:2] == ["diagnosed", "retried"] and decisions[-1] == "resolved"
    assert session["decisions"][1]["by"] == "reconciler"
    keys = {c.headers["Idempotency-Key"] for c in service.calls("POST", "/work")}
    assert keys == {f"{execution_id}:work"}


def test_redrives_are_bounded_then_a_person_is_asked(client, service, platform: Settings) -> None:
    """The run's message is lost again and again (its queue emptied, as a flushed broker
    would): the reconciler re-drives it each time; after ATOM_TROUBLESHOOT_MAX_RETRIES
    re-drives the session ends needs_attention, and the reconciler goes on by itself."""
    import redis

    broker = redis.Redis.from_url(platform.broker_url or "")
    node = action("work", "transform", output={"done": True})
    node["queue"] = "ts-gone"  # no worker: the message would wait there, but it is lost
    created = client.create_workflow(workflow("ts-gone", [trigger(), node], [("start", "work")]))

    def lose() -> int:
        return sum(broker.delete(key) for key in broker.scan_iter(match="ts-gone*"))

    execution_id = client.execute(created["id"])["id"]
    deadline = time.monotonic() + 90
    ended = None
    try:
        while time.monotonic() < deadline and ended is None:
            lose()
            found = _session_of(client, execution_id)
            if found and found["status"] == "needs_attention":
                ended = found
            time.sleep(0.2)
    finally:
        lose()
        client.request("POST", f"/api/executions/{execution_id}/cancel")
        broker.close()
    assert ended is not None, "the session did not end within 90 s"
    assert ended["origin"] == "reconciler"
    root = ended["issues"][0]
    assert (root["category"], root["node_id"]) == ("worker_lost", "work")
    assert root["evidence"][0] == {
        "kind": "no_progress",
        "stall_seconds": platform.stall_seconds,
        "message_in_broker": False,
    }
    redrives = [d for d in ended["decisions"] if d["decision"] == "retried"]
    assert [d["redrive"] for d in redrives] == [1, 2, 3]
    assert all(d["by"] == "reconciler" for d in redrives)
    why = next(d for d in ended["decisions"] if d["decision"] == "needs_attention")["reason"]
    assert why.startswith("re-driven 3 times and it stalled again")
