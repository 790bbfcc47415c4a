"""RedBeat, hardened: survives a flushed or failed-over Redis, and fires ATOM schedules.

RedBeat keeps its entries and its single-beat lock only in Redis. After a ``FLUSHALL`` the
stock scheduler dies on the next lock extension and, if restarted, has lost every entry that
is not static. This scheduler re-takes a vanished lock (or stands by when another beat holds
it), re-creates the platform's static entries whenever they are missing, rebuilds schedule
entries from PostgreSQL when it starts, and sends each schedule's fire with the slot's due
time (``atom.schedule_entry.ScheduleEntry``), which the fire task records exactly once.
"""

from __future__ import annotations

import logging
import time

from redbeat.schedulers import RedBeatScheduler, get_redis
from redis.exceptions import LockError

from atom.celery_app import FIRE_SCHEDULE
from atom.observe.probe import BEAT_HEARTBEAT_KEY
from atom.schedules import entry as schedule_entry
from atom.store.db import make_engine, make_sessionmaker

logger = logging.getLogger("atom.beat")


class AtomScheduler(RedBeatScheduler):
    """RedBeatScheduler that heals after Redis loses its keys."""

    Entry = schedule_entry.ScheduleEntry

    def setup_schedule(self):
        """RedBeat's static entries, then every schedule's entry from PostgreSQL."""
        super().setup_schedule()
        url = getattr(self.app.conf, "atom_database_url", None)
        if url:
            engine = make_engine(url, pool_size=1)
            try:
                schedule_entry.sync_entries_safely(
                    make_sessionmaker(engine), self.app, self.app.conf.atom_misfire_grace
                )
            finally:
                engine.dispose()

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        """Send a schedule's fire with the due time of its slot; anything else as usual."""
        timing = getattr(entry, "timing", None)
        if timing is None:
            return super().apply_async(entry, producer=producer, advance=advance, **kwargs)
        due = entry._due()  # the slot being fired, before reserve() advances
        if advance:
            self.reserve(entry)
        return self.send_task(
            FIRE_SCHEDULE, (entry.args[0], due.isoformat()), {}, producer=producer, **entry.options
        )

    def tick(self, min=min, **kwargs):  # signature of celery's Scheduler.tick
        """Keep the lock (or stand by), restore missing static entries, send what is due."""
        if self.lock_key and self.lock is not None and not self._keep_lock():
            return self.max_interval
        self._heartbeat()
        self._restore_static_entries()
        remaining = []
        try:
            for entry in self.schedule.values():
                next_time = self.maybe_due(entry, **self._maybe_due_kwargs)
                if next_time:
                    remaining.append(next_time)
        except RuntimeError:
            logger.debug("beat: RuntimeError", exc_info=True)
        return min(remaining + [self.max_interval])

    def _keep_lock(self) -> bool:
        try:
            self.lock.extend(int(self.lock_timeout))
            return True
        except LockError:
            pass
        # The lock is gone (Redis flushed or failed over) or another beat took it over.
        if self.lock.acquire(blocking=False):
            logger.warning("beat: lock was lost and is re-acquired; this beat stays active")
            return True
        logger.warning("beat: another beat holds the lock; this one stands by")
        return False

    def _heartbeat(self) -> None:
        """Tell the health check that a beat is active (``atom.monitoring``)."""
        get_redis(self.app).set(BEAT_HEARTBEAT_KEY, time.time(), ex=3600)

    def _restore_static_entries(self) -> None:
        statics = self.app.redbeat_conf.schedule
        if not statics:
            return
        client = get_redis(self.app)
        missing = {
            name: spec
            for name, spec in statics.items()
            if not client.exists(self.Entry.generate_key(self.app, name))
        }
        if missing:
            logger.warning("beat: restoring missing entries: %s", ", ".join(sorted(missing)))
            self.update_from_dict(missing)
            client.sadd(self.app.redbeat_conf.statics_key, *missing)
