"""Steps that misbehave: a poison step that kills its worker, a step that never ends, a
render that holds the execution (issue 10, faults 2 to 4), on real worker processes."""

from __future__ import annotations

import time

from tests.faults.conftest import Stack, wait_until
from tests.integration.helpers import action, by_node, trigger, workflow
from tests.integration.loopback import LoopbackService

# Short heartbeats, so that a dead delivery is noticed in seconds, not the default 20.
FAST = {"ATOM_HEARTBEAT_INTERVAL": "1", "ATOM_HEARTBEAT_TIMEOUT": "3"}


def test_a_step_that_kills_its_worker_fails_as_worker_lost_after_max_deliveries(stack: Stack):
    worker = stack.worker(env={**FAST, "ATOM_MAX_DELIVERIES": "3"})
    client = stack.api()
    doc = workflow(
        "poison",
        [
            trigger(),
            action("poison", "python", function="die"),
            action("after", "transform", output="never"),
        ],
        [("start", "poison"), ("poison", "after")],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    done = client.wait(run["id"], timeout=50)
    assert done["status"] == "failed", done
    poison = by_node(done)["poison"]
    assert poison["status"] == "failed"
    assert poison["error"]["type"] == "worker_lost", poison
    assert poison["attempts"] == 3, poison
    assert by_node(done)["after"]["status"] in {"cancelled", "skipped"}
    assert worker.poll() is None, "the worker itself must survive its children dying"


def test_a_step_without_a_timeout_is_stopped_by_the_default_step_timeout(stack: Stack):
    stack.worker(env={"ATOM_STEP_TIMEOUT": "2"})
    client = stack.api()
    doc = workflow(
        "forever",
        [trigger(), action("sleepy", "delay", seconds=25)],
        [("start", "sleepy")],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    started = time.monotonic()
    done = client.wait(run["id"], timeout=40)
    assert done["status"] == "failed", done
    sleepy = by_node(done)["sleepy"]
    assert sleepy["error"]["type"] == "TimeoutError", sleepy
    assert "timed out after 2 s" in sleepy["error"]["message"]
    assert time.monotonic() - started < 20


# 30 million empty loop turns: several seconds of rendering (about 7 s on a 2-core machine)
# with nothing to output.
HEAVY = "{% for i in range(10000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}done"


def test_cancel_takes_effect_within_2_s_while_a_heavy_template_renders(stack: Stack):
    stack.worker()
    client = stack.api()
    doc = workflow(
        "heavy",
        [
            trigger(),
            action("first", "delay", seconds=0.2),
            action("heavy", "transform", output=HEAVY),
        ],
        [("start", "first"), ("first", "heavy")],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    wait_until(
        lambda: by_node(client.execution(run["id"]))["first"]["status"] == "succeeded",
        20,
        "the first step",
    )
    time.sleep(1)  # the heavy step is rendering now
    asked = time.monotonic()
    answer = client.request("POST", f"/api/executions/{run['id']}/cancel")
    took = time.monotonic() - asked
    print(f"\ncancel answered in {took:.2f} s")
    assert took < 2, f"cancel waited {took:.1f} s for the render"
    assert answer["status"] == "cancelled"
    done = client.wait(run["id"], timeout=30)
    assert done["status"] == "cancelled"
    assert by_node(done)["heavy"]["status"] == "cancelled", by_node(done)["heavy"]


def test_pause_takes_effect_within_2_s_while_a_heavy_template_renders(stack: Stack):
    stack.worker()
    client = stack.api()
    doc = workflow(
        "heavy-pause",
        [
            trigger(),
            action("first", "delay", seconds=0.2),
            action("heavy", "transform", output=HEAVY),
        ],
        [("start", "first"), ("first", "heavy")],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    wait_until(
        lambda: by_node(client.execution(run["id"]))["first"]["status"] == "succeeded",
        20,
        "the first step",
    )
    time.sleep(1)
    asked = time.monotonic()
    answer = client.request("POST", f"/api/executions/{run['id']}/pause")
    took = time.monotonic() - asked
    print(f"\npause answered in {took:.2f} s")
    assert took < 2, f"pause waited {took:.1f} s for the render"
    assert answer["status"] == "paused"
    time.sleep(9)  # the render has ended by now; the step must not have started
    paused = client.execution(run["id"])
    assert paused["status"] == "paused"
    assert by_node(paused)["heavy"]["status"] == "pending", by_node(paused)["heavy"]
    client.request("POST", f"/api/executions/{run['id']}/resume")
    assert client.wait(run["id"], timeout=45)["status"] == "succeeded"


def test_a_step_whose_input_cannot_be_stored_fails_once_with_a_clear_error(stack: Stack):
    stack.worker()
    client = stack.api()
    doc = workflow(
        "unstorable",
        [trigger(), action("odd", "transform", output="{{ self }}")],
        [("start", "odd")],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    done = client.wait(run["id"], timeout=30)
    assert done["status"] == "failed", done
    odd = by_node(done)["odd"]
    assert odd["status"] == "failed" and odd["attempts"] == 1, odd
    assert "step 'odd' input is not JSON" in odd["error"]["message"], odd


def test_a_step_output_over_the_size_limit_fails_the_step(stack: Stack):
    stack.worker(env={"ATOM_MAX_STEP_OUTPUT_BYTES": "50000"})
    client = stack.api()
    doc = workflow(
        "big",
        [
            trigger(),
            action("big", "python", function="add", args=["{{ input.a }}", 1]),
            action(
                "huge",
                "http_request",
                method="GET",
                url="{{ input.url }}",
            ),
        ],
        [("start", "big"), ("big", "huge")],
    )
    service = LoopbackService().start()
    try:
        service.route(r"GET /big", lambda req, m: (200, {"blob": "x" * 200_000}))
        run = client.execute(
            client.create_workflow(doc)["id"], {"a": 1, "url": service.url + "/big"}
        )
        done = client.wait(run["id"], timeout=30)
    finally:
        service.stop()
    assert done["status"] == "failed", done
    huge = by_node(done)["huge"]
    assert huge["status"] == "failed", huge
    assert "over the limit of 50000" in huge["error"]["message"], huge
    assert huge["output"] is None


def test_a_time_limit_that_fires_while_the_outcome_is_recorded_fails_the_step_promptly(
    stack: Stack,
):
    """Celery's soft limit lands wherever the task is: here, in the write of the step's end
    (held up by a row lock the test takes). The step must end failed as timed out, and the
    run finish, without waiting for the reconciler (none runs here)."""
    from sqlalchemy import create_engine, text

    stack.worker()
    client = stack.api()
    slow = action("slow", "delay", seconds=1.5)
    slow["timeout"] = 3
    doc = workflow(
        "limit-while-recording",
        [trigger(), slow, action("after", "transform", output="never")],
        [("start", "slow"), ("slow", "after")],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    wait_until(
        lambda: by_node(client.execution(run["id"]))["slow"]["status"] == "running",
        20,
        "the step to start",
    )
    db = create_engine(stack.settings.database_url or "")
    try:
        with db.connect() as conn, conn.begin():
            # The action (1.5 s) ends and its worker waits on this lock to record it; the
            # soft limit (3 s) fires meanwhile and is raised once the write gets through.
            conn.execute(
                text(
                    "SELECT 1 FROM step_runs WHERE execution_id = :e AND node_id = 'slow' "
                    "FOR UPDATE"
                ),
                {"e": run["id"]},
            )
            time.sleep(3.5)  # past the soft limit, within the hard one (soft + 5 s)
        released = time.monotonic()
        done = client.wait(run["id"], timeout=20)
    finally:
        db.dispose()
    took = time.monotonic() - released
    print(f"\nrun ended {took:.1f} s after the lock was released")
    assert done["status"] == "failed", done
    step = by_node(done)["slow"]
    assert step["status"] == "failed", step
    assert step["error"]["type"] == "TimeoutError", step
    assert "timed out after 3 s" in step["error"]["message"], step
    assert step["attempts"] == 1, step
    assert by_node(done)["after"]["status"] in {"cancelled", "skipped"}
    assert took < 10


def test_an_execution_over_its_total_size_cap_fails_the_step_that_passes_it(
    stack: Stack, service: LoopbackService
):
    """Each step is under ATOM_MAX_STEP_OUTPUT_BYTES; together they pass the execution's cap
    (ATOM_MAX_EXECUTION_BYTES): the step whose output would pass it fails, and the run
    follows its failure rules (fail fast: the next step is cancelled)."""
    stack.worker(env={"ATOM_MAX_EXECUTION_BYTES": "20000"})
    client = stack.api()
    service.route(r"GET /blob", lambda req, m: (200, {"blob": "x" * 7000}))
    fetch = {"method": "GET", "url": service.url + "/blob"}
    doc = workflow(
        "growing",
        [
            trigger(),
            action("one", "http_request", **fetch),
            action("two", "http_request", **fetch),
            action("three", "http_request", **fetch),
            action("after", "transform", output="never"),
        ],
        [("start", "one"), ("one", "two"), ("two", "three"), ("three", "after")],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    done = client.wait(run["id"], timeout=30)
    assert done["status"] == "failed", done
    steps = by_node(done)
    assert steps["one"]["status"] == steps["two"]["status"] == "succeeded"
    three = steps["three"]
    assert three["status"] == "failed" and three["attempts"] == 1, three
    assert "ATOM_MAX_EXECUTION_BYTES" in three["error"]["message"], three
    assert "over the limit of 20000" in three["error"]["message"], three
    assert three["output"] is None
    assert steps["after"]["status"] in {"cancelled", "skipped"}
    assert done["error"]["node_id"] == "three"
