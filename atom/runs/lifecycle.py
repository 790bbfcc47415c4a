"""Pause, resume, cancel and retry an execution, and re-drive what is left of it. Each change
of status is announced as a live event (``engine.announce_*``) once it commits.

Resume, retry and recovery bump the execution's ``epoch`` and send the *residual* graph (the
nodes not yet succeeded); tasks of an older epoch exit at once, and a step that already
succeeded is never run again. Illegal transitions raise Conflict (409) naming the current
status and the actions it allows.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atom.clock import db_now
from atom.errors import Conflict, NotFound
from atom.runs import dispatch, engine
from atom.statuses import ExecutionStatus, StepStatus
from atom.store.models import Execution, StepRun
from atom.workflow.definition import NodeType

logger = logging.getLogger(__name__)

ALLOWED: dict[str, list[str]] = {
    ExecutionStatus.QUEUED: ["pause", "cancel"],
    ExecutionStatus.RUNNING: ["pause", "cancel"],
    ExecutionStatus.PAUSED: ["resume", "cancel"],
    ExecutionStatus.FAILED: ["retry"],
    ExecutionStatus.SUCCEEDED: [],
    ExecutionStatus.CANCELLED: [],
}
"""The lifecycle actions each execution status allows."""


def _locked(
    session: Session, tenant_id: uuid.UUID, execution_id: uuid.UUID, action: str
) -> Execution:
    execution = session.scalar(
        select(Execution)
        .where(Execution.id == execution_id, Execution.tenant_id == tenant_id)
        .with_for_update()
    )
    if execution is None:
        raise NotFound(f"execution {execution_id} not found")
    allowed = ALLOWED[execution.status]
    if action not in allowed:
        raise Conflict(
            f"Cannot {action} an execution that is {execution.status}; "
            f"allowed: {', '.join(allowed) or 'nothing (it has ended)'}.",
            status=execution.status,
            allowed=allowed,
        )
    return execution


def pause(session: Session, tenant_id: uuid.UUID, execution_id: uuid.UUID) -> Execution:
    """Running steps finish; no new step starts until resume."""
    execution = _locked(session, tenant_id, execution_id, "pause")
    execution.status = ExecutionStatus.PAUSED
    execution.updated_at = db_now(session)
    session.flush()
    engine.announce_execution(session, execution)
    return execution


def cancel(
    session: Session, tenant_id: uuid.UUID, execution_id: uuid.UUID
) -> tuple[Execution, list[str]]:
    """End the execution now; returns the task ids of running steps, to interrupt."""
    execution = _locked(session, tenant_id, execution_id, "cancel")
    stamp = db_now(session)
    execution.status = ExecutionStatus.CANCELLED
    execution.finished_at = stamp
    execution.updated_at = stamp
    running: list[str] = []
    for step in engine.steps_of(session, execution):
        if step.status == StepStatus.PENDING:
            engine.end_step(
                session,
                step,
                StepStatus.CANCELLED,
                error=engine.step_error(
                    step.node_id, "Cancelled", "execution cancelled before the step started"
                ),
            )
        elif step.status == StepStatus.RUNNING and step.task_id:
            running.append(step.task_id)
    session.flush()
    engine.announce_execution(session, execution)
    return execution, running


def resume(session: Session, tenant_id: uuid.UUID, execution_id: uuid.UUID) -> Execution:
    """paused -> running under a new epoch; the caller then sends the residual graph."""
    execution = _locked(session, tenant_id, execution_id, "resume")
    started = execution.started_at is not None
    execution.status = ExecutionStatus.RUNNING if started else ExecutionStatus.QUEUED
    execution.epoch += 1
    execution.updated_at = db_now(session)
    session.flush()
    engine.announce_execution(session, execution)
    return execution


def retry(session: Session, tenant_id: uuid.UUID, execution_id: uuid.UUID) -> Execution:
    """failed -> running: every step that did not succeed runs again under a new epoch."""
    execution = _locked(session, tenant_id, execution_id, "retry")
    for step in engine.steps_of(session, execution):
        if step.status != StepStatus.SUCCEEDED:
            step.status = StepStatus.PENDING
            step.error = None
            step.output = None
            step.finished_at = None
            step.retry_at = None
            step.updated_at = db_now(session)
            engine.announce_step(session, step)
    execution.status = ExecutionStatus.RUNNING
    execution.error = None
    execution.output = None
    execution.finished_at = None
    execution.epoch += 1
    execution.updated_at = db_now(session)
    session.flush()
    engine.announce_execution(session, execution)
    return execution


def send_residual(factory: sessionmaker[Session], app: Celery, execution_id: uuid.UUID) -> None:
    """Send the canvas of every node not yet succeeded, under the execution's current epoch."""
    with dispatch.record_then_send(factory, app) as (session, outbox):
        execution = session.get(Execution, execution_id)
        if execution is None:
            return
        definition = engine.effective_definition(session, execution)
        done = {
            s.node_id
            for s in engine.steps_of(session, execution)
            if s.status == StepStatus.SUCCEEDED
        }
        done |= {n.id for n in definition.nodes if n.type is NodeType.TRIGGER}
        outbox.add_plan(
            dispatch.residual_plan(definition, done), definition, execution_id, execution.epoch
        )


def redrive(
    factory: sessionmaker[Session],
    app: Celery,
    execution_id: uuid.UUID,
    reason: str,
    still_stalled: Callable[[Session, Execution], bool] | None = None,
) -> bool:
    """Bump the epoch of a stalled execution and send what is left of it (self-healing).

    ``still_stalled`` checks again under the execution's row lock: the execution was found
    stalled a moment ago, and a delivery may have claimed a step since (a message a worker
    held while Redis restarted, say). Re-driving it then would hand a live step to a second
    delivery, and its side effect would happen twice."""
    with factory.begin() as session:
        execution = session.scalar(
            select(Execution).where(Execution.id == execution_id).with_for_update(skip_locked=True)
        )
        if execution is None or execution.status not in (
            ExecutionStatus.QUEUED,
            ExecutionStatus.RUNNING,
        ):
            return False
        if still_stalled is not None and not still_stalled(session, execution):
            return False
        execution.epoch += 1
        execution.updated_at = db_now(session)
        stale = session.scalars(
            select(StepRun).where(
                StepRun.execution_id == execution.id,
                StepRun.tenant_id == execution.tenant_id,
                StepRun.status == StepStatus.RUNNING,
            )
        )
        for step in stale:  # its worker is gone: the next delivery takes the step over
            step.heartbeat_at = None
    logger.warning("re-driving execution %s: %s", execution_id, reason)
    send_residual(factory, app, execution_id)
    return True
