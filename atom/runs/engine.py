"""Execution lifecycle: the state of runs and steps in PostgreSQL, and the rules that move it.

Functions here take a ``Session`` and ``flush()``; the request or task that called them commits.
Every change of status is announced here (``announce_step``, ``announce_execution``) as a live
event published after the commit (``atom.events``). Statuses::

    execution: queued -> running -> succeeded | failed | cancelled   (paused reachable from running)
    step:      pending -> running -> succeeded | failed | skipped | cancelled
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from atom.clock import DB_CLOCK, db_now
from atom.errors import NotFound
from atom.runs import events
from atom.security.redaction import redact_step_input
from atom.statuses import TERMINAL_EXECUTION as TERMINAL_EXECUTION  # re-exported
from atom.statuses import TERMINAL_STEP as TERMINAL_STEP
from atom.statuses import ExecutionStatus as ExecutionStatus
from atom.statuses import StepStatus as StepStatus
from atom.store.db import after_commit
from atom.store.models import Execution, StepRun, Workflow, WorkflowVersion
from atom.workflow.compiler import step_graph
from atom.workflow.definition import (
    Definition,
    FailurePolicy,
    NodeType,
    TriggerRule,
    parse_definition,
)

StepObserver = Callable[[str, str, float], None]
"""Told ``(action_type, status, seconds)`` of each step that ended after running."""
STEP_OBSERVER = "atom.step_observer"
"""The key of the step observer in ``Session.info`` (``make_sessionmaker(**info)``): the
processes record metrics at their edge, so importing the engine records nothing."""


_DEFINITIONS: dict[uuid.UUID, Definition] = {}


def load_definition(session: Session, version_id: uuid.UUID) -> Definition:
    """The definition of a workflow version; versions are immutable, so it is cached."""
    definition = _DEFINITIONS.get(version_id)
    if definition is None:
        document = session.scalar(
            select(WorkflowVersion.definition).where(WorkflowVersion.id == version_id)
        )
        if document is None:
            raise NotFound(f"workflow version {version_id} not found")
        definition = parse_definition(document)
        if len(_DEFINITIONS) > 1000:
            _DEFINITIONS.clear()
        _DEFINITIONS[version_id] = definition
    return definition


def with_overrides(definition: Definition, overrides: dict[str, Any] | None) -> Definition:
    """The definition with one run's per-node changes (retry, timeout, config) applied.

    Set by an automatic troubleshooting resolution (``atom.troubleshoot``): the execution
    keeps its version, only this run's policy changes."""
    if not overrides:
        return definition
    nodes = []
    for node in definition.nodes:
        change = overrides.get(node.id)
        if not isinstance(change, dict):
            nodes.append(node)
            continue
        retry = node.retry
        if isinstance(change.get("retry"), dict):
            known = {k: v for k, v in change["retry"].items() if k in RETRY_FIELDS}
            retry = replace(retry, **known)
        timeout = change.get("timeout", node.timeout)
        config = {**node.config, **(change.get("config") or {})}
        nodes.append(replace(node, retry=retry, timeout=timeout, config=config))
    return replace(definition, nodes=tuple(nodes))


RETRY_FIELDS = ("max_retries", "retry_delay", "backoff_multiplier", "max_delay")


def effective_definition(session: Session, execution: Execution) -> Definition:
    """The definition an execution runs: its version's, with its policy overrides."""
    return with_overrides(
        load_definition(session, execution.version_id), execution.policy_overrides
    )


def create_execution(
    session: Session,
    workflow: Workflow,
    version: WorkflowVersion,
    input_: Any,
    trigger: dict[str, Any],
) -> Execution:
    """Record a queued execution and a pending step per node; the trigger step succeeds now."""
    definition = parse_definition(version.definition)
    execution = Execution(
        id=uuid.uuid4(),
        tenant_id=workflow.tenant_id,
        workflow_id=workflow.id,
        version_id=version.id,
        workflow_version=version.version,
        status=ExecutionStatus.QUEUED,
        input=input_,
        trigger=trigger,
        epoch=1,
    )
    session.add(execution)
    session.flush()
    stamp = db_now(session)
    for node in definition.nodes:
        is_trigger = node.type is NodeType.TRIGGER
        session.add(
            StepRun(
                tenant_id=workflow.tenant_id,
                execution_id=execution.id,
                node_id=node.id,
                name=node.name,
                action_type=node.action_type or node.type.value,
                status=StepStatus.SUCCEEDED if is_trigger else StepStatus.PENDING,
                attempts=1 if is_trigger else 0,
                output=input_ if is_trigger else None,
                started_at=stamp if is_trigger else None,
                finished_at=stamp if is_trigger else None,
            )
        )
    session.flush()
    announce_execution(session, execution)
    return execution


def get_execution(session: Session, tenant_id: uuid.UUID, execution_id: uuid.UUID) -> Execution:
    """The tenant's execution, or NotFound."""
    execution = session.scalar(
        select(Execution).where(Execution.id == execution_id, Execution.tenant_id == tenant_id)
    )
    if execution is None:
        raise NotFound(f"execution {execution_id} not found")
    return execution


def steps_of(session: Session, execution: Execution) -> list[StepRun]:
    """Every step run of an execution (same tenant by construction)."""
    return list(
        session.scalars(
            select(StepRun).where(
                StepRun.execution_id == execution.id, StepRun.tenant_id == execution.tenant_id
            )
        )
    )


# ---------------------------------------------------------------------------------------------
# Deciding whether a step runs


@dataclass(frozen=True)
class Decision:
    """What a step should do given its predecessors: run, or end with ``status`` and why."""

    run: bool
    status: str | None = None
    reason: str | None = None


def _edge_state(pred: StepRun, when: str | None) -> str:
    """The predecessor's state as this edge sees it: a branch not taken counts as skipped."""
    if pred.status != StepStatus.SUCCEEDED:
        return StepStatus.SKIPPED if pred.status == StepStatus.SKIPPED else StepStatus.FAILED
    if when is None:
        return StepStatus.SUCCEEDED
    result = bool((pred.output or {}).get("result")) if isinstance(pred.output, dict) else False
    return StepStatus.SUCCEEDED if (when == "true") == result else StepStatus.SKIPPED


def decide(definition: Definition, node_id: str, steps: dict[str, StepRun]) -> Decision:
    """Apply the node's trigger rule to its predecessors' final states."""
    node = definition.node(node_id)
    incoming = [c for c in definition.connections if c.target == node_id]
    states = {c.source: _edge_state(steps[c.source], c.when) for c in incoming}
    succeeded = [s for s, v in states.items() if v == StepStatus.SUCCEEDED]
    failed = [s for s, v in states.items() if v == StepStatus.FAILED]
    rule = node.trigger_rule
    if rule is TriggerRule.ALL_DONE:
        return Decision(True)
    if rule is TriggerRule.ALL_SUCCESS and len(succeeded) == len(states):
        return Decision(True)
    if rule is TriggerRule.ONE_SUCCESS and succeeded:
        return Decision(True)
    if rule is TriggerRule.NONE_FAILED and not failed and succeeded:
        return Decision(True)
    if failed and rule is not TriggerRule.ONE_SUCCESS:
        reason = f"upstream failed: {', '.join(sorted(failed))}"
    else:
        reason = _why_not_run(definition, node_id, steps, states)
        if succeeded:  # some ran, not enough for the rule (a join after an if/else)
            reason = f"trigger rule {rule.value} not met: {reason}"
    return Decision(False, StepStatus.SKIPPED, reason)


def _why_not_run(
    definition: Definition, node_id: str, steps: dict[str, StepRun], states: dict[str, str]
) -> str:
    """In a reader's words, why the predecessors that did not succeed did not: a condition
    that took the other branch, or a predecessor that was itself skipped (or failed)."""
    parts: list[str] = []
    skipped: list[str] = []
    failed: list[str] = []
    for connection in definition.connections:
        source = connection.source
        if connection.target != node_id or states[source] == StepStatus.SUCCEEDED:
            continue
        if steps[source].status == StepStatus.SUCCEEDED:  # succeeded, the edge not taken
            taken = "false" if connection.when == "true" else "true"
            parts.append(f"branch not taken (`{source}` was {taken})")
        elif states[source] == StepStatus.SKIPPED:
            skipped.append(source)
        else:
            failed.append(source)
    if skipped:
        parts.append(f"upstream skipped: {', '.join(sorted(skipped))}")
    if failed:
        parts.append(f"upstream failed: {', '.join(sorted(failed))}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------
# State changes made by the step task and finalize


def announce_step(session: Session, step: StepRun) -> None:
    """Publish the step's current state once the transaction commits."""
    events.emit(
        session,
        events.step_event(
            step.execution_id,
            step.node_id,
            step.status,
            attempts=step.attempts,
            action_type=step.action_type,
            started_at=step.started_at,
            finished_at=step.finished_at,
            error=step.error,
        ),
    )


def announce_execution(session: Session, execution: Execution) -> None:
    """Publish the execution's current status once the transaction commits."""
    events.emit(
        session,
        events.execution_event(
            execution.id, execution.status, epoch=execution.epoch, error=execution.error
        ),
    )


def claim_step(
    session: Session, step: StepRun, rendered_input: Any, task_id: str | None = None
) -> None:
    """Mark a step running under this delivery and count the attempt."""
    stamp = db_now(session)
    step.status = StepStatus.RUNNING
    step.attempts += 1
    step.input = rendered_input
    step.error = None
    step.task_id = task_id
    step.heartbeat_at = stamp
    step.retry_at = None
    step.started_at = step.started_at or stamp
    step.updated_at = stamp
    session.flush()
    announce_step(session, step)


def schedule_retry(session: Session, step: StepRun, error: dict[str, Any], delay: float) -> None:
    """A failed attempt: the step waits (pending) for its retry in ``delay`` seconds."""
    stamp = db_now(session)
    step.status = StepStatus.PENDING
    step.error = {**error, "retry_in_s": round(delay, 3)}
    step.retry_at = stamp + timedelta(seconds=delay)
    step.heartbeat_at = None
    step.updated_at = stamp
    session.flush()
    announce_step(session, step)


def mark_running(session: Session, execution: Execution) -> None:
    """queued -> running, once, when the first step starts."""
    if execution.status != ExecutionStatus.QUEUED:
        return  # the common case: no round trip
    result = session.execute(
        update(Execution)
        .where(Execution.id == execution.id, Execution.status == ExecutionStatus.QUEUED)
        .values(status=ExecutionStatus.RUNNING, started_at=DB_CLOCK(), updated_at=DB_CLOCK())
    )
    if result.rowcount:  # type: ignore[attr-defined]
        events.emit(
            session,
            events.execution_event(execution.id, ExecutionStatus.RUNNING, epoch=execution.epoch),
        )


def end_step(
    session: Session,
    step: StepRun,
    status: StepStatus,
    *,
    output: Any = None,
    error: dict[str, Any] | None = None,
) -> None:
    """Record a step's final state; once committed, a step that ran is reported to the
    session's :data:`STEP_OBSERVER` (the processes put their metrics there)."""
    step.status = status
    step.output = output
    step.error = error
    step.finished_at = db_now(session)
    step.updated_at = step.finished_at
    session.flush()
    announce_step(session, step)
    observe: StepObserver | None = session.info.get(STEP_OBSERVER)
    if observe is not None and step.started_at is not None:
        seconds = (step.finished_at - step.started_at).total_seconds()
        action_type = step.action_type or "unknown"
        after_commit(session, lambda: observe(action_type, status, seconds))


def step_error(node_id: str, error_type: str, message: str) -> dict[str, Any]:
    """The error record of a step (and of a failed execution)."""
    return {"node_id": node_id, "type": error_type, "message": message}


def fail_fast(
    session: Session, execution: Execution, definition: Definition, error: dict[str, Any]
) -> None:
    """Under fail_fast, the first failed step records the execution's error, so steps that
    have not started are cancelled; the status turns ``failed`` in ``finalize``, once the
    steps already running have finished (a status never claims an end that has not come)."""
    if definition.on_failure is not FailurePolicy.FAIL_FAST:
        return
    session.execute(
        update(Execution)
        .where(
            Execution.id == execution.id,
            Execution.error.is_(None),
            Execution.status.in_([ExecutionStatus.QUEUED, ExecutionStatus.RUNNING]),
        )
        .values(error=error, updated_at=DB_CLOCK())
    )


def stop_reason(execution: Execution, definition: Definition) -> str | None:
    """Why a step that has not started must not start (None: it may)."""
    if execution.status in (ExecutionStatus.CANCELLED, ExecutionStatus.FAILED):
        return f"execution is {execution.status}"
    if execution.error and definition.on_failure is FailurePolicy.FAIL_FAST:
        return f"fail_fast: step {execution.error.get('node_id')!r} failed"
    return None


class Admission(str, Enum):
    """What a delivery of a step task does with its step (see :func:`admit`)."""

    RUN = "run"
    """Render the config and run the action."""
    DONE = "done"
    """Nothing to do: the step already ended, or the execution is paused (left pending)."""
    BUSY = "busy"
    """Another delivery runs it (fresh heartbeat): check again after a heartbeat interval."""
    EARLY = "early"
    """A predecessor has not ended (a duplicated message fired a chord early): wait."""
    CANCEL = "cancel"
    """End the step ``cancelled`` (the execution was cancelled, failed, or failed fast)."""
    SKIP = "skip"
    """End the step ``skipped``: its trigger rule says so."""


@dataclass(frozen=True)
class Verdict:
    """The admission of one delivery, with the reason for a cancel or skip, and the
    predecessors an early delivery waits for."""

    admission: Admission
    reason: str | None = None
    waiting_for: tuple[str, ...] = ()


def admit(
    execution: Execution,
    definition: Definition,
    steps: dict[str, StepRun],
    node_id: str,
    *,
    at: datetime,
    heartbeat_timeout: float,
) -> Verdict:
    """Decide what a delivery of step ``node_id`` does, from the rows alone (no session, no
    broker): the rules of steps 2-4 of ``workers/tasks.py``, in order.

    A step that has ended is done; one another delivery runs with a heartbeat fresher than
    ``heartbeat_timeout`` is busy (a stale one means that worker died, and this delivery takes
    it over); a stopped execution cancels it; a paused one leaves it pending; a predecessor
    that has not ended makes it wait; then its trigger rule runs or skips it.
    """
    step = steps[node_id]
    if step.status in TERMINAL_STEP:
        return Verdict(Admission.DONE)
    if (
        step.status == StepStatus.RUNNING
        and step.heartbeat_at
        and at - step.heartbeat_at < timedelta(seconds=heartbeat_timeout)
    ):
        return Verdict(Admission.BUSY)
    if reason := stop_reason(execution, definition):
        return Verdict(Admission.CANCEL, reason)
    if execution.status == ExecutionStatus.PAUSED:
        return Verdict(Admission.DONE)
    unfinished = tuple(
        c.source
        for c in definition.connections
        if c.target == node_id and steps[c.source].status not in TERMINAL_STEP
    )
    if unfinished:
        return Verdict(Admission.EARLY, waiting_for=unfinished)
    decision = decide(definition, node_id, steps)
    if not decision.run:
        return Verdict(Admission.SKIP, decision.reason or "skipped")
    return Verdict(Admission.RUN)


def finalize(session: Session, execution: Execution) -> None:
    """Derive the execution's final state from its steps (the last task of every canvas)."""
    if execution.status in {ExecutionStatus.SUCCEEDED, ExecutionStatus.PAUSED}:
        return
    if execution.status == ExecutionStatus.CANCELLED and execution.finished_at:
        return
    definition = load_definition(session, execution.version_id)
    steps = {s.node_id: s for s in steps_of(session, execution)}
    stamp = db_now(session)
    failed = sorted(
        (s for s in steps.values() if s.status == StepStatus.FAILED),
        key=lambda s: s.finished_at or stamp,
    )
    left = [s for s in steps.values() if s.status not in TERMINAL_STEP]
    for step in left:
        step.status = StepStatus.CANCELLED
        step.finished_at = step.finished_at or stamp
        step.updated_at = stamp
        announce_step(session, step)
    if execution.status == ExecutionStatus.CANCELLED:
        pass
    elif failed:
        execution.status = ExecutionStatus.FAILED
        first = failed[0]
        execution.error = (
            execution.error
            or first.error
            or step_error(first.node_id, "ExecutionError", "step failed")
        )
    else:
        execution.status = ExecutionStatus.SUCCEEDED
        execution.error = None
    graph = step_graph(definition)
    sinks = [n for n in graph.nodes if not graph.successors[n]]
    execution.output = {
        n: steps[n].output for n in sinks if steps[n].status == StepStatus.SUCCEEDED
    }
    execution.started_at = execution.started_at or stamp
    execution.finished_at = stamp
    execution.updated_at = stamp
    session.flush()
    announce_execution(session, execution)


# ---------------------------------------------------------------------------------------------
# JSON views


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _ms(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return int((end - start).total_seconds() * 1000)


def step_view(step: StepRun) -> dict[str, Any]:
    """A step as the API shows it."""
    return {
        "node_id": step.node_id,
        "name": step.name,
        "action_type": step.action_type,
        "status": step.status,
        "attempts": step.attempts,
        "started_at": _iso(step.started_at),
        "finished_at": _iso(step.finished_at),
        "duration_ms": _ms(step.started_at, step.finished_at),
        "input": redact_step_input(step.input),  # rows stored before redaction existed too
        "output": step.output,
        "error": step.error,
    }


def execution_view(
    execution: Execution, steps: list[StepRun] | None = None, definition: Definition | None = None
) -> dict[str, Any]:
    """An execution as the API shows it; with ``steps``, every step in graph order."""
    view: dict[str, Any] = {
        "id": str(execution.id),
        "workflow_id": str(execution.workflow_id),
        "workflow_version": execution.workflow_version,
        "status": execution.status,
        "input": execution.input,
        "output": execution.output,
        "error": execution.error,
        "trigger": execution.trigger,
        "created_at": _iso(execution.created_at),
        "started_at": _iso(execution.started_at),
        "finished_at": _iso(execution.finished_at),
        "troubleshooting_session_id": (
            str(execution.troubleshooting_session_id)
            if execution.troubleshooting_session_id
            else None
        ),
    }
    if steps is not None:
        if definition is not None:
            order = {n.id: i for i, n in enumerate(definition.nodes)}
            steps = sorted(steps, key=lambda s: order.get(s.node_id, len(order)))
        counted = [s for s in steps if s.action_type != NodeType.TRIGGER.value]
        view["metrics"] = {
            "execution_time_ms": _ms(execution.started_at, execution.finished_at),
            "steps_total": len(counted),
            **{
                f"steps_{status}": sum(1 for s in counted if s.status == status)
                for status in (
                    StepStatus.SUCCEEDED,
                    StepStatus.FAILED,
                    StepStatus.SKIPPED,
                    StepStatus.CANCELLED,
                )
            },
        }
        view["steps"] = [step_view(s) for s in steps]
    return view
