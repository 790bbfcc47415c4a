"""The RedBeat entry of a schedule: written by the API on every change, so the running beat
follows without a restart; rebuilt from PostgreSQL when Redis loses it."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from celery import Celery
from celery.schedules import schedstate
from celery.schedules import schedule as every
from redbeat.schedulers import RedBeatSchedulerEntry, ensure_conf, get_redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from atom.celery_app import FIRE_SCHEDULE, MAINTENANCE_QUEUE
from atom.schedules.timing import Timing
from atom.store.models import Schedule, ScheduleFire

logger = logging.getLogger(__name__)

ENTRY_PREFIX = "schedule:"


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


def sync_entries_safely(
    factory: sessionmaker[Session], app: Celery, misfire_grace: float = 60.0
) -> None:
    """sync_entries, logging instead of raising (Redis may be failing over)."""
    try:
        with factory.begin() as session:
            restored = sync_entries(session, app, misfire_grace)
        if restored:
            logger.warning("restored %d RedBeat schedule entries from PostgreSQL", restored)
    except Exception:  # the sweeper must go on; the next pass retries
        logger.exception("could not sync RedBeat entries")
