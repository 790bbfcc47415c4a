"""Firing: ``fire`` records ``(schedule, fire_time)`` under a unique constraint before it starts
anything, then sends the run; the sweeper accounts for every slot beat did not fire (late,
missed, or caught up by policy)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from celery import Celery
from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from atom.clock import db_now
from atom.errors import NotFound
from atom.runs import dispatch, engine, parallel_limit
from atom.schedules.entry import sync_entries_safely
from atom.schedules.timing import MAX_SLOTS_PER_SWEEP, timing_of
from atom.statuses import ACTIVE_EXECUTION, FireStatus
from atom.store import workflows
from atom.store.models import Execution, Schedule, ScheduleFire

logger = logging.getLogger(__name__)


Saturation = Callable[[], str | None]
"""Why the step queue is too full to start a run now (None: it is not): backpressure."""


def saturation(backlog: Callable[[], int | None], limit: int) -> Saturation:
    """A :data:`Saturation` check: over ``limit`` (``ATOM_MAX_QUEUE_DEPTH``; 0: never) step
    messages waiting in the broker, as ``backlog()`` counts them."""

    def check() -> str | None:
        waiting = backlog() if limit else None
        if waiting is None or waiting < limit:
            return None
        return (
            f"backpressure: {waiting} steps were waiting for a worker "
            f"(ATOM_MAX_QUEUE_DEPTH is {limit}); this fire started no run"
        )

    return check


def _never() -> str | None:
    return None


class TooEarly(Exception):
    """A fire arrived before its slot by the database's clock (the clock of the beat that
    sent it runs ahead): send it again in ``seconds``."""

    def __init__(self, seconds: float):
        super().__init__(f"fire {seconds:.3f} s before its time")
        self.seconds = seconds


@dataclass(frozen=True)
class Fired:
    """What one fire did: the execution to send, if it started one."""

    status: str
    """A FireStatus, or "duplicate" when the time was already recorded."""
    execution: Execution | None = None


def _active_run(session: Session, schedule: Schedule) -> uuid.UUID | None:
    return session.scalar(
        select(Execution.id)
        .where(
            Execution.tenant_id == schedule.tenant_id,
            Execution.workflow_id == schedule.workflow_id,
            Execution.status.in_(ACTIVE_EXECUTION),
            Execution.trigger["schedule_id"].as_string() == str(schedule.id),
        )
        .limit(1)
    )


def record_fire(
    session: Session,
    schedule: Schedule,
    fire_time: datetime,
    source: str,
    *,
    missed_reason: str | None = None,
    saturated: str | None = None,
) -> Fired:
    """Record one fire time (once: unique per schedule and time) and start its run; with
    ``saturated`` (the broker's step queue is over its limit), record it skipped instead."""
    inserted = session.execute(
        insert(ScheduleFire)
        .values(
            tenant_id=schedule.tenant_id,
            schedule_id=schedule.id,
            fire_time=fire_time,
            status=FireStatus.PENDING,
            source=source,
        )
        .on_conflict_do_nothing(constraint="uq_schedule_fires_schedule_time")
        .returning(ScheduleFire.id)
    ).scalar()
    if inserted is None:
        return Fired("duplicate")
    fire = session.get(ScheduleFire, inserted)
    assert fire is not None
    if missed_reason:
        fire.status, fire.reason = FireStatus.MISSED, missed_reason
        return Fired(FireStatus.MISSED)
    if saturated:
        fire.status, fire.reason = FireStatus.SKIPPED, saturated
        return Fired(FireStatus.SKIPPED)
    if schedule.overlap == "skip" and (running := _active_run(session, schedule)):
        fire.status, fire.reason = (
            FireStatus.SKIPPED,
            f"overlap skip: execution {running} still running",
        )
        return Fired(FireStatus.SKIPPED)
    try:
        workflow = workflows.get_workflow(session, schedule.tenant_id, schedule.workflow_id)
    except NotFound:
        fire.status, fire.reason = FireStatus.FAILED, "the workflow was deleted"
        return Fired(FireStatus.FAILED)
    version = workflows.get_version(session, workflow)
    execution = engine.create_execution(
        session,
        workflow,
        version,
        schedule.input,
        {
            "kind": "schedule",
            "schedule_id": str(schedule.id),
            "fire_time": fire_time.astimezone(UTC).isoformat(),
        },
    )
    fire.status, fire.execution_id = FireStatus.STARTED, execution.id
    if source != "beat":
        fire.reason = f"started by the {source}"
    return Fired(FireStatus.STARTED, execution)


def fire(
    factory: sessionmaker[Session],
    app: Celery,
    schedule_id: str,
    fire_time: datetime,
    misfire_grace: float,
    source: str = "beat",
    saturated: Saturation = _never,
) -> str:
    """Handle one fire sent by beat: record it and send the run it started.

    A slot older than ``misfire_grace`` (beat was down) is left to the sweeper, which
    applies the schedule's catchup policy to it. While the broker's step queue is over
    ``ATOM_MAX_QUEUE_DEPTH`` (``saturated``), the fire is recorded ``skipped`` with the
    reason and starts nothing: a schedule never floods a saturated broker. A fire that
    arrives before its slot by the database's clock raises :class:`TooEarly`.
    """
    with dispatch.record_then_send(factory, app) as (session, outbox):
        # The database's clock decides, not this worker's or beat's: the transaction's
        # time is also the run's created_at, so a run never starts before its slot.
        at = session.execute(select(func.now())).scalar_one().astimezone(UTC)
        if fire_time > at:
            raise TooEarly((fire_time - at).total_seconds())
        if at - fire_time > timedelta(seconds=misfire_grace):
            return "left to the sweeper"
        schedule = session.scalar(
            select(Schedule).where(Schedule.id == uuid.UUID(schedule_id)).with_for_update()
        )
        if schedule is None or not schedule.enabled:
            return "disabled"
        fired = record_fire(session, schedule, fire_time, source, saturated=saturated())
        if fired.execution is not None:
            parallel_limit.send_or_wait(
                session, outbox, fired.execution, parallel_limit.limit_of(app)
            )
    return fired.status


def sweep(
    factory: sessionmaker[Session],
    app: Celery,
    *,
    grace: float,
    misfire_grace: float,
    now: datetime | None = None,
    saturated: Saturation = _never,
) -> dict[str, int]:
    """Account for every slot up to ``now - grace``: fire late, catch up, or record missed
    (or skipped, while the broker is saturated: see ``fire``)."""
    counts = {"late": 0, "catchup": 0, "missed": 0}
    with factory.begin() as session:
        if not session.scalar(text("SELECT pg_try_advisory_xact_lock(742004)")):
            return counts
        now = now or db_now(session)  # the database's clock: a skewed worker fires no slot early
        horizon = now - timedelta(seconds=grace)
        ids = list(
            session.scalars(
                select(Schedule.id).where(
                    Schedule.enabled.is_(True), Schedule.checked_until < horizon
                )
            )
        )
    for schedule_id in ids:
        try:
            _sweep_one(factory, app, schedule_id, now, horizon, misfire_grace, counts, saturated)
        except Exception:  # one bad schedule must not stop the others
            logger.exception("schedule %s: sweep failed; the next pass tries again", schedule_id)
    sync_entries_safely(factory, app, misfire_grace)
    return counts


def _sweep_one(
    factory: sessionmaker[Session],
    app: Celery,
    schedule_id: uuid.UUID,
    now: datetime,
    horizon: datetime,
    misfire_grace: float,
    counts: dict[str, int],
    saturated: Saturation = _never,
) -> None:
    """One schedule's share of a sweep, in its own transaction."""
    with dispatch.record_then_send(factory, app) as (session, outbox):
        schedule = session.scalar(
            select(Schedule).where(Schedule.id == schedule_id).with_for_update(skip_locked=True)
        )
        if schedule is None or not schedule.enabled:
            return
        slots = timing_of(schedule).slots_between(schedule.checked_until, horizon)
        recorded = set(
            session.scalars(
                select(ScheduleFire.fire_time).where(
                    ScheduleFire.schedule_id == schedule.id, ScheduleFire.fire_time.in_(slots)
                )
            )
        )
        stale = [
            s for s in slots if s not in recorded and s < now - timedelta(seconds=misfire_grace)
        ]
        caught_up = set(stale[: schedule.max_catchup]) if schedule.catchup else set()
        for slot in slots:
            if slot in recorded:
                continue
            if slot in stale and slot not in caught_up:
                record_fire(
                    session,
                    schedule,
                    slot,
                    "sweeper",
                    missed_reason=(
                        "missed while the scheduler was down (catchup is off)"
                        if not schedule.catchup
                        else f"missed: more than max_catchup={schedule.max_catchup} to catch up"
                    ),
                )
                counts["missed"] += 1
                continue
            fired = record_fire(
                session,
                schedule,
                slot,
                "catchup" if slot in caught_up else "sweeper",
                saturated=saturated(),
            )
            counts["catchup" if slot in caught_up else "late"] += 1
            if fired.execution is not None:
                parallel_limit.send_or_wait(
                    session, outbox, fired.execution, parallel_limit.limit_of(app)
                )
        schedule.checked_until = slots[-1] if len(slots) == MAX_SLOTS_PER_SWEEP else horizon
