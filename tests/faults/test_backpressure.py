"""Backpressure beyond execute (issue 10, fault 10): webhooks and events answer 429 with
Retry-After like execute does, and schedule fires while the step queue is full are recorded
``skipped`` with the reason instead of flooding Redis; both resume once the queue drains."""

from __future__ import annotations

import time
from dataclasses import replace

from tests.faults.conftest import Stack, wait_until
from tests.faults.test_outages import side_effect_workflow
from tests.integration.helpers import action, trigger, workflow
from tests.integration.loopback import LoopbackService

DEPTH = 3


def test_webhooks_and_events_answer_429_while_the_step_queue_is_full(
    stack: Stack, service: LoopbackService
):
    stack.settings = replace(stack.settings, max_queue_depth=DEPTH)
    client = stack.api()
    doc = side_effect_workflow(service, 0)
    doc["nodes"][0]["config"] = {"kind": "webhook"}
    workflow_id = client.create_workflow(doc)["id"]
    hook = client.request("POST", f"/api/workflows/{workflow_id}/webhook")
    answers = [client.session.post(hook["url"], json={"order": i}, timeout=30) for i in range(6)]
    codes = [a.status_code for a in answers]
    print(f"\nwebhooks with no worker: {codes}")
    assert codes[:DEPTH] == [202] * DEPTH, codes
    assert set(codes[DEPTH:]) == {429}, codes
    refused = answers[-1]
    assert int(refused.headers["Retry-After"]) > 0
    assert "ATOM_MAX_QUEUE_DEPTH" in refused.json()["message"]
    assert stack.broker().llen("atom.steps") == DEPTH, "Redis must hold a bounded number"
    # An unknown token is still a 404, full queue or not.
    assert client.session.post(hook["url"] + "x", json={}, timeout=30).status_code == 404

    events = workflow(
        "on-order",
        [trigger(kind="event", event_type="order.created"), action("log", "log", message="x")],
        [("start", "log")],
    )
    client.create_workflow(events)
    event = client.session.post(
        f"{client.base_url}/api/events", json={"type": "order.created"}, timeout=30
    )
    assert event.status_code == 429 and int(event.headers["Retry-After"]) > 0, event.text

    stack.worker()
    for run in (a.json()["id"] for a in answers[:DEPTH]):
        assert client.wait(run, timeout=30)["status"] == "succeeded"
    again = client.session.post(hook["url"], json={"order": 99}, timeout=30)
    assert again.status_code == 202, again.text
    assert client.wait(again.json()["id"], timeout=30)["status"] == "succeeded"
    assert len(service.calls("POST", "/side-effect")) == DEPTH + 1  # nothing refused ran


def test_schedule_fires_while_the_step_queue_is_full_are_skipped_with_the_reason(stack: Stack):
    depth = {"ATOM_MAX_QUEUE_DEPTH": str(DEPTH)}
    # Maintenance only: nothing takes the step messages off the queue yet.
    stack.worker(queues="atom.maintenance", env=depth)
    stack.beat(env=depth)
    client = stack.api()
    doc = workflow(
        "ticker",
        [trigger(kind="schedule"), action("tick", "delay", seconds=0)],
        [("start", "tick")],
    )
    wf = client.create_workflow(doc)["id"]
    schedule = client.request(
        "POST",
        "/api/schedules",
        json={"workflow_id": wf, "interval_seconds": 1, "overlap": "allow"},
    )
    path = f"/api/schedules/{schedule['id']}/fires?page_size=100"

    def skipped() -> list[dict]:
        return [f for f in client.request("GET", path) if f["status"] == "skipped"]

    wait_until(lambda: len(skipped()) >= 3, 40, "three fires skipped for backpressure")
    broker = stack.broker()
    assert broker.llen("atom.steps") <= DEPTH + 1, "a saturated queue kept growing"
    reason = skipped()[0]["reason"]
    assert reason.startswith("backpressure:") and "ATOM_MAX_QUEUE_DEPTH" in reason, reason
    started_before = {
        f["execution_id"] for f in client.request("GET", path) if f["status"] == "started"
    }
    assert len(started_before) <= DEPTH + 1

    stack.worker()  # the queue drains; the next fires start runs again
    drained = time.monotonic()

    def started_after() -> list[dict]:
        rows = client.request("GET", path)
        return [
            f for f in rows if f["status"] == "started" and f["execution_id"] not in started_before
        ]

    try:
        wait_until(lambda: len(started_after()) >= 2, 40, "fires to start runs again")
    finally:  # the session's database is shared: leave no schedule firing for later beats
        client.request("PATCH", f"/api/schedules/{schedule['id']}", json={"enabled": False})
    print(f"\nschedule started runs again {time.monotonic() - drained:.1f} s after a worker came")
    for row in started_after()[:2]:
        assert client.wait(row["execution_id"], timeout=30)["status"] == "succeeded"
