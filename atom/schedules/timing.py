"""When a schedule fires: a 5-field cron in an IANA timezone (DST-aware, via croniter), or
``interval_seconds`` counted from the schedule's anchor. Pure functions."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from atom.store.models import Schedule

logger = logging.getLogger(__name__)

MAX_SLOTS_PER_SWEEP = 1000
"""At most this many slots are accounted for per schedule and sweep."""


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
        out: list[datetime] = []
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


def timing_of(schedule: Schedule) -> Timing:
    """The Timing of a stored schedule."""
    return Timing(schedule.cron, schedule.interval_seconds, schedule.timezone, schedule.anchor)
