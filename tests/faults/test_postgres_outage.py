"""PostgreSQL restarted under running work (issue 10, fault 8): workers and beat resume by
themselves, every accepted run finishes once, no side effect is lost or repeated."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from tests.faults.conftest import Stack, wait_until
from tests.faults.test_outages import side_effect_workflow
from tests.integration.loopback import LoopbackService

RUNS = 20
FAST_RECOVERY = {"ATOM_STALL_SECONDS": "6", "ATOM_RECONCILE_INTERVAL": "2"}


def test_postgres_restarted_during_running_runs(pg_stack: Stack, service: LoopbackService):
    stack = pg_stack
    worker = stack.worker(queues="atom.steps,atom.maintenance", env=FAST_RECOVERY)
    beat = stack.beat(env=FAST_RECOVERY)
    client = stack.api()
    workflow_id = client.create_workflow(side_effect_workflow(service, 0.5))["id"]
    runs = [client.execute(workflow_id, {"order": i})["id"] for i in range(RUNS)]
    wait_until(lambda: len(service.calls("POST", "/side-effect")) >= 3, 30, "runs to start")
    stack.stop_postgres()
    time.sleep(5)
    stack.start_postgres()
    back = time.monotonic()

    finished = [client.wait(run, timeout=max(5.0, 60 - (time.monotonic() - back))) for run in runs]
    recovered = time.monotonic() - back
    calls = service.calls("POST", "/side-effect")
    effects = Counter(c.headers["Idempotency-Key"] for c in calls)
    statuses = Counter(run["status"] for run in finished)
    print(
        f"\n{RUNS} runs accepted, {statuses['succeeded']} succeeded, all ended "
        f"{recovered:.1f} s after PostgreSQL came back; {len(calls)} calls for "
        f"{len(effects)} distinct side effects"
    )
    assert statuses == {"succeeded": RUNS}, statuses
    assert len(effects) == RUNS, "a side effect is missing"
    assert all(n == 1 for n in effects.values()), f"side effects repeated: {effects}"
    assert worker.poll() is None, Path(worker.log_path).read_text()[-3000:]
    assert beat.poll() is None, Path(beat.log_path).read_text()[-3000:]
