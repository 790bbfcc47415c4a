"""RedBeat, hardened: survives Redis and PostgreSQL outages, and fires ATOM schedules.

RedBeat keeps its entries and its single-beat lock only in Redis. After a ``FLUSHALL`` the
stock scheduler dies on the next lock extension and, if restarted, has lost every entry that
is not static; a Redis restart kills it outright (a connection error escapes ``tick``, and
celery's beat loop ends on any exception). This scheduler:

- rides out an outage of Redis or PostgreSQL of any length: a tick that meets a connection
  error is abandoned, logged once per outage, and tried again with exponential backoff
  (``OUTAGE_BACKOFF_MAX`` at most, so it resumes within seconds of the service's return);
- re-takes a vanished lock (or stands by when another beat holds it), and takes the lock
  itself when the start-up acquisition failed because Redis was down;
- re-creates the platform's static entries whenever they are missing, rebuilds schedule
  entries from PostgreSQL when it starts, and sends each schedule's fire with the slot's due
  time (``atom.schedule_entry.ScheduleEntry``), which the fire task records exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import time

import redis
from kombu.exceptions import OperationalError as BrokerError
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis
from redis.exceptions import LockError
from sqlalchemy.exc import DBAPIError

from atom.celery_app import FIRE_SCHEDULE
from atom.observe.probe import BEAT_HEARTBEAT_KEY
from atom.schedules import entry as schedule_entry
from atom.store.db import make_engine, make_sessionmaker

logger = logging.getLogger("atom.beat")

# What an unreachable Redis, broker or PostgreSQL raises (OSError: a socket refused or reset
# below the client libraries).
OUTAGE_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    BrokerError,
    DBAPIError,
    ConnectionError,
    OSError,
)
# Seconds between attempts during an outage: doubling from 0.5 up to this.
OUTAGE_BACKOFF_MAX = 5.0


class Outage:
    """Backoff and logging for one outage at a time: one warning when it starts, one line
    when it ends (with its length), nothing in between."""

    def __init__(self, backoff_max: float = OUTAGE_BACKOFF_MAX):
        self.backoff_max = backoff_max
        self.since: float | None = None
        self.delay = 0.0

    def failed(self, error: BaseException) -> float:
        """Record a failed tick; returns how long to sleep before the next one."""
        if self.since is None:
            self.since = time.monotonic()
            self.delay = 0.5
            logger.warning(
                "beat: a service is unreachable (%s: %s); retrying with backoff until it is back",
                type(error).__name__,
                error,
            )
        else:
            self.delay = min(self.backoff_max, self.delay * 2)
        return self.delay

    def succeeded(self) -> None:
        """Record a good tick; logs the end of an outage."""
        if self.since is not None:
            logger.warning(
                "beat: services reachable again after %.1f s; resuming",
                time.monotonic() - self.since,
            )
            self.since = None


class AtomScheduler(RedBeatScheduler):
    """RedBeatScheduler that heals after Redis loses its keys."""

    Entry = schedule_entry.ScheduleEntry
    _set_up = True  # the schedule reached Redis (False: set up on the next good tick)
    _standing_by = False  # another beat holds the lock (logged once when that starts)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outage = Outage()

    def setup_schedule(self):
        """RedBeat's static entries, then every schedule's entry from PostgreSQL; when Redis
        is down at start-up, the first tick that reaches it does this."""
        try:
            super().setup_schedule()
        except OUTAGE_ERRORS as e:
            logger.warning("beat: Redis unreachable at start-up (%s); setting up later", e)
            self._set_up = False
            return
        self._set_up = True
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
        """One pass, or a backoff delay while Redis, the broker or PostgreSQL is down."""
        try:
            interval = self._tick(min)
        except OUTAGE_ERRORS as e:
            # Whatever half-open connections the failure left are dropped: the next pass
            # reconnects from scratch.
            self._reset_connections()
            return self.outage.failed(e)
        self.outage.succeeded()
        return interval

    def _reset_connections(self) -> None:
        """Drop the cached broker producer: the next send makes a fresh connection (the
        Redis client of RedBeat reconnects by itself)."""
        producer = self.__dict__.pop("producer", None)
        self.__dict__.pop("_maybe_due_kwargs", None)
        connection = self.__dict__.pop("connection", None)
        for broken in (producer, connection):
            if broken is not None:
                with contextlib.suppress(Exception):  # already broken: best effort
                    broken.release()

    def _tick(self, min):
        """Keep the lock (or stand by), restore missing static entries, send what is due."""
        if self.lock_key and not self._keep_lock():
            return self.max_interval
        if not self._set_up:
            self.setup_schedule()
            if not self._set_up:
                raise redis.ConnectionError("Redis unreachable while setting up the schedule")
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
        if self.lock is None:
            # The lock taken at start-up failed (Redis was down then): take it now.
            client = get_redis(self.app)
            lock = client.lock(self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval)
            lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
            if not lock.acquire(blocking=False):
                if not self._standing_by:
                    logger.warning("beat: another beat holds the lock; this one stands by")
                    self._standing_by = True
                return False
            logger.warning("beat: acquired the lock; this beat is active")
            self.lock, self._standing_by = lock, False
            return True
        try:
            self.lock.extend(int(self.lock_timeout))
            return True
        except LockError:
            pass
        # The lock is gone (Redis flushed or failed over) or another beat took it over.
        if self.lock.acquire(blocking=False):
            logger.warning("beat: lock was lost and is re-acquired; this beat stays active")
            self._standing_by = False
            return True
        if not self._standing_by:
            logger.warning("beat: another beat holds the lock; this one stands by")
            self._standing_by = True
        return False

    def _heartbeat(self) -> None:
        """Tell the health check that a beat is active (``atom.monitoring``). The time is
        Redis' own (``TIME``), which the health check compares it with: a beat whose clock
        is off does not look dead, nor a dead one alive."""
        client = get_redis(self.app)
        seconds, micros = client.time()
        client.set(BEAT_HEARTBEAT_KEY, seconds + micros / 1e6, ex=3600)

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
