"""Schedules: PostgreSQL is the record, RedBeat the alarm clock, the sweeper the safety net.

- A schedule is a 5-field ``cron`` in an IANA ``timezone`` (DST-aware, via croniter), or
  ``interval_seconds`` (sub-minute allowed) counted from the schedule's ``anchor``.
- Each enabled schedule has a RedBeat entry (:class:`ScheduleEntry`) that the API writes on
  every change, so the running beat follows without a restart. Beat sends ``fire`` with the
  *due time* of the slot, not the time it happened to run.
- ``fire`` records ``(schedule, fire_time)`` under a unique constraint before it starts
  anything: two beats, a redelivered message or a beat restarted at the wrong moment cannot
  start a fire twice.
- The sweeper (a maintenance task) walks every slot up to ``now - grace`` that has no
  record: a recent one is fired late (a beat that died between rescheduling and sending, a
  flushed Redis); an older one (downtime) is ``missed``, or run oldest first up to
  ``max_catchup`` when ``catchup`` is on. It also rebuilds missing RedBeat entries.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery import Celery
from celery.schedules import schedstate
from celery.schedules import schedule as every
from croniter import CroniterBadDateError, croniter
from redbeat.schedulers import RedBeatSchedulerEntry, ensure_conf, get_redis
from sqlalchemy import Select, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from atom import clock
from atom.celery_app import FIRE_SCHEDULE, MAINTENANCE_QUEUE
from atom.errors import InvalidInput, NotFound, Problem
from atom.runs import engine
from atom.store import workflows
from atom.store.db import transaction
from atom.store.models import Execution, Schedule, ScheduleFire, WorkflowVersion

logger = logging.getLogger(__name__)

ENTRY_PREFIX = "schedule:"
OVERLAP = ("skip", "allow")
MAX_SLOTS_PER_SWEEP = 1000


# ---------------------------------------------------------------------------------------------
# Time: pure functions


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: cron in a timezone, or every interval from an anchor."""

    cron: str | None
    interval_seconds: int | None
    timezone: str
    anchor: datetime

    def slots_after(self, after: datetime) -> Iterator[datetime]:
        """Fire times strictly after ``after``, in order (aware datetimes, local offset)."""
        if self.interval_seconds:
            step = timedelta(seconds=self.interval_seconds)
            k = max(0, int((after - self.anchor) // step) + 1)
            while True:
                slot = self.anchor + k * step
                if slot > after:
                    yield slot
                k += 1
            return
        zone = ZoneInfo(self.timezone)
        it = croniter(self.cron, after.astimezone(zone))
        fixed_hours = str(self.cron).split()[1] != "*"
        last_wall: datetime | None = None
        while True:
            slot = it.get_next(datetime)
            wall = slot.replace(tzinfo=None)
            # When clocks fall back, an hour repeats: a job at a fixed hour runs once in it
            # (as cron does); a job that runs every hour runs in both.
            if fixed_hours and last_wall is not None and wall <= last_wall:
                continue
            last_wall = wall
            yield slot

    def next_runs(self, after: datetime, count: int = 5) -> list[datetime]:
        """The next ``count`` fire times after ``after``."""
        out = []
        for slot in self.slots_after(after):
            out.append(slot)
            if len(out) == count:
                return out
        return out  # pragma: no cover - generators above are endless

    def slots_between(
        self, start: datetime, end: datetime, limit: int = MAX_SLOTS_PER_SWEEP
    ) -> list[datetime]:
        """Fire times in ``(start, end]``, at most ``limit``."""
        out: list[datetime] = []
        for slot in self.slots_after(start):
            if slot > end or len(out) >= limit:
                return out
            out.append(slot)
        return out  # pragma: no cover

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last fire time at or before ``moment`` (looking back at most a year)."""
        if self.interval_seconds:
            if moment < self.anchor:
                return None
            step = timedelta(seconds=self.interval_seconds)
            return self.anchor + int((moment - self.anchor) // step) * step
        slots = self.slots_between(moment - timedelta(days=366), moment, limit=10**6)
        return slots[-1] if slots else None


def describe(cron: str | None, interval_seconds: int | None, timezone: str) -> str:
    """Human text for a schedule, e.g. 'At 09:00 AM, Monday through Friday (Europe/Berlin)'."""
    if interval_seconds:
        return f"Every {interval_seconds} second{'s' if interval_seconds != 1 else ''}"
    from cron_descriptor import get_description

    return f"{get_description(cron)} ({timezone})"


def check_timing(cron: Any, interval_seconds: Any, timezone: Any) -> list[Problem]:
    """Every problem with a schedule's timing fields."""
    problems = []
    if (cron is None) == (interval_seconds is None):
        problems.append(Problem("cron", "give exactly one of cron and interval_seconds"))
    if cron is not None:
        if not isinstance(cron, str) or len(cron) > 120 or len(cron.split()) != 5:
            problems.append(
                Problem(
                    "cron",
                    "must have 5 fields: minute hour day-of-month "
                    "month day-of-week, e.g. '*/15 9-17 * * 1-5'",
                )
            )
        elif not croniter.is_valid(cron):
            problems.append(
                Problem(
                    "cron",
                    f"{cron!r} is not a valid cron expression "
                    "(a field is out of range or malformed)",
                )
            )
        else:
            try:
                croniter(cron, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
            except CroniterBadDateError:
                problems.append(
                    Problem("cron", f"{cron!r} never fires (no such date, such as 30 February)")
                )
    if interval_seconds is not None and (
        not isinstance(interval_seconds, int)
        or isinstance(interval_seconds, bool)
        or not 1 <= interval_seconds <= 366 * 86400
    ):
        problems.append(
            Problem("interval_seconds", "must be a whole number of seconds from 1 to 31622400")
        )
    if not isinstance(timezone, str):
        problems.append(
            Problem("timezone", "must be an IANA time zone name such as 'Europe/Berlin'")
        )
    else:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(
                Problem(
                    "timezone",
                    f"{timezone!r} is not an IANA time zone name "
                    "(such as 'UTC' or 'America/New_York')",
                )
            )
    return problems


def timing_of(schedule: Schedule) -> Timing:
    """The Timing of a stored schedule."""
    return Timing(schedule.cron, schedule.interval_seconds, schedule.timezone, schedule.anchor)


# ---------------------------------------------------------------------------------------------
# The RedBeat entry


class ScheduleEntry(RedBeatSchedulerEntry):
    """A RedBeat entry whose due time comes from the schedule's Timing (croniter + timezone).

    RedBeat can only store Celery's own schedule types, and ``crontab`` knows one timezone
    per app; the timing travels in the entry's kwargs instead and this class computes due
    times from it. The ``schedule`` stored is a placeholder that RedBeat can serialize. An
    entry without timing kwargs (the platform's static jobs) behaves as RedBeat's own.
    """

    @property
    def timing(self) -> Timing | None:
        """The schedule's timing, when this entry is an ATOM schedule."""
        spec = (self.kwargs or {}).get("timing")
        if not spec:
            return None
        return Timing(
            spec.get("cron"),
            spec.get("interval_seconds"),
            spec["timezone"],
            datetime.fromisoformat(spec["anchor"]),
        )

    def _due(self) -> datetime:
        timing = self.timing
        assert timing is not None
        now = datetime.now(UTC)
        start = self.last_run_at or now
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        # After a long downtime, do not replay every old slot: the sweeper accounts for
        # slots older than the misfire grace (missed, or caught up by policy).
        horizon = now - timedelta(seconds=self.kwargs.get("misfire_grace", 60))
        return next(timing.slots_after(max(start, horizon)))

    @property
    def due_at(self):  # see class docstring
        if self.timing is None:
            return super().due_at
        return self._due()

    def is_due(self):
        """Due when the next slot after the last one fired has come."""
        if self.timing is None:
            return super().is_due()
        now = datetime.now(UTC)
        due = self._due()
        if due <= now:
            following = next(self.timing.slots_after(max(due, now)))
            return schedstate(True, max(0.0, (following - now).total_seconds()))
        return schedstate(False, (due - now).total_seconds())

    def _next_instance(self, last_run_at=None, only_update_last_run_at=False):
        """Advance to the slot that just fired (not to 'now'), so no slot is skipped."""
        if self.timing is not None and last_run_at is None:
            last_run_at = self._due()
        return super()._next_instance(
            last_run_at=last_run_at, only_update_last_run_at=only_update_last_run_at
        )

    __next__ = next = _next_instance


def entry_name(schedule_id: uuid.UUID | str) -> str:
    """The RedBeat entry name of a schedule."""
    return f"{ENTRY_PREFIX}{schedule_id}"


def _entry(app: Celery, schedule: Schedule, misfire_grace: float) -> ScheduleEntry:
    timing = {
        "cron": schedule.cron,
        "interval_seconds": schedule.interval_seconds,
        "timezone": schedule.timezone,
        "anchor": schedule.anchor.isoformat(),
    }
    return ScheduleEntry(
        entry_name(schedule.id),
        FIRE_SCHEDULE,
        every(timedelta(seconds=schedule.interval_seconds or 60)),
        args=[str(schedule.id)],
        kwargs={"timing": timing, "misfire_grace": misfire_grace},
        options={"queue": MAINTENANCE_QUEUE},
        app=app,
    )


def resume_point(session: Session, schedule: Schedule) -> datetime:
    """Where beat's entry should resume: after the last recorded fire, or the sweeper's mark.

    Starting from 'now' instead would leave a slot that falls between the last fire (or the
    schedule's creation) and the entry's write to the sweeper, seconds late.
    """
    last = session.scalar(
        select(func.max(ScheduleFire.fire_time)).where(ScheduleFire.schedule_id == schedule.id)
    )
    return max(filter(None, (last, schedule.checked_until)))


def put_entry(
    app: Celery, schedule: Schedule, misfire_grace: float = 60.0, last_fired: datetime | None = None
) -> None:
    """Create or replace the schedule's RedBeat entry (delete it when disabled).

    The next fire is the first slot after ``last_fired`` (a restored entry resumes where the
    record says it stopped), else the first slot from now on.
    """
    if not schedule.enabled:
        delete_entry(app, schedule.id)
        return
    entry = _entry(app, schedule, misfire_grace)
    entry.save()
    entry.reschedule(last_run_at=last_fired or datetime.now(UTC))


def delete_entry(app: Celery, schedule_id: uuid.UUID) -> None:
    """Remove the schedule's RedBeat entry, if any."""
    ScheduleEntry(entry_name(schedule_id), app=app).delete()


def sync_entries(session: Session, app: Celery, misfire_grace: float = 60.0) -> int:
    """Rebuild RedBeat entries from PostgreSQL: create missing ones, drop orphans."""
    ensure_conf(app)
    client = get_redis(app)
    wanted = {
        entry_name(s.id): s
        for s in session.scalars(select(Schedule).where(Schedule.enabled.is_(True)))
    }
    key = ScheduleEntry.generate_key
    present = {name for name in wanted if client.exists(key(app, name))}
    for name, schedule in wanted.items():
        if name not in present:  # lost (a flushed Redis) or never written: resume the record
            try:
                put_entry(app, schedule, misfire_grace, resume_point(session, schedule))
            except Exception:  # one bad schedule must not stop the others
                logger.exception("schedule %s: could not restore its entry", schedule.id)
    prefix = key(app, ENTRY_PREFIX)
    for raw in client.scan_iter(match=prefix + "*"):
        name = (raw.decode() if isinstance(raw, bytes) else raw)[len(key(app, "")) :]
        if name not in wanted:
            ScheduleEntry(name, app=app).delete()
    return len(wanted) - len(present)


# ---------------------------------------------------------------------------------------------
# Firing


@dataclass(frozen=True)
class Fired:
    """What one fire did: the execution to send, if it started one."""

    status: str
    execution: Execution | None = None


def _active_run(session: Session, schedule: Schedule) -> uuid.UUID | None:
    return session.scalar(
        select(Execution.id)
        .where(
            Execution.tenant_id == schedule.tenant_id,
            Execution.workflow_id == schedule.workflow_id,
            Execution.status.in_(["queued", "running", "paused"]),
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
) -> Fired:
    """Record one fire time (once: unique per schedule and time) and start its run."""
    inserted = session.execute(
        insert(ScheduleFire)
        .values(
            tenant_id=schedule.tenant_id,
            schedule_id=schedule.id,
            fire_time=fire_time,
            status="pending",
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
        fire.status, fire.reason = "missed", missed_reason
        return Fired("missed")
    if schedule.overlap == "skip" and (running := _active_run(session, schedule)):
        fire.status, fire.reason = "skipped", f"overlap skip: execution {running} still running"
        return Fired("skipped")
    try:
        workflow = workflows.get_workflow(session, schedule.tenant_id, schedule.workflow_id)
    except NotFound:
        fire.status, fire.reason = "failed", "the workflow was deleted"
        return Fired("failed")
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
    fire.status, fire.execution_id = "started", execution.id
    if source != "beat":
        fire.reason = f"started by the {source}"
    return Fired("started", execution)


def fire(
    factory: sessionmaker[Session],
    app: Celery,
    schedule_id: str,
    fire_time: datetime,
    misfire_grace: float,
    source: str = "beat",
) -> str:
    """Handle one fire sent by beat: record it and send the run it started.

    A slot older than ``misfire_grace`` (beat was down) is left to the sweeper, which
    applies the schedule's catchup policy to it.
    """
    from atom.runs import dispatch

    if datetime.now(UTC) - fire_time > timedelta(seconds=misfire_grace):
        return "left to the sweeper"
    with transaction(factory) as session:
        schedule = session.scalar(
            select(Schedule).where(Schedule.id == uuid.UUID(schedule_id)).with_for_update()
        )
        if schedule is None or not schedule.enabled:
            return "disabled"
        fired = record_fire(session, schedule, fire_time, source)
        plan, version_doc = {}, None  # set below whenever a run is sent
        if fired.execution is not None:
            version = session.get(WorkflowVersion, fired.execution.version_id)
            assert version is not None
            plan, version_doc = version.plan, version.definition
    if fired.execution is not None:
        from atom.workflow.definition import parse_definition

        dispatch.send(
            app, plan, parse_definition(version_doc), str(fired.execution.id), fired.execution.epoch
        )
    return fired.status


def sweep(
    factory: sessionmaker[Session],
    app: Celery,
    *,
    grace: float,
    misfire_grace: float,
    now: datetime | None = None,
) -> dict[str, int]:
    """Account for every slot up to ``now - grace``: fire late, catch up, or record missed."""
    now = now or datetime.now(UTC)
    horizon = now - timedelta(seconds=grace)
    counts = {"late": 0, "catchup": 0, "missed": 0}
    with transaction(factory) as session:
        if not session.scalar(text("SELECT pg_try_advisory_xact_lock(742004)")):
            return counts
        ids = list(
            session.scalars(
                select(Schedule.id).where(
                    Schedule.enabled.is_(True), Schedule.checked_until < horizon
                )
            )
        )
    for schedule_id in ids:
        try:
            _sweep_one(factory, app, schedule_id, now, horizon, misfire_grace, counts)
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
) -> None:
    """One schedule's share of a sweep, in its own transaction."""
    from atom.runs import dispatch
    from atom.workflow.definition import parse_definition

    to_send = []
    with transaction(factory) as session:
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
                session, schedule, slot, "catchup" if slot in caught_up else "sweeper"
            )
            counts["catchup" if slot in caught_up else "late"] += 1
            if fired.execution is not None:
                version = session.get(WorkflowVersion, fired.execution.version_id)
                to_send.append((fired.execution, version.plan, version.definition))  # type: ignore[union-attr]
        schedule.checked_until = slots[-1] if len(slots) == MAX_SLOTS_PER_SWEEP else horizon
    for execution, plan, document in to_send:
        dispatch.send(app, plan, parse_definition(document), str(execution.id), execution.epoch)


def sync_entries_safely(
    factory: sessionmaker[Session], app: Celery, misfire_grace: float = 60.0
) -> None:
    """sync_entries, logging instead of raising (Redis may be failing over)."""
    try:
        with transaction(factory) as session:
            restored = sync_entries(session, app, misfire_grace)
        if restored:
            logger.warning("restored %d RedBeat schedule entries from PostgreSQL", restored)
    except Exception:  # the sweeper must go on; the next pass retries
        logger.exception("could not sync RedBeat entries")


# ---------------------------------------------------------------------------------------------
# CRUD (tenant-scoped)

FIELDS = (
    "cron",
    "interval_seconds",
    "timezone",
    "input",
    "enabled",
    "overlap",
    "catchup",
    "max_catchup",
)


def _check(values: dict[str, Any]) -> list[Problem]:
    problems = check_timing(
        values.get("cron"), values.get("interval_seconds"), values.get("timezone", "UTC")
    )
    if values.get("overlap", "skip") not in OVERLAP:
        problems.append(Problem("overlap", "must be skip or allow"))
    max_catchup = values.get("max_catchup", 10)
    if (
        not isinstance(max_catchup, int)
        or isinstance(max_catchup, bool)
        or not 0 <= max_catchup <= 1000
    ):
        problems.append(Problem("max_catchup", "must be a whole number from 0 to 1000"))
    return problems


def create_schedule(session: Session, tenant_id: uuid.UUID, values: dict[str, Any]) -> Schedule:
    """Validate and store a schedule (its RedBeat entry is the caller's next step)."""
    problems = _check(values)
    try:
        workflows.get_workflow(session, tenant_id, values["workflow_id"])
    except NotFound:
        problems.append(Problem("workflow_id", f"no workflow {values['workflow_id']} here"))
    if problems:
        raise InvalidInput(problems)
    stamp = clock.now()
    schedule = Schedule(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        workflow_id=values["workflow_id"],
        anchor=stamp.replace(microsecond=0),
        checked_until=stamp,
        **{k: values[k] for k in FIELDS if k in values},
    )
    session.add(schedule)
    session.flush()
    return schedule


def list_query(tenant_id: uuid.UUID, workflow_id: uuid.UUID | None = None) -> Select:
    """The tenant's schedules, newest first."""
    query = select(Schedule).where(Schedule.tenant_id == tenant_id)
    if workflow_id:
        query = query.where(Schedule.workflow_id == workflow_id)
    return query.order_by(Schedule.created_at.desc(), Schedule.id)


def get_schedule(
    session: Session, tenant_id: uuid.UUID, schedule_id: uuid.UUID, *, for_update: bool = False
) -> Schedule:
    """The tenant's schedule, or NotFound."""
    query = select(Schedule).where(Schedule.id == schedule_id, Schedule.tenant_id == tenant_id)
    schedule = session.scalar(query.with_for_update() if for_update else query)
    if schedule is None:
        raise NotFound(f"schedule {schedule_id} not found")
    return schedule


def update_schedule(
    session: Session, tenant_id: uuid.UUID, schedule_id: uuid.UUID, changes: dict[str, Any]
) -> Schedule:
    """Apply a PATCH; a change of timing or a re-enable starts counting from now."""
    schedule = get_schedule(session, tenant_id, schedule_id, for_update=True)
    merged = {k: getattr(schedule, k) for k in FIELDS}
    if "cron" in changes and changes["cron"] is not None:
        merged["interval_seconds"] = None
    if "interval_seconds" in changes and changes["interval_seconds"] is not None:
        merged["cron"] = None
    merged.update(changes)
    if problems := _check(merged):
        raise InvalidInput(problems)
    timing_changed = any(
        merged[k] != getattr(schedule, k) for k in ("cron", "interval_seconds", "timezone")
    )
    re_enabled = merged["enabled"] and not schedule.enabled
    for key in FIELDS:
        setattr(schedule, key, merged[key])
    stamp = clock.now()
    if timing_changed or re_enabled:
        schedule.checked_until = max(stamp, schedule.checked_until)
        if timing_changed:
            schedule.anchor = stamp.replace(microsecond=0)
    schedule.updated_at = stamp
    session.flush()
    return schedule


def fires_query(schedule: Schedule) -> Select:
    """The schedule's fires, newest first."""
    return (
        select(ScheduleFire)
        .where(
            ScheduleFire.schedule_id == schedule.id, ScheduleFire.tenant_id == schedule.tenant_id
        )
        .order_by(ScheduleFire.fire_time.desc())
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def schedule_view(schedule: Schedule, now: datetime | None = None) -> dict[str, Any]:
    """A schedule as the API shows it, with its description and next five fire times."""
    timing = timing_of(schedule)
    upcoming = timing.next_runs(now or clock.now()) if schedule.enabled else []
    zone = ZoneInfo(schedule.timezone)
    return {
        "id": str(schedule.id),
        "workflow_id": str(schedule.workflow_id),
        "cron": schedule.cron,
        "interval_seconds": schedule.interval_seconds,
        "timezone": schedule.timezone,
        "input": schedule.input,
        "enabled": schedule.enabled,
        "overlap": schedule.overlap,
        "catchup": schedule.catchup,
        "max_catchup": schedule.max_catchup,
        "description": describe(schedule.cron, schedule.interval_seconds, schedule.timezone),
        "next_runs": [slot.astimezone(zone).isoformat() for slot in upcoming],
        "created_at": _iso(schedule.created_at),
        "updated_at": _iso(schedule.updated_at),
    }


def fire_view(fire: ScheduleFire) -> dict[str, Any]:
    """A fire as the API shows it."""
    return {
        "fire_time": _iso(fire.fire_time),
        "status": fire.status,
        "reason": fire.reason,
        "source": fire.source,
        "execution_id": str(fire.execution_id) if fire.execution_id else None,
        "recorded_at": _iso(fire.created_at),
    }
