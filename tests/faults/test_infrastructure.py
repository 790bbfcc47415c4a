"""Infrastructure errors are retried with backoff and a limit (issue 10, item 6): a delivery
that meets a database error ``ATOM_INFRA_RETRIES`` + 1 times in a row fails its step as
``infrastructure_error``, says so, and the run follows its failure rules."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.faults.conftest import Stack, wait_until
from tests.integration.helpers import action, by_node, trigger, workflow


def test_a_step_whose_database_work_keeps_failing_fails_after_the_retry_limit(stack: Stack):
    client = stack.api()
    doc = workflow(
        "locked-out",
        [trigger(), action("a", "transform", output="x"), action("b", "transform", output="y")],
        [("start", "a"), ("a", "b")],
    )
    run = client.execute(client.create_workflow(doc)["id"])  # no worker yet: it waits
    db = create_engine(stack.settings.database_url or "")
    try:
        with db.connect() as conn, conn.begin():
            # The run's row stays locked: every delivery of step a times out waiting for it
            # (the worker's lock_timeout is 300 ms), a database error like any other.
            conn.execute(
                text("SELECT 1 FROM executions WHERE id = :e FOR UPDATE"), {"e": run["id"]}
            )
            worker = stack.worker(
                env={"PGOPTIONS": "-c lock_timeout=300", "ATOM_INFRA_RETRIES": "2"}
            )
            log = Path(worker.log_path)
            # 1 s + 2 s of backoff, then the third failure gives up.
            wait_until(
                lambda: "not retried again" in log.read_text(), 30, "the delivery to give up"
            )
        released = time.monotonic()
        done = client.wait(run["id"], timeout=30)
    finally:
        db.dispose()
    print(f"\nrun ended {time.monotonic() - released:.1f} s after the database let it")
    assert done["status"] == "failed", done
    a = by_node(done)["a"]
    assert a["status"] == "failed", a
    assert a["error"]["type"] == "infrastructure_error", a
    assert "3 deliveries in a row" in a["error"]["message"], a
    assert "ATOM_INFRA_RETRIES is 2" in a["error"]["message"], a
    assert "lock timeout" in a["error"]["message"], a
    assert by_node(done)["b"]["status"] in {"cancelled", "skipped"}
    assert log.read_text().count("database error (OperationalError)") == 2
