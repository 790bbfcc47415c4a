"""Clock skew (issue 10, fault 9): a worker and a beat whose clocks run 30 s ahead, made so
by libfaketime (preloaded into those processes only; PostgreSQL and the test keep the real
time). Times that another process compares come from PostgreSQL, so no duration is negative,
no step looks to start before its predecessor ended, and no schedule fires early."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import libfaketime

from tests.faults.conftest import Stack, wait_until
from tests.integration.helpers import action, by_node, trigger, when, workflow

SKEW_S = 30
LIBFAKETIME = Path(libfaketime.__file__).parent / "vendor/libfaketime/src/libfaketime.so.1"
# The wall clock runs SKEW_S ahead; the monotonic clock (timeouts, backoff) is left alone.
AHEAD = {
    "LD_PRELOAD": str(LIBFAKETIME),
    "FAKETIME": f"+{SKEW_S}s",
    "FAKETIME_DONT_FAKE_MONOTONIC": "1",
}


def test_the_skew_is_real():
    """The mechanism works: a process started with AHEAD sees a clock 30 s ahead."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env={**AHEAD, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ahead = float(out) - datetime.now(UTC).timestamp()
    assert SKEW_S - 2 < ahead < SKEW_S + 2, ahead


def test_a_worker_30_s_ahead_writes_no_negative_duration(stack: Stack):
    stack.worker()  # the real clock, on atom.steps (the second step and finalize)
    stack.worker(queues="skewed", env=AHEAD)
    client = stack.api()
    first = action("first", "transform", output="{{ input.n }}")
    first["queue"] = "skewed"
    third = action("third", "transform", output="{{ steps.second.output }}")
    third["queue"] = "skewed"
    doc = workflow(
        "skew",
        [trigger(), first, action("second", "transform", output="x"), third],
        [("start", "first"), ("first", "second"), ("second", "third")],
    )
    run = client.execute(client.create_workflow(doc)["id"], {"n": 1})
    done = client.wait(run["id"], timeout=30)
    assert done["status"] == "succeeded", done
    print(f"\nexecution_time_ms with a worker {SKEW_S} s ahead: {done['metrics']}")
    created, started, finished = (
        datetime.fromisoformat(done[k]) for k in ("created_at", "started_at", "finished_at")
    )
    assert created <= started <= finished, (created, started, finished)
    # The duration is the database's span, not a mix of two clocks 30 s apart.
    span_ms = (finished - started).total_seconds() * 1000
    assert abs(done["metrics"]["execution_time_ms"] - span_ms) < 2, (done["metrics"], span_ms)
    assert done["metrics"]["execution_time_ms"] < SKEW_S * 1000 / 2, done["metrics"]
    steps = by_node(done)
    for node in ("first", "second", "third"):
        step_ms = (
            when(steps[node], "finished_at") - when(steps[node], "started_at")
        ).total_seconds()
        assert abs(steps[node]["duration_ms"] - step_ms * 1000) < 2, steps[node]
        assert steps[node]["duration_ms"] < SKEW_S * 1000 / 2, steps[node]
    assert when(steps["second"], "started_at") >= when(steps["first"], "finished_at")
    assert when(steps["third"], "started_at") >= when(steps["second"], "finished_at")
    # Every stamp is the database's (real) time, not the skewed worker's.
    real = datetime.now(UTC)
    for node in ("first", "third"):
        assert when(steps[node], "finished_at") < real + timedelta(seconds=5), steps[node]


def test_a_beat_and_worker_30_s_ahead_fire_no_schedule_early(stack: Stack):
    stack.worker()
    stack.worker(queues="atom.maintenance", env=AHEAD)
    stack.beat(env=AHEAD)
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
        json={"workflow_id": wf, "interval_seconds": 3, "overlap": "allow"},
    )
    path = f"/api/schedules/{schedule['id']}/fires?page_size=100"

    def started() -> list[dict]:
        return [f for f in client.request("GET", path) if f["status"] == "started"]

    try:
        wait_until(lambda: len(started()) >= 3, 90, "three fires to start runs")
    finally:  # the session's database is shared: leave no schedule firing for later beats
        client.request("PATCH", f"/api/schedules/{schedule['id']}", json={"enabled": False})
    early = []
    for fire in started():
        run = client.execution(fire["execution_id"])
        lead = datetime.fromisoformat(fire["fire_time"]) - datetime.fromisoformat(run["created_at"])
        if lead > timedelta(0):
            early.append((fire["fire_time"], run["created_at"]))
    print(f"\nfires started: {len(started())}; early: {len(early)}")
    assert not early, f"runs created before their fire time: {early}"
