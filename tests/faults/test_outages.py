"""Redis restarts and beat failover, on real processes (issue 10, fault 1).

Each test runs its own platform (``stack``): a Redis it restarts on the same port, worker and
beat processes, and the API in a thread; steps call a loopback server that counts their
side effects.
"""

from __future__ import annotations

import time
from pathlib import Path

from atom.observe.probe import BEAT_HEARTBEAT_KEY
from tests.faults.conftest import Stack, wait_until
from tests.integration.helpers import action, by_node, trigger, workflow
from tests.integration.loopback import LoopbackService


def side_effect_workflow(service: LoopbackService, seconds: float) -> dict:
    """call (a POST the loopback server counts, taking ``seconds``) -> after."""

    def handler(req, match):
        time.sleep(seconds)
        return 200, {"done": True}

    service.route(r"POST /side-effect", handler)
    return workflow(
        "side-effect",
        [
            trigger(),
            action(
                "call",
                "http_request",
                method="POST",
                url=service.url + "/side-effect",
                json={"order": "{{ input.order }}"},
            ),
            action("after", "transform", output="{{ steps.call.output.body.done }}"),
        ],
        [("start", "call"), ("call", "after")],
    )


def log_of(proc) -> str:
    return Path(proc.log_path).read_text(errors="replace")


def test_worker_and_beat_ride_out_a_redis_restart_and_the_in_flight_run_finishes(
    stack: Stack, service: LoopbackService
):
    worker = stack.worker(queues="atom.steps,atom.maintenance")
    beat = stack.beat()
    client = stack.api()
    run = client.execute(
        client.create_workflow(side_effect_workflow(service, 3))["id"], {"order": 1}
    )
    wait_until(lambda: service.calls("POST", "/side-effect"), 20, "the step to start")
    stack.restart_redis(down=2)
    restarted_at = time.monotonic()

    done = client.wait(run["id"], timeout=50)
    recovered = time.monotonic() - restarted_at
    print(f"\nrun finished {recovered:.1f} s after Redis came back")
    assert done["status"] == "succeeded", done
    assert by_node(done)["after"]["output"] is True
    assert len(service.calls("POST", "/side-effect")) == 1, "the side effect ran twice"
    # Both processes are still there, and work: a second run goes through at once.
    again = client.execute(done["workflow_id"], {"order": 2})
    assert client.wait(again["id"], timeout=30)["status"] == "succeeded"
    assert worker.poll() is None, log_of(worker)[-3000:]
    assert "Unrecoverable error" not in log_of(worker)
    assert beat.poll() is None, log_of(beat)[-3000:]


def test_beat_rides_out_a_long_redis_outage_logs_it_once_and_resumes(stack: Stack):
    beat = stack.beat()
    broker = stack.broker()
    wait_until(lambda: broker.get(BEAT_HEARTBEAT_KEY), 20, "beat to tick")
    stack.stop_redis()
    time.sleep(12)  # longer than the lock timeout, with several ticks failing
    assert beat.poll() is None, "beat died during the outage:\n" + log_of(beat)[-3000:]
    stack.start_redis()
    back = time.monotonic()
    broker = stack.broker()
    took = wait_until(lambda: broker.get(BEAT_HEARTBEAT_KEY), 30, "beat to tick again")
    print(f"\nbeat ticking again {took:.1f} s after Redis came back")
    # It is active again: lock re-taken, static entries (the reconciler ...) restored.
    wait_until(lambda: broker.keys("atom:redbeat:atom-reconcile*"), 10, "entries restored")
    assert time.monotonic() - back < 30
    assert beat.poll() is None
    # The line is written once the first good tick has ended (just after the entries).
    wait_until(lambda: "reachable again after" in log_of(beat), 10, "the end of the outage")
    log = log_of(beat)
    assert log.count("a service is unreachable") == 1, log[-3000:]
    assert log.count("reachable again after") == 1, log[-3000:]


def test_a_standby_beat_takes_over_within_the_lock_timeout(stack: Stack):
    from beat.main import LOCK_TIMEOUT

    broker = stack.broker()
    active = stack.beat(name="beat-a")
    wait_until(lambda: broker.get(BEAT_HEARTBEAT_KEY), 20, "the first beat to tick")
    standby = stack.beat(name="beat-b")
    time.sleep(3)
    assert "Acquired lock" not in log_of(standby), "two beats active at once"
    stack.kill(active)
    killed = time.monotonic()
    took = wait_until(
        lambda: "Acquired lock" in log_of(standby), LOCK_TIMEOUT + 10, "the standby to take over"
    )
    print(f"\nstandby beat active {took:.1f} s after the active one was killed")
    assert took <= LOCK_TIMEOUT + 3
    before = float(broker.get(BEAT_HEARTBEAT_KEY) or 0)
    wait_until(
        lambda: float(broker.get(BEAT_HEARTBEAT_KEY) or 0) > before, 10, "the standby to tick"
    )
    assert time.monotonic() - killed < LOCK_TIMEOUT + 15
    assert standby.poll() is None
