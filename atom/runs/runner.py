"""Start executions: record them in PostgreSQL first, then send their canvas.

PostgreSQL is the outbox: if the process dies between the commit and the send, or the broker
is down, the execution stays ``queued`` in the database and the reconciler sends it once the
broker is back; nothing accepted is lost, and the caller is not told it failed (a retry would
start it twice).
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from atom.runs import dispatch, engine
from atom.store import workflows
from atom.store.models import Execution


def start_execution(
    factory: sessionmaker[Session],
    app: Celery,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    input_: Any,
    trigger: dict[str, Any] | None = None,
) -> Execution:
    """Create an execution of the workflow's current version and send it to the workers."""
    with dispatch.record_then_send(factory, app) as (session, outbox):
        workflow = workflows.get_workflow(session, tenant_id, workflow_id)
        version = workflows.get_version(session, workflow)
        execution = engine.create_execution(
            session, workflow, version, input_, trigger or {"kind": "api"}
        )
        outbox.add(session, execution)
    return execution
