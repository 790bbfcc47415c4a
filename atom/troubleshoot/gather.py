"""Read what ATOM recorded about a run into a diagnosis :class:`Context` (tenant-scoped)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from atom.clock import now
from atom.runs import engine
from atom.store.models import Execution, StepRun, WorkflowVersion
from atom.troubleshoot.classify import classify, status_category
from atom.troubleshoot.records import Context, HostRecord, RunRecord, StepRecord
from atom.workflow.definition import Definition, parse_definition

HISTORY = 30
"""Earlier runs of the workflow a diagnosis reads."""
HOST_WINDOW = timedelta(hours=1)
"""How far back other workflows' calls to the same host are counted."""


def step_record(step: StepRun) -> StepRecord:
    """The immutable record of a step row."""
    return StepRecord(
        node_id=step.node_id,
        status=step.status,
        attempts=step.attempts,
        action_type=step.action_type,
        error=step.error if isinstance(step.error, dict) else None,
        output=step.output,
        input=step.input,
        started_at=step.started_at,
        finished_at=step.finished_at,
        heartbeat_at=step.heartbeat_at,
        retry_at=step.retry_at,
    )


def _runs(session: Session, executions: list[Execution]) -> list[RunRecord]:
    if not executions:
        return []
    by_execution: dict[uuid.UUID, dict[str, StepRecord]] = {e.id: {} for e in executions}
    rows = session.scalars(
        select(StepRun).where(
            StepRun.execution_id.in_(list(by_execution)),
            StepRun.tenant_id == executions[0].tenant_id,
        )
    )
    for step in rows:
        by_execution[step.execution_id][step.node_id] = step_record(step)
    return [
        RunRecord(
            execution_id=e.id,
            version=e.workflow_version,
            status=e.status,
            steps=by_execution[e.id],
            created_at=e.created_at,
            error=e.error if isinstance(e.error, dict) else None,
        )
        for e in executions
    ]


def _hosts(session: Session, execution: Execution, hosts: set[str]) -> dict[str, HostRecord]:
    """Calls of the tenant's *other* workflows to these hosts in the last hour."""
    if not hosts:
        return {}
    since = now() - HOST_WINDOW
    rows = session.execute(
        select(Execution.workflow_id, StepRun.status, StepRun.input, StepRun.output, StepRun.error)
        .join(Execution, Execution.id == StepRun.execution_id)
        .where(
            StepRun.tenant_id == execution.tenant_id,
            Execution.tenant_id == execution.tenant_id,
            Execution.workflow_id != execution.workflow_id,
            StepRun.action_type == "http_request",
            StepRun.finished_at >= since,
            StepRun.status.in_(["succeeded", "failed"]),
        )
        .limit(2000)
    )
    found: dict[str, dict[str, Any]] = {}
    for workflow_id, status, input_, output, error in rows:
        record = StepRecord("", status, input=input_, output=output, error=error)
        host = record.host
        if host not in hosts:
            continue
        entry = found.setdefault(host, {"workflows": set(), "calls": 0, "failed": 0, "cat": {}})
        entry["workflows"].add(workflow_id)
        entry["calls"] += 1
        if status == "failed":
            entry["failed"] += 1
            code = record.status_code
            category = (status_category(code) if code else None) or classify(
                record.message
            ).category
            entry["cat"][category.value] = entry["cat"].get(category.value, 0) + 1
    return {
        host: HostRecord(host, len(e["workflows"]), e["calls"], e["failed"], e["cat"])
        for host, e in found.items()
    }


def context(
    session: Session,
    execution: Execution,
    *,
    error_logs: tuple[str, ...] = (),
    heartbeat_timeout: float = 20.0,
) -> Context:
    """Everything a diagnosis of ``execution`` reads."""
    definition = engine.load_definition(session, execution.version_id)
    run = _runs(session, [execution])[0]
    earlier = list(
        session.scalars(
            select(Execution)
            .where(
                Execution.tenant_id == execution.tenant_id,
                Execution.workflow_id == execution.workflow_id,
                Execution.id != execution.id,
                Execution.created_at <= execution.created_at,
            )
            .order_by(Execution.created_at.desc())
            .limit(HISTORY)
        )
    )
    versions: dict[int, Definition] = {}
    for version in session.scalars(
        select(WorkflowVersion).where(
            WorkflowVersion.tenant_id == execution.tenant_id,
            WorkflowVersion.workflow_id == execution.workflow_id,
        )
    ):
        versions[version.version] = parse_definition(version.definition)
    hosts = {s.host for s in run.steps.values() if s.status == "failed" and s.host}
    return Context(
        run=run,
        definition=definition,
        versions=versions,
        history=_runs(session, earlier),
        hosts=_hosts(session, execution, {h for h in hosts if h}),
        now=now(),
        heartbeat_timeout=heartbeat_timeout,
        error_logs=error_logs,
        overrides=dict(execution.policy_overrides or {}),
    )


def logs_only(error_logs: tuple[str, ...], definition: Definition) -> Context:
    """A context with no run: only the user's log lines to go on."""
    return Context(
        run=RunRecord(uuid.UUID(int=0), 0, "unknown", {}),
        definition=definition,
        versions={},
        history=[],
        hosts={},
        now=now(),
        error_logs=error_logs,
    )
