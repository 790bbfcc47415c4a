"""``MAX_PARALLEL_EXECUTIONS`` per tenant: an execution over the limit waits ``queued`` and
starts, oldest first, as others end.

A waiting execution is recorded like any other but with epoch 0 and no canvas sent; admitting
it sets epoch 1 and sends its canvas. Counting and admitting hold a per-tenant advisory lock,
so two API processes or workers never admit past the limit. Admission runs when an execution
finalizes, and on every reconciler pass as the safety net (an execution cancelled or failed
without a finalize frees its slot there). The limit travels in the Celery app's configuration
(``atom_max_parallel_executions``, from ``Settings.max_parallel_executions``; 0 = no limit).
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from atom.clock import db_now
from atom.runs import dispatch
from atom.store.models import Execution, WorkflowVersion
from atom.workflow.definition import parse_definition

WAITING_EPOCH = 0
CONF_KEY = "atom_max_parallel_executions"
_LOCK_SPACE = 742003

_ACTIVE = text("""
    SELECT count(*) FROM executions
    WHERE tenant_id = :tenant AND status IN ('queued', 'running') AND epoch > 0
      AND id IS DISTINCT FROM :exclude
""")
_WAITING = text("""
    SELECT id FROM executions
    WHERE tenant_id = :tenant AND status = 'queued' AND epoch = 0
      AND id IS DISTINCT FROM :exclude
    ORDER BY created_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
""")


def limit_of(app: Celery) -> int:
    """The per-tenant limit configured on this app (0: none)."""
    return int(app.conf.get(CONF_KEY) or 0)


def _lock(session: Session, tenant_id: uuid.UUID) -> None:
    session.execute(
        text("SELECT pg_advisory_xact_lock(:space, hashtext(:tenant))"),
        {"space": _LOCK_SPACE, "tenant": str(tenant_id)},
    )


def must_wait(session: Session, execution: Execution, limit: int) -> bool:
    """Whether this new execution waits (holds the tenant's lock until the transaction ends,
    so the count stays true until it commits). Older waiting executions go first."""
    if limit <= 0:
        return False
    _lock(session, execution.tenant_id)
    params = {"tenant": execution.tenant_id, "exclude": execution.id}
    if session.execute(_ACTIVE, params).scalar_one() >= limit:
        return True
    return session.execute(_WAITING, {**params, "limit": 1}).first() is not None


def send_or_wait(
    session: Session, outbox: dispatch.Outbox, execution: Execution, limit: int
) -> bool:
    """Put a new execution in the outbox, or leave it waiting (epoch 0); True if it waits."""
    if must_wait(session, execution, limit):
        execution.epoch = WAITING_EPOCH
        return True
    outbox.add(session, execution)
    return False


def admit(
    factory: sessionmaker[Session], app: Celery, tenant_id: uuid.UUID, limit: int
) -> list[str]:
    """Start as many of the tenant's waiting executions as the limit allows, oldest first."""
    to_send: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    with factory.begin() as session:
        _lock(session, tenant_id)
        active = session.execute(_ACTIVE, {"tenant": tenant_id, "exclude": None}).scalar_one()
        free = limit - active
        if limit <= 0:
            free = 1_000_000
        if free <= 0:
            return []
        params = {"tenant": tenant_id, "exclude": None, "limit": free}
        ids = [row[0] for row in session.execute(_WAITING, params)]
        stamp = db_now(session)
        for execution_id in ids:
            execution = session.get_one(Execution, execution_id)
            version = session.get_one(WorkflowVersion, execution.version_id)
            execution.epoch = 1
            execution.updated_at = stamp
            to_send.append((str(execution_id), version.plan, version.definition))
    for execution_id, plan, definition in to_send:
        dispatch.send(app, plan, parse_definition(definition), execution_id, 1)
    return [item[0] for item in to_send]


def admit_all(factory: sessionmaker[Session], app: Celery, limit: int) -> list[str]:
    """Admit waiting executions of every tenant that has some (the reconciler's pass)."""
    with factory() as session:
        tenants = list(
            session.execute(
                text(
                    "SELECT DISTINCT tenant_id FROM executions "
                    "WHERE status = 'queued' AND epoch = 0"
                )
            ).scalars()
        )
    admitted: list[str] = []
    for tenant_id in tenants:
        admitted += admit(factory, app, tenant_id, limit)
    return admitted
