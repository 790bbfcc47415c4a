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
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from atom.errors import Conflict
from atom.runs import dispatch, engine, parallel_limit
from atom.store import workflows
from atom.store.models import Execution


def start_execution(
    factory: sessionmaker[Session],
    app: Celery,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    input_: Any,
    trigger: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> Execution:
    """Create an execution of the workflow's current version and send it to the workers (or,
    over the tenant's MAX_PARALLEL_EXECUTIONS, leave it queued: ``atom.runs.parallel_limit``).

    With an ``idempotency_key`` already used in the tenant, the execution started with it is
    returned and nothing is started (two concurrent requests with one key meet at the unique
    index; the loser returns the winner's run).
    """
    if idempotency_key is not None:
        existing = _by_key(factory, tenant_id, workflow_id, idempotency_key)
        if existing is not None:
            return existing
    try:
        with dispatch.record_then_send(factory, app) as (session, outbox):
            workflow = workflows.get_workflow(session, tenant_id, workflow_id)
            version = workflows.get_version(session, workflow)
            execution = engine.create_execution(
                session, workflow, version, input_, trigger or {"kind": "api"}
            )
            if idempotency_key is not None:
                execution.idempotency_key = idempotency_key
                session.flush()
            parallel_limit.send_or_wait(session, outbox, execution, parallel_limit.limit_of(app))
    except IntegrityError:
        if idempotency_key is None:
            raise
        existing = _by_key(factory, tenant_id, workflow_id, idempotency_key)
        if existing is None:
            raise
        return existing
    return execution


def _by_key(
    factory: sessionmaker[Session], tenant_id: uuid.UUID, workflow_id: uuid.UUID, key: str
) -> Execution | None:
    with factory.begin() as session:
        execution = session.scalar(
            select(Execution).where(
                Execution.tenant_id == tenant_id, Execution.idempotency_key == key
            )
        )
    if execution is not None and execution.workflow_id != workflow_id:
        raise Conflict(
            "This Idempotency-Key was used to start a run of another workflow; "
            "use a new key for each distinct request."
        )
    return execution
