"""Alert rules end to end: beat fires the evaluator on the maintenance queue, the session's
worker evaluates, and notifications reach a real webhook, a Slack-style hook and a real SMTP
server. Failing runs fire once, succeeding runs resolve, and a new firing inside the cooldown
stays silent."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from atom.client import Client
from atom.config import Settings
from tests.conftest import Processes
from tests.integration.helpers import action, trigger, workflow
from tests.integration.loopback import LoopbackService


class Inbox:
    """Collects what the SMTP server receives."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Message]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's name
        with self.lock:
            self.messages.append(
                (
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    message_from_bytes(envelope.content, policy=policy.default),
                )
            )
        return "250 OK"

    def subjects(self) -> list[str]:
        with self.lock:
            return [str(m["Subject"]) for _, _, m in self.messages]


@pytest.fixture(scope="module")
def smtp_inbox(settings: Settings) -> Iterator[Inbox]:
    """A real SMTP server on the port the platform's settings name."""
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=settings.smtp_port)
    controller.start()
    yield inbox
    controller.stop()


@pytest.fixture(scope="module")
def fast_beat(processes: Processes, worker) -> Iterator[subprocess.Popen]:
    """A real beat that fires the evaluator every second (the default is 30 s)."""
    proc = processes.start("beat", env={"ATOM_MONITOR_INTERVAL": "1"}, name="alerts-beat")
    time.sleep(2)
    assert proc.poll() is None, Path(proc.log_path).read_text()
    yield proc
    processes.stop(proc)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


FLAKY = workflow(
    "checkout",
    [trigger(), action("charge", "transform", output="{{ input.card.number }}")],
    [("start", "charge")],
)


def test_error_rate_fires_once_resolves_and_stays_silent_in_cooldown(
    client: Client, service: LoopbackService, smtp_inbox: Inbox, fast_beat
):
    service.route(r"POST /hook\?token=s3cr3t", lambda req, m: (200, {"ok": True}))
    service.route(r"POST /slack/T1/B2/xyz", lambda req, m: (200, {"ok": True}))
    wf = client.create_workflow(FLAKY)
    # Email goes only to the domains an admin allowed (none by default).
    client.request("PUT", "/api/settings", json={"email_allowed_domains": ["example.com"]})
    rule = client.request(
        "POST",
        "/api/workflows/monitoring/alerts",
        json={
            "name": "Checkout failing",
            "metric": "error_rate",
            "comparison": ">",
            "threshold": 0.5,
            "window": "10m",
            "severity": "critical",
            "cooldown": 600,
            "workflow_id": wf["id"],
            "channels": [
                {"type": "webhook", "url": service.url + "/hook?token=s3cr3t"},
                {"type": "slack", "url": service.url + "/slack/T1/B2/xyz"},
                {"type": "email", "to": "ops@example.com"},
            ],
        },
    )

    def hooks(event: str) -> list:
        return [c for c in service.calls("POST", "/hook") if c.body["event"] == event]

    def slack(state: str) -> list:
        return [c for c in service.calls("POST", "/slack/") if state in c.body["text"]]

    def mails(state: str) -> list[str]:
        return [s for s in smtp_inbox.subjects() if state in s]

    for _ in range(3):
        assert client.wait(client.execute(wf["id"])["id"])["status"] == "failed"
    wait_until(
        lambda: hooks("firing") and slack("FIRING") and mails("FIRING"),
        30,
        "the firing notifications",
    )
    time.sleep(4)  # several more evaluations: still one notification per channel
    assert len(hooks("firing")) == len(slack("FIRING")) == len(mails("FIRING")) == 1
    payload = hooks("firing")[0].body
    assert (
        payload["rule"],
        payload["severity"],
        payload["metric"],
        payload["value"],
        payload["threshold"],
        payload["workflow_id"],
    ) == ("Checkout failing", "critical", "error_rate", 1.0, 0.5, wf["id"])
    ((mail_from, rcpt, message),) = smtp_inbox.messages
    assert rcpt == ["ops@example.com"] and mail_from == "atom-tests@example.com"
    assert "Checkout failing" in message["Subject"] and "CRITICAL" in message["Subject"]
    assert "value: 1.0" in message.get_content()

    overview = client.session.get(client.base_url + "/api/workflows/monitoring/alerts", timeout=30)
    assert "s3cr3t" not in overview.text and "/slack/T1" not in overview.text
    (alert,) = [a for a in overview.json()["active"] if a["rule_id"] == rule["id"]]
    assert alert["status"] == "firing" and alert["notified"] is True
    wait_until(
        lambda: (
            len(
                [
                    a
                    for a in client.request("GET", "/api/workflows/monitoring/alerts")["active"]
                    if a["rule_id"] == rule["id"]
                ][0]["notifications"]
            )
            == 3
        ),
        10,
        "delivery results",
    )
    results = [
        a
        for a in client.request("GET", "/api/workflows/monitoring/alerts")["active"]
        if a["rule_id"] == rule["id"]
    ][0]["notifications"]
    assert [(r["channel"], r["ok"]) for r in results] == [
        ("webhook", True),
        ("slack", True),
        ("email", True),
    ]
    assert results[0]["target"] == service.url + "/***"

    for _ in range(4):  # 3 failed of 7: under 0.5
        run = client.execute(wf["id"], {"card": {"number": 4242}})
        assert client.wait(run["id"])["status"] == "succeeded"
    wait_until(
        lambda: hooks("resolved") and slack("RESOLVED") and mails("RESOLVED"),
        30,
        "the resolved notifications",
    )
    assert hooks("resolved")[0].body["alert_id"] == alert["id"]
    recent = client.request("GET", "/api/workflows/monitoring/alerts")["recent"]
    assert [a["status"] for a in recent if a["id"] == alert["id"]] == ["resolved"]

    for _ in range(5):  # 8 failed of 12: it fires again, inside the cooldown
        client.wait(client.execute(wf["id"])["id"])
    wait_until(
        lambda: [
            a
            for a in client.request("GET", "/api/workflows/monitoring/alerts")["active"]
            if a["rule_id"] == rule["id"]
        ],
        30,
        "the second firing",
    )
    time.sleep(3)
    (second,) = [
        a
        for a in client.request("GET", "/api/workflows/monitoring/alerts")["active"]
        if a["rule_id"] == rule["id"]
    ]
    assert second["id"] != alert["id"] and second["notified"] is False
    assert len(hooks("firing")) == len(slack("FIRING")) == len(mails("FIRING")) == 1

    status = client.request("GET", "/api/workflows/monitoring/status")
    assert status["last_evaluation"]["rules_evaluated"] >= 1
    assert status["alerts"]["firing"] >= 1


def test_a_webhook_to_a_private_address_is_refused(
    client: Client, settings: Settings, smtp_inbox: Inbox, fast_beat
):
    """The worker's allowlist admits loopback only: 10.0.0.1 is refused by the guard."""
    wf = client.create_workflow(FLAKY)
    rule = client.request(
        "POST",
        "/api/workflows/monitoring/alerts",
        json={
            "name": "to a private address",
            "metric": "error_rate",
            "threshold": 0.5,
            "workflow_id": wf["id"],
            "channels": [{"type": "webhook", "url": "http://10.0.0.1/hook?token=zzz"}],
        },
    )
    client.wait(client.execute(wf["id"])["id"])

    def results() -> list:
        active = [
            a
            for a in client.request("GET", "/api/workflows/monitoring/alerts")["active"]
            if a["rule_id"] == rule["id"]
        ]
        return active[0]["notifications"] if active else []

    wait_until(results, 30, "a delivery result")
    (result,) = results()
    assert result["ok"] is False and "ATOM_HTTP_ALLOWLIST" in result["error"]
    assert "zzz" not in result["error"] and result["target"] == "http://10.0.0.1/***"
