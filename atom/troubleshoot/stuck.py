"""Stuck runs: what the reconciler finds, explained and recorded as troubleshooting sessions.

The reconciler (``atom.runs.recovery``) heals: it re-drives a run that made no progress and
has no message in the broker, and leaves alone one whose message still waits there. This
module explains and records, and never acts on the run itself, so the two never disagree:

- ``redrive``: the run is about to be re-driven. A step whose heartbeat stopped lost its
  worker (category ``worker_lost``, at that step); without one, the message that carried
  the run was lost (a broker restart, a process that died between commit and send), unless
  a live worker holds it reserved (prefetched behind busy processes: a backlog, nothing is
  recorded). The session records the reconciler's re-drive as an automatic resolution
  already applied.
- ``waiting``: the run's message waits in the broker. When a worker consumes every queue
  the run needs, it is a backlog, not a fault, and nothing is recorded. When no worker
  consumes the queue of a step that is ready to run, the session says so (``worker_lost``:
  no worker for queue ``q``); the safe resolution is to wait for one, which the broker
  does by itself.

Both are bounded: a session ends ``needs_attention`` (and notifies) after
``ATOM_TROUBLESHOOT_MAX_RETRIES`` re-drives, or after ``ATOM_TROUBLESHOOT_MAX_WAIT``
seconds without a worker. A run that then ends ``succeeded`` resolves its session
("resolved automatically"); one that fails is diagnosed again like any failed run.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import flag_modified

from atom.celery_app import STEPS_QUEUE
from atom.clock import db_now, now
from atom.config import Settings
from atom.runs import engine, recovery
from atom.statuses import ExecutionStatus, StepStatus
from atom.store.models import Execution, TroubleshootingSession
from atom.troubleshoot import gather, resolutions, sessions
from atom.troubleshoot.categories import Category
from atom.troubleshoot.diagnose import Issue, diagnose, history_evidence
from atom.workflow.definition import Definition, NodeType

logger = logging.getLogger(__name__)

REDRIVE, WAITING = "redrive", "waiting"
WAIT_FOR_WORKER = "wait_for_worker"
ORIGIN = sessions.RECONCILER
ACTIVE = (ExecutionStatus.QUEUED.value, ExecutionStatus.RUNNING.value)


def consumed_queues(app: Celery, timeout: float = 1.0) -> set[str] | None:
    """The queues some live worker consumes (None when no worker answered at all: the
    reconciler itself runs on one, so silence means the broadcast failed, not "none")."""
    try:
        answer = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # the broker hiccupped: decide nothing on a guess
        logger.warning("reconcile: could not ask the workers for their queues", exc_info=True)
        return None
    if not answer:
        return None
    return {q.get("name") for queues in answer.values() for q in queues or [] if q.get("name")}


def held_ids(app: Celery, timeout: float = 1.0) -> str | None:
    """The tasks live workers hold (reserved behind busy processes, or just started), as one
    text to look execution ids up in; None when nobody answered."""
    try:
        inspect = app.control.inspect(timeout=timeout)
        answers = [inspect.reserved() or {}, inspect.active() or {}]
    except Exception:
        logger.warning("reconcile: could not ask the workers what they hold", exc_info=True)
        return None
    if not any(answers):
        return None
    return " ".join(
        str(task.get("args")) for answer in answers for tasks in answer.values() for task in tasks
    )


def _ready(definition: Definition, steps: dict[str, Any]) -> list[str]:
    """Nodes not yet done whose predecessors have all ended: where a run waits."""
    done = {StepStatus.SUCCEEDED.value, StepStatus.SKIPPED.value}
    preds: dict[str, list[str]] = {}
    for c in definition.connections:
        preds.setdefault(c.target, []).append(c.source)
    ready = []
    for node in definition.nodes:
        if node.type is NodeType.TRIGGER:
            continue
        step = steps.get(node.id)
        if step is not None and step.status != StepStatus.PENDING.value:
            continue
        if all(
            (s := steps.get(p)) is not None and s.status in done for p in preds.get(node.id, [])
        ):
            ready.append(node.id)
    return ready


class Explainer:
    """One reconciliation pass's explanations (asks the workers for their queues at most
    once per pass, and only when a run waits in the broker)."""

    def __init__(self, factory: sessionmaker[Session], app: Celery, settings: Settings):
        self.factory, self.app, self.settings = factory, app, settings
        self._queues: set[str] | None = None
        self._asked = False
        self._reserved: str | None = None

    def reserved(self) -> str | None:
        """What the workers hold, asked once."""
        if self._reserved is None:
            self._reserved = held_ids(self.app) or ""
        return self._reserved

    def queues(self) -> set[str] | None:
        """The queues live workers consume, asked once."""
        if not self._asked:
            self._asked = True
            self._queues = consumed_queues(self.app)
        return self._queues

    def __call__(self, execution_id: uuid.UUID, finding: str) -> None:
        with self.factory.begin() as session:
            session.info[sessions.SETTINGS] = self.settings
            explain(session, execution_id, finding, self.settings, self.queues, self.reserved)


def explain(
    session: Session,
    execution_id: uuid.UUID,
    finding: str,
    settings: Settings,
    queues: Any = None,
    reserved: Any = None,
) -> TroubleshootingSession | None:
    """Record the reconciler's ``finding`` (``redrive`` or ``waiting``) about a stalled run:
    open its session, or add to the one it has; returns the session (None: nothing to say)."""
    execution = session.scalar(
        select(Execution).where(Execution.id == execution_id).with_for_update(skip_locked=True)
    )
    if execution is None or execution.status not in ACTIVE:
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
    if row is not None and row.status != sessions.OPEN:
        if row.origin == ORIGIN and row.status == sessions.NEEDS_ATTENTION:
            return None  # told already; the reconciler carries on healing by itself
        row = None  # an earlier, ended session (a failure before a retry): a new one
    if finding == WAITING:
        return _waiting(session, execution, row, settings, queues)
    return _redrive(session, execution, row, settings, reserved)


def _context_issue(session: Session, execution: Execution, settings: Settings):
    ctx = gather.context(session, execution, heartbeat_timeout=settings.heartbeat_timeout)
    found = [i for i in diagnose(ctx).issues if i.category is Category.WORKER_LOST]
    return ctx, found


def _open(
    session: Session, execution: Execution, issue: Issue, resolution: dict[str, Any], summary: str
) -> TroubleshootingSession:
    entry = issue.as_dict()
    entry["resolution"] = resolution
    row = TroubleshootingSession(
        id=uuid.uuid4(),
        tenant_id=execution.tenant_id,
        workflow_id=execution.workflow_id,
        execution_id=execution.id,
        status=sessions.OPEN,
        origin=ORIGIN,
        auto_resolve=True,
        issues=[entry],
        logs=[],
        decisions=[],
        auto_retries=0,
        summary=summary,
    )
    session.add(row)
    sessions._decide(
        row,
        "diagnosed",
        execution_id=str(execution.id),
        execution_status=execution.status,
        summary=summary,
        log_lines=0,
    )
    session.flush()
    execution.troubleshooting_session_id = row.id
    return row


def _redrive(
    session: Session,
    execution: Execution,
    row: TroubleshootingSession | None,
    settings: Settings,
    reserved: Any = None,
) -> TroubleshootingSession | None:
    if not recovery.still_stalled(settings)(session, execution):
        return None  # it moved on since the reconciler looked: it will not be re-driven
    held = reserved() if callable(reserved) else reserved
    if held and str(execution.id) in held:
        # A live worker holds its message (prefetched behind busy processes, or taken a
        # moment ago): a backlog or a race, not a lost worker. The reconciler's re-send is
        # harmless (the older copy exits) and not worth a finding.
        return None
    redrives = (
        sum(1 for d in row.decisions if d.get("decision") == "retried" and d.get("by") == ORIGIN)
        if row is not None
        else 0
    )
    if row is not None and row.origin != ORIGIN:
        # A session of its own (a retry the troubleshooter sent) stalled: note the re-drive.
        sessions._decide(row, "redriven", by=ORIGIN, epoch=execution.epoch + 1)
        return row
    if (
        row is not None
        and any(d.get("decision") == "waiting_for_worker" for d in row.decisions)
        and not _context_issue(session, execution, settings)[1]
    ):
        # It waited for a worker and one has just taken it (the message left the broker
        # before the step started): the re-send is the reconciler's race, not a lost worker.
        return row
    if row is not None and redrives >= settings.troubleshoot_max_retries:
        sessions._finish(
            session,
            row,
            sessions.NEEDS_ATTENTION,
            f"re-driven {redrives} times and it stalled again: look at the step's worker "
            "(memory, crashes) or the step itself",
        )
        return row
    if row is None:
        ctx, found = _context_issue(session, execution, settings)
        if found:
            issue = found[0]
        else:
            issue = Issue(
                Category.WORKER_LOST,
                _first_ready(ctx.definition, ctx.run.steps),
                True,
                f"execution {execution.id} made no progress for {settings.stall_seconds:g} s "
                "and neither the broker nor a worker holds a message for it: the message was "
                "lost (a broker restart, or a process that died between saving and sending it)",
                0.7,
                [
                    {
                        "kind": "no_progress",
                        "stall_seconds": settings.stall_seconds,
                        "message_in_broker": False,
                    }
                ],
                True,
            )
        if issue.node_id:
            issue.evidence.append(history_evidence(ctx, issue.node_id))
        resolution = {
            "action": resolutions.REDRIVE,
            "automatic": True,
            "applied": False,
            "result": None,
            "description": "the reconciler re-drives the execution (a new epoch): what "
            "succeeded is kept, the lost step runs again with its idempotency key",
        }
        row = _open(
            session, execution, issue, resolution, f"root cause: worker_lost — {issue.summary}"
        )
    resolution = row.issues[0]["resolution"]
    resolution["applied"] = True
    resolution["result"] = f"re-driven by the reconciler ({redrives + 1} time(s))"
    flag_modified(row, "issues")
    sessions._decide(row, "retried", by=ORIGIN, epoch=execution.epoch + 1, redrive=redrives + 1)
    return row


def _first_ready(definition: Definition, steps: dict[str, Any]) -> str | None:
    running = [n for n, s in steps.items() if s.status == StepStatus.RUNNING.value]
    if running:
        return running[0]
    ready = _ready(definition, steps)
    return ready[0] if ready else None


def _waiting(
    session: Session,
    execution: Execution,
    row: TroubleshootingSession | None,
    settings: Settings,
    queues: Any,
) -> TroubleshootingSession | None:
    if row is not None and any(d.get("decision") == "waiting_for_worker" for d in row.decisions):
        first = next(d for d in row.decisions if d.get("decision") == "waiting_for_worker")
        waited = (now() - datetime.fromisoformat(first["at"])).total_seconds()
        if waited > settings.troubleshoot_max_wait:
            queue = first.get("queue")
            sessions._finish(
                session,
                row,
                sessions.NEEDS_ATTENTION,
                f"no worker has taken work from queue {queue!r} for {waited:.0f} s: start one "
                f"(atom worker --queues {queue})",
            )
        return row
    consumed = queues() if callable(queues) else queues
    if consumed is None:
        return None  # nobody answered: decide nothing on a guess
    definition = engine.load_definition(session, execution.version_id)
    steps = {s.node_id: s for s in engine.steps_of(session, execution)}
    unserved = [
        (node_id, definition.node(node_id).queue or STEPS_QUEUE)
        for node_id in _ready(definition, steps)
        if (definition.node(node_id).queue or STEPS_QUEUE) not in consumed
    ]
    if not unserved:
        return None  # a backlog: every queue it needs has a worker
    node_id, queue = unserved[0]
    # updated_at is the database's time: measure on its clock, not this process's.
    waited = (
        (db_now(session) - execution.updated_at).total_seconds() if execution.updated_at else 0.0
    )
    summary = (
        f"step {node_id!r} has waited {waited:.0f} s in queue {queue!r}, and no worker "
        "consumes that queue"
    )
    if row is None:
        issue = Issue(
            Category.WORKER_LOST,
            node_id,
            True,
            summary,
            0.9,
            [
                {
                    "kind": "no_worker",
                    "queue": queue,
                    "waited_s": round(waited, 1),
                    "queues_consumed": sorted(consumed),
                }
            ],
            True,
        )
        resolution = {
            "action": WAIT_FOR_WORKER,
            "automatic": True,
            "applied": True,
            "result": "waiting: the message stays in the broker until a worker takes it",
            "description": f"wait for a worker on queue {queue!r} (start one with "
            f"`atom worker --queues {queue}`); nothing is lost meanwhile",
        }
        row = _open(session, execution, issue, resolution, f"root cause: worker_lost — {summary}")
    sessions._decide(row, "waiting_for_worker", by=ORIGIN, queue=queue, node_id=node_id)
    return row
