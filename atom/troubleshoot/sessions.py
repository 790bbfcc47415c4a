"""Troubleshooting sessions: rows that hold a diagnosis, the resolutions tried and every
decision taken, from ``open`` to ``resolved`` or ``needs_attention``.

Functions take a ``Session`` and flush; the caller commits, then sends the
:class:`Followup` a function returned (a retry to run after a wait) by task name, so nothing
is sent for a transaction that rolled back. Automatic retries are bounded per execution
(``ATOM_TROUBLESHOOT_MAX_RETRIES``); a permanent cause is never retried without a person.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from atom.alerts import channels
from atom.celery_app import MAINTENANCE_QUEUE, TROUBLESHOOT_RETRY
from atom.clock import db_now, now
from atom.config import Settings
from atom.errors import Conflict, InvalidInput, NotFound
from atom.runs import engine, events, lifecycle
from atom.security import settings as tenant_settings
from atom.statuses import ExecutionStatus, SessionStatus, StepStatus, values
from atom.store import workflows as store
from atom.store.db import after_commit
from atom.store.models import (
    AlertRule,
    Execution,
    TroubleshootingSession,
    Workflow,
    WorkflowVersion,
)
from atom.troubleshoot import gather, resolutions
from atom.troubleshoot.diagnose import Diagnosis, Issue, diagnose

logger = logging.getLogger(__name__)

OPEN, RESOLVED, NEEDS_ATTENTION = (
    SessionStatus.OPEN,
    SessionStatus.RESOLVED,
    SessionStatus.NEEDS_ATTENTION,
)
STATUSES = values(SessionStatus)
MAX_LOG_LINES = 500
MAX_LOG_LINE = 4000


RECONCILER = "reconciler"
"""``by`` of what the reconciler did (``atom.troubleshoot.stuck`` records it)."""
ACTED = ("retried", "redriven", "waiting_for_worker")
"""Decisions after which a session waits for its run to end."""


@dataclass(frozen=True)
class Followup:
    """Work to send once the transaction has committed: retry issue ``issue`` of session
    ``session_id`` after ``countdown`` seconds."""

    session_id: uuid.UUID
    issue: int
    countdown: float


def _decide(row: TroubleshootingSession, decision: str, **detail: Any) -> None:
    row.decisions = [*row.decisions, {"at": now().isoformat(), "decision": decision, **detail}]
    row.updated_at = now()


def _issues(diagnosis: Diagnosis, ctx: Any, attempt: int, settings: Settings) -> list[dict]:
    """The issues as stored: each with its resolution (effects resolve with their cause)."""
    stored = []
    for issue in diagnosis.issues:
        entry = issue.as_dict()
        if issue.root_cause or not _is_effect(issue):
            node = ctx.definition.node(issue.node_id) if issue.node_id else None
            entry["resolution"] = resolutions.plan(
                issue, node, attempt, ctx.overrides, settings.troubleshoot_max_wait
            )
        else:
            entry["resolution"] = {
                "action": "none",
                "automatic": False,
                "applied": False,
                "result": None,
                "description": "resolves with its root cause",
            }
        stored.append(entry)
    return stored


def _is_effect(issue: Issue) -> bool:
    return bool(issue.evidence) and issue.evidence[0].get("kind") == "effect"


def check_logs(value: Any) -> tuple[str, ...]:
    """The ``error_logs`` of a request: a list of strings, bounded (422 otherwise)."""
    if value is None:
        return ()
    problems: dict[str, list[str]] = {}
    if not isinstance(value, list):
        raise InvalidInput({"error_logs": ["must be a list of strings"]})
    if len(value) > MAX_LOG_LINES:
        problems["error_logs"] = [f"at most {MAX_LOG_LINES} lines"]
    for i, line in enumerate(value[:MAX_LOG_LINES]):
        if not isinstance(line, str):
            problems[f"error_logs[{i}]"] = ["must be a string"]
        elif len(line) > MAX_LOG_LINE:
            problems[f"error_logs[{i}]"] = [f"at most {MAX_LOG_LINE} characters"]
    if problems:
        raise InvalidInput(problems)
    return tuple(value)


def _pick_execution(
    session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID, execution_id: uuid.UUID | None
) -> Execution | None:
    if execution_id is not None:
        execution = engine.get_execution(session, tenant_id, execution_id)
        if execution.workflow_id != workflow_id:
            raise NotFound(f"execution {execution_id} is not a run of workflow {workflow_id}")
        return execution
    base = select(Execution).where(
        Execution.tenant_id == tenant_id, Execution.workflow_id == workflow_id
    )
    failed = session.scalar(
        base.where(Execution.status == ExecutionStatus.FAILED.value)
        .order_by(Execution.created_at.desc())
        .limit(1)
    )
    return failed or session.scalar(base.order_by(Execution.created_at.desc()).limit(1))


def _auto_retries(session: Session, execution_id: uuid.UUID) -> int:
    """Automatic retries this execution has had, across all its sessions."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(TroubleshootingSession.auto_retries), 0)).where(
                TroubleshootingSession.execution_id == execution_id
            )
        )
        or 0
    )


def analyze(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    settings: Settings,
    *,
    execution_id: uuid.UUID | None = None,
    error_logs: tuple[str, ...] = (),
    auto_resolve: bool = False,
    origin: str = "api",
) -> tuple[TroubleshootingSession, Followup | None]:
    """Open a session about a run of a workflow (its latest failed run when none is named)."""
    workflow = store.get_workflow(session, tenant_id, workflow_id)
    execution = _pick_execution(session, tenant_id, workflow.id, execution_id)
    row = TroubleshootingSession(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        workflow_id=workflow.id,
        execution_id=execution.id if execution else None,
        status=OPEN,
        origin=origin,
        auto_resolve=auto_resolve,
        issues=[],
        logs=[],
        decisions=[],
        auto_retries=0,
        summary="",
    )
    session.add(row)
    if execution is None:
        version = store.get_version(session, workflow)
        ctx = gather.logs_only(error_logs, engine.load_definition(session, version.id))
    else:
        ctx = gather.context(
            session,
            execution,
            error_logs=error_logs,
            heartbeat_timeout=settings.heartbeat_timeout,
        )
    attempt = _auto_retries(session, execution.id) if execution else 0
    diagnosis = diagnose(ctx)
    row.issues = _issues(diagnosis, ctx, attempt, settings)
    row.logs = diagnosis.logs
    row.summary = diagnosis.summary
    _decide(
        row,
        "diagnosed",
        execution_id=str(execution.id) if execution else None,
        execution_status=execution.status if execution else None,
        summary=diagnosis.summary,
        log_lines=len(diagnosis.logs),
    )
    session.flush()
    if execution is not None and execution.status in (
        ExecutionStatus.FAILED.value,
        ExecutionStatus.RUNNING.value,
        ExecutionStatus.QUEUED.value,
    ):
        execution.troubleshooting_session_id = row.id
    followup = _next(session, row, execution, settings)
    session.flush()
    return row, followup


def _next(
    session: Session,
    row: TroubleshootingSession,
    execution: Execution | None,
    settings: Settings,
) -> Followup | None:
    """After a diagnosis: schedule a safe automatic retry, or end the session."""
    if not row.issues:
        if execution is not None and execution.status == ExecutionStatus.SUCCEEDED.value:
            _finish(session, row, RESOLVED, "the run succeeded and nothing needs fixing")
        else:
            _finish(session, row, NEEDS_ATTENTION, "no cause found in what ATOM recorded")
        return None
    root = row.issues[0]
    resolution = root["resolution"]
    if not resolution.get("automatic"):
        if resolution.get("action") == resolutions.RAISE_TIMEOUT:
            reason = "the run succeeded, but a step used most of its time limit"
        elif root.get("transient"):
            reason = "no safe automatic retry for it"
        else:
            reason = (
                f"{root['category']} is a permanent cause: retrying unchanged would fail the "
                "same way"
            )
        _decide(row, "not_retried", reason=reason, suggestion=resolution.get("description"))
        _finish(session, row, NEEDS_ATTENTION, resolution.get("description", ""))
        return None
    if not row.auto_resolve:
        _decide(row, "waiting_for_person", reason="auto_resolve is off; apply issue 0 to retry")
        _finish(session, row, NEEDS_ATTENTION, resolution.get("description", ""))
        return None
    if execution is None:
        _finish(session, row, NEEDS_ATTENTION, "no execution to retry")
        return None
    wanted = ExecutionStatus.FAILED.value
    if resolution["action"] == resolutions.REDRIVE:
        wanted = ExecutionStatus.RUNNING.value
    if execution.status != wanted:
        _decide(row, "not_retried", reason=f"the execution is {execution.status}")
        _finish(session, row, NEEDS_ATTENTION, f"the execution is {execution.status}")
        return None
    done = _auto_retries(session, execution.id)
    if done >= settings.troubleshoot_max_retries:
        _decide(
            row,
            "bound_reached",
            reason=f"{done} automatic retries already; the bound is "
            f"{settings.troubleshoot_max_retries} per execution",
        )
        _finish(session, row, NEEDS_ATTENTION, "automatic retries did not resolve it")
        return None
    row.auto_retries += 1
    resolution["result"] = f"scheduled in {resolution['wait_s']:g} s"
    flag_modified(row, "issues")
    _decide(
        row,
        "retry_scheduled",
        attempt=done + 1,
        wait_s=resolution["wait_s"],
        policy=resolution.get("policy"),
        reason=resolution["description"],
    )
    return Followup(row.id, 0, float(resolution["wait_s"]))


def _finish(session: Session, row: TroubleshootingSession, status: SessionStatus, why: str) -> None:
    row.status = status
    row.updated_at = now()
    if status == RESOLVED:
        row.resolved_at = now()
    _decide(row, status, reason=why)
    _announce(session, row, why)


def notice_of(row: TroubleshootingSession) -> tuple[str, str | None] | None:
    """Whether a session that just ended is worth a notice: ``(event, auto_resolution)``.

    ATOM tells the tenant's alert channels when it acted or needs someone: a session ATOM
    opened by itself (a failed run, a stuck one) that needs attention, and every automatic
    resolution that succeeded or failed. A session a person opened through the API and
    that ATOM did not act on is answered in the response; it sends nothing."""
    person = any(d.get("by") == "person" for d in row.decisions)
    acted = row.auto_retries > 0 or any(
        d.get("decision") in ACTED and d.get("by") != "person" for d in row.decisions
    )
    if person:
        return None  # someone is at it already
    if row.status == RESOLVED:
        return ("troubleshooting.resolved", "succeeded") if acted else None
    if row.status == NEEDS_ATTENTION:
        if acted:
            return "troubleshooting.needs_attention", "failed"
        if row.origin != "api":
            return "troubleshooting.needs_attention", None
    return None


def notice_text(payload: dict[str, Any]) -> str:
    """The one line Slack and the email subject show."""
    texts: dict[tuple[str, str | None], str] = {
        ("troubleshooting.resolved", "succeeded"): "resolved automatically",
        ("troubleshooting.needs_attention", "failed"): "automatic resolution failed, needs "
        "attention",
    }
    what = texts.get((payload["event"], payload.get("auto_resolution")), "needs attention")
    root = payload.get("root_cause") or {}
    where = f" at step {root['node_id']}" if root.get("node_id") else ""
    cause = f" ({root['category']}{where})" if root.get("category") else ""
    return f"[ATOM] troubleshooting: {payload['workflow_name']} {what}{cause}"


def _announce(session: Session, row: TroubleshootingSession, why: str) -> None:
    """A live event on the execution's stream and, when ATOM acted or needs someone, a
    notice on the tenant's alert channels (``ATOM_TROUBLESHOOT_NOTIFY`` picks the types)."""
    message = {
        RESOLVED: "resolved automatically" if row.auto_retries else "resolved",
        NEEDS_ATTENTION: "needs attention",
    }.get(row.status, row.status)
    event = {
        "type": "troubleshooting",
        "execution_id": str(row.execution_id) if row.execution_id else None,
        "session_id": str(row.id),
        "workflow_id": str(row.workflow_id),
        "status": row.status,
        "message": message,
        "reason": why,
        "at": now().isoformat(),
    }
    if row.execution_id is not None:
        events.emit(session, event)
    settings: Settings | None = session.info.get(SETTINGS)
    notice = notice_of(row)
    if settings is None or notice is None or not settings.troubleshoot_notify:
        return
    targets = _channels_of(session, row, settings.troubleshoot_notify)
    if not targets:
        return
    kind, outcome = notice
    root = row.issues[0] if row.issues else {}
    workflow = session.get(Workflow, row.workflow_id)
    payload = {
        **event,
        "event": kind,
        "auto_resolution": outcome,
        "auto_retries": row.auto_retries,
        "workflow_name": workflow.name if workflow is not None else str(row.workflow_id),
        "root_cause": {k: root.get(k) for k in ("category", "node_id", "confidence")},
        "suggestion": (root.get("resolution") or {}).get("description"),
        "summary": row.summary,
    }
    domains = tenant_settings.allowed_domains(session, row.tenant_id)
    bind = session.get_bind()
    session_id = row.id

    def notify() -> None:
        results = channels.deliver(targets, payload, settings, domains, notice_text(payload))
        # Recorded on the session, in a transaction of its own (this one has committed).
        with Session(bind) as later, later.begin():
            stored = later.get(TroubleshootingSession, session_id, with_for_update=True)
            if stored is not None:
                _decide(stored, "notified", event=kind, deliveries=results)

    after_commit(session, notify)


def _channels_of(
    session: Session, row: TroubleshootingSession, kinds: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The tenant's alert channels (its enabled rules, tenant-wide or on this workflow) of
    the chosen types, each once."""
    targets: list[dict[str, Any]] = []
    for rule in session.scalars(
        select(AlertRule).where(
            AlertRule.tenant_id == row.tenant_id,
            AlertRule.enabled.is_(True),
            (AlertRule.workflow_id.is_(None)) | (AlertRule.workflow_id == row.workflow_id),
        )
    ):
        for channel in rule.channels or []:
            if isinstance(channel, dict) and channel.get("type") in kinds:
                if channel not in targets:
                    targets.append(channel)
    return targets


SETTINGS = "atom.troubleshoot.settings"
"""Key of the Settings in ``Session.info`` when alert channels should be notified."""


def send(app: Celery, followup: Followup) -> None:
    """Send a followup's retry (after its wait) to the maintenance queue, by task name."""
    app.send_task(
        TROUBLESHOOT_RETRY,
        args=(str(followup.session_id), followup.issue),
        countdown=followup.countdown,
        queue=MAINTENANCE_QUEUE,
    )


def retry_task(session: Session, session_id: uuid.UUID, index: int) -> uuid.UUID | None:
    """The body of the scheduled retry: the execution to send, if it was retried."""
    row = _locked_session(session, session_id)
    if row.status != OPEN:
        _decide(row, "not_retried", reason=f"the session is {row.status}")
        return None
    execution_id = retry_now(session, row, index, by="atom")
    if execution_id is None:  # the run moved on meanwhile (a person, another session)
        _finish(session, row, NEEDS_ATTENTION, row.decisions[-1].get("reason", ""))
    return execution_id


def _locked_session(
    session: Session, session_id: uuid.UUID, tenant_id: uuid.UUID | None = None
) -> TroubleshootingSession:
    query = select(TroubleshootingSession).where(TroubleshootingSession.id == session_id)
    if tenant_id is not None:
        query = query.where(TroubleshootingSession.tenant_id == tenant_id)
    row = session.scalar(query.with_for_update())
    if row is None:
        raise NotFound(f"troubleshooting session {session_id} not found")
    return row


def _merge(overrides: dict[str, Any] | None, policy: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(overrides or {})
    for node_id, change in policy.items():
        entry = merged.setdefault(node_id, {})
        for key, value in change.items():
            if isinstance(value, dict):
                entry[key] = {**entry.get(key, {}), **value}
            else:
                entry[key] = value
    return merged


def retry_now(
    session: Session, row: TroubleshootingSession, index: int, *, by: str
) -> uuid.UUID | None:
    """Retry the session's execution from its failed step with issue ``index``'s policy.

    Returns the execution id to send the residual graph of (after commit), or None when the
    execution is no longer in a state to retry (recorded as a decision)."""
    issue = row.issues[index]
    resolution = issue["resolution"]
    execution = session.scalar(
        select(Execution)
        .where(Execution.id == row.execution_id, Execution.tenant_id == row.tenant_id)
        .with_for_update()
    )
    if execution is None:
        _decide(row, "not_retried", reason="the execution no longer exists")
        return None
    policy = resolution.get("policy") or {}
    if resolution.get("action") == resolutions.REDRIVE:
        if execution.status not in (ExecutionStatus.RUNNING.value, ExecutionStatus.QUEUED.value):
            _decide(row, "not_redriven", reason=f"the execution is {execution.status}")
            return None
        execution.epoch += 1
        execution.updated_at = db_now(session)  # the reconciler compares it on that clock
        for step in engine.steps_of(session, execution):
            if step.status == StepStatus.RUNNING.value:
                step.heartbeat_at = None  # its worker is gone: the next delivery takes over
    else:
        if execution.status != ExecutionStatus.FAILED.value:
            _decide(row, "not_retried", reason=f"the execution is {execution.status}")
            return None
        execution.policy_overrides = _merge(execution.policy_overrides, policy)
        lifecycle.retry(session, execution.tenant_id, execution.id)
    execution.troubleshooting_session_id = row.id
    resolution["applied"] = True
    resolution["result"] = f"retrying the execution (epoch {execution.epoch})"
    flag_modified(row, "issues")
    row.status = OPEN
    _decide(
        row,
        "retried",
        by=by,
        epoch=execution.epoch,
        policy=policy,
        overrides=execution.policy_overrides,
    )
    session.flush()
    return execution.id


def on_finished(session: Session, execution_id: uuid.UUID, settings: Settings) -> Followup | None:
    """An execution ended: close its session, retry it again, or open a session for it.

    Called by the maintenance task ``finalize`` sends (``ATOM_AUTO_TROUBLESHOOT``)."""
    execution = session.get(Execution, execution_id)
    if execution is None:
        return None
    row = None
    if execution.troubleshooting_session_id is not None:
        row = session.scalar(
            select(TroubleshootingSession)
            .where(
                TroubleshootingSession.id == execution.troubleshooting_session_id,
                TroubleshootingSession.tenant_id == execution.tenant_id,
            )
            .with_for_update()
        )
    retried = (
        row is not None
        and row.status == OPEN
        and any(d.get("decision") in ACTED for d in row.decisions)
    )
    if row is not None and retried:
        if execution.status == ExecutionStatus.SUCCEEDED.value:
            resolution = row.issues[0]["resolution"]
            redrives = sum(
                1
                for d in row.decisions
                if d.get("decision") == "retried" and d.get("by") == RECONCILER
            )
            if row.auto_retries:
                result = (
                    f"succeeded after {row.auto_retries} automatic "
                    f"retr{'y' if row.auto_retries == 1 else 'ies'}"
                )
            elif redrives:
                result = f"succeeded after {redrives} re-drive(s) by the reconciler"
            elif any(d.get("decision") == "waiting_for_worker" for d in row.decisions):
                result = "succeeded once a worker took it"
            else:
                result = "succeeded after the retry"
            resolution["result"] = result
            flag_modified(row, "issues")
            _finish(session, row, RESOLVED, resolution["result"])
            return None
        if execution.status != ExecutionStatus.FAILED.value:
            return None
        ctx = gather.context(session, execution, heartbeat_timeout=settings.heartbeat_timeout)
        diagnosis = diagnose(ctx)
        _decide(row, "retry_failed", summary=diagnosis.summary)
        row.issues = _issues(diagnosis, ctx, _auto_retries(session, execution.id), settings)
        row.summary = diagnosis.summary
        return _next(session, row, execution, settings)
    automatic = settings.auto_recovery_enabled and settings.auto_troubleshoot
    if execution.status != ExecutionStatus.FAILED.value or not automatic:
        return None
    _, followup = analyze(
        session,
        execution.tenant_id,
        execution.workflow_id,
        settings,
        execution_id=execution.id,
        auto_resolve=True,
        origin="auto",
    )
    return followup


# ---------------------------------------------------------------------------------------------
# Reading and applying


def get(session: Session, tenant_id: uuid.UUID, session_id: uuid.UUID) -> TroubleshootingSession:
    """The tenant's session, or NotFound."""
    row = session.scalar(
        select(TroubleshootingSession).where(
            TroubleshootingSession.id == session_id,
            TroubleshootingSession.tenant_id == tenant_id,
        )
    )
    if row is None:
        raise NotFound(f"troubleshooting session {session_id} not found")
    return row


def list_query(
    tenant_id: uuid.UUID, workflow_id: uuid.UUID | None = None, status: str | None = None
):
    """The tenant's sessions, newest first."""
    query = select(TroubleshootingSession).where(TroubleshootingSession.tenant_id == tenant_id)
    if workflow_id is not None:
        query = query.where(TroubleshootingSession.workflow_id == workflow_id)
    if status is not None:
        query = query.where(TroubleshootingSession.status == status)
    return query.order_by(TroubleshootingSession.created_at.desc(), TroubleshootingSession.id)


_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _set_at(document: dict[str, Any], node_id: str, location: str, value: Any) -> bool:
    prefix = f"nodes[{node_id}].config"
    if not location.startswith(prefix):
        return False
    node = next((n for n in document.get("nodes", []) if n.get("id") == node_id), None)
    if node is None:
        return False
    parts = [
        m.group(1) if m.group(1) is not None else int(m.group(2))
        for m in _SEGMENT.finditer(location[len(prefix) :])
    ]
    target: Any = node.setdefault("config", {})
    for part in parts[:-1]:
        try:
            target = target[part]
        except (KeyError, IndexError, TypeError):
            return False
    try:
        target[parts[-1]] = value
    except (IndexError, TypeError):
        return False
    return True


def apply(
    session: Session, tenant_id: uuid.UUID, session_id: uuid.UUID, index: int
) -> tuple[TroubleshootingSession, uuid.UUID | None]:
    """Apply issue ``index``'s resolution for a person; returns the session and, for a retry,
    the execution to send (after commit). Conflict when there is nothing to apply."""
    row = _locked_session(session, session_id, tenant_id)
    if not 0 <= index < len(row.issues):
        raise InvalidInput({"issue": [f"must be an issue index from 0 to {len(row.issues) - 1}"]})
    issue = row.issues[index]
    resolution = issue.get("resolution") or {}
    action = resolution.get("action")
    if resolution.get("applied"):
        raise Conflict(f"issue {index}'s resolution was applied already")
    if action == "none":
        raise Conflict(f"issue {index} is an effect: apply its root cause (issue 0)")
    if action in (resolutions.REVERT, resolutions.RAISE_TIMEOUT) or (
        action == resolutions.FIX_TEMPLATE and resolution.get("changes")
    ):
        version = _new_version(session, row, resolution)
        resolution["applied"] = True
        resolution["result"] = f"saved as version {version}"
        flag_modified(row, "issues")
        _decide(row, "applied", by="person", action=action, version=version)
        _finish(session, row, RESOLVED, f"{action}: saved as version {version}")
        return row, None
    if row.execution_id is None:
        raise Conflict("this session has no execution to retry")
    execution_id = retry_now(session, row, index, by="person")
    if execution_id is None:
        raise Conflict(row.decisions[-1].get("reason", "the execution cannot be retried now"))
    return row, execution_id


def _new_version(session: Session, row: TroubleshootingSession, resolution: dict) -> int:
    workflow = store.get_workflow(session, row.tenant_id, row.workflow_id)
    changes = resolution.get("changes") or {}
    if resolution["action"] == resolutions.REVERT:
        source = session.scalar(
            select(WorkflowVersion).where(
                WorkflowVersion.workflow_id == workflow.id,
                WorkflowVersion.tenant_id == row.tenant_id,
                WorkflowVersion.version == changes["version"],
            )
        )
        if source is None:
            raise Conflict(f"version {changes['version']} no longer exists")
        document = copy.deepcopy(source.definition)
    else:
        current = store.get_version(session, workflow)
        document = copy.deepcopy(current.definition)
        node_id = str(changes.get("node_id"))
        if resolution["action"] == resolutions.RAISE_TIMEOUT:
            node = next((n for n in document.get("nodes", []) if n.get("id") == node_id), None)
            if node is None:
                raise Conflict(f"the workflow no longer has step {node_id!r}")
            node["timeout"] = changes["timeout"]
        elif not _set_at(document, node_id, changes["location"], changes["template"]):
            raise Conflict(f"{changes['location']} is no longer in the workflow")
    _, version = store.update_workflow(session, row.tenant_id, workflow.id, document)
    return version.version


def view(row: TroubleshootingSession) -> dict[str, Any]:
    """A session as the API shows it."""
    return {
        "id": str(row.id),
        "workflow_id": str(row.workflow_id),
        "execution_id": str(row.execution_id) if row.execution_id else None,
        "status": row.status,
        "origin": row.origin,
        "auto_resolve": row.auto_resolve,
        "summary": row.summary,
        "issues": row.issues,
        "logs": row.logs,
        "decisions": row.decisions,
        "auto_retries": row.auto_retries,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
        "resolved_at": row.resolved_at.isoformat() if row.resolved_at else None,
    }
