"""The health of the platform's parts: the database, the broker, the workers (a ping), beat
(its heartbeat, on Redis' clock), queue depths, and the alert evaluator's last report."""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from atom.celery_app import MAINTENANCE_QUEUE, STEPS_QUEUE
from atom.config import Settings

logger = logging.getLogger(__name__)

BEAT_HEARTBEAT_KEY = "atom:beat:heartbeat"
"""Written by the active beat on every tick (``beat/scheduler.py``): Redis' TIME, epoch s."""
BEAT_STALE_SECONDS = 30.0
MONITOR_STATUS_KEY = "atom:monitor:last"
"""The last alert evaluation, as JSON (written by the evaluator)."""
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's Redis transport: queue + sep + priority
PRIORITY_STEPS = (3, 6, 9)


def _is_redis(url: str) -> bool:
    return url.split("://", 1)[0] in {"redis", "rediss", "unix"}


class Probe:
    """Checks of the database, broker, workers, beat and queues, shared by the health
    endpoint, ``/metrics`` and the alert evaluator. Worker pings are cached briefly, so a
    burst of health checks sends one broadcast."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        celery: Celery,
        settings: Settings,
        *,
        ping_timeout: float = 1.0,
        cache_seconds: float = 5.0,
    ):
        self.factory, self.celery, self.settings = factory, celery, settings
        self.ping_timeout, self.cache_seconds = ping_timeout, cache_seconds
        self._broker = (
            redis.Redis.from_url(settings.celery_broker, socket_timeout=2, socket_connect_timeout=2)
            if _is_redis(settings.celery_broker)
            else None
        )
        self._redis = redis.Redis.from_url(
            settings.events_redis, socket_timeout=2, socket_connect_timeout=2
        )
        self._lock = threading.Lock()
        self._workers: tuple[float, list[str]] | None = None

    def database(self) -> bool:
        """PostgreSQL answers ``SELECT 1``."""
        try:
            with self.factory() as session:
                session.execute(text("SELECT 1"))
            return True
        except Exception as e:
            logger.warning("health: database check failed: %s", type(e).__name__)
            return False

    def broker(self) -> bool:
        """The broker answers (Redis PING)."""
        try:
            if self._broker is not None:
                return bool(self._broker.ping())
            with self.celery.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            return True
        except Exception as e:
            logger.warning("health: broker check failed: %s", type(e).__name__)
            return False

    def workers(self, *, fresh: bool = False) -> list[str]:
        """Names of the workers that answer a ping within ``ping_timeout`` (cached)."""
        with self._lock:
            cached = self._workers
            if not fresh and cached and time.monotonic() - cached[0] < self.cache_seconds:
                return cached[1]
            try:
                replies = self.celery.control.ping(timeout=self.ping_timeout) or []
                names = sorted(name for reply in replies for name in reply)
            except Exception as e:
                logger.warning("health: worker ping failed: %s", type(e).__name__)
                names = []
            self._workers = (time.monotonic(), names)
            return names

    def beat(self) -> dict[str, Any]:
        """The active beat's last heartbeat: ``{status, last_seen, age_s}``."""
        try:
            raw = self._redis.get(BEAT_HEARTBEAT_KEY)
            # Redis' clock wrote it (``TIME``): the age is measured on the same clock.
            seconds, micros = self._redis.time() if raw is not None else (0, 0)
        except redis.RedisError:
            raw = None
        if raw is None:
            return {"status": "down", "last_seen": None, "age_s": None}
        seen = float(raw)
        age = max(0.0, seconds + micros / 1e6 - seen)
        return {
            "status": "ok" if age < BEAT_STALE_SECONDS else "down",
            "last_seen": datetime.fromtimestamp(seen, UTC).isoformat(),
            "age_s": round(age, 1),
        }

    def queues(self) -> dict[str, int]:
        """Messages waiting in each broker queue (the step and maintenance queues always)."""
        depths = {STEPS_QUEUE: 0, MAINTENANCE_QUEUE: 0}
        if self._broker is None:
            return depths
        names = set(depths)
        for key in self._broker.scan_iter(_type="list", count=1000):
            names.add(key.decode(errors="replace").split(PRIORITY_SEPARATOR, 1)[0])
            if len(names) > 200:
                break
        with self._broker.pipeline(transaction=False) as pipe:
            ordered = sorted(names)
            for name in ordered:
                for key in [name] + [f"{name}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS]:
                    pipe.llen(key)
            counts = pipe.execute()
        per = len(PRIORITY_STEPS) + 1
        return {name: sum(counts[i * per : (i + 1) * per]) for i, name in enumerate(ordered)}

    def step_backlog(self) -> int | None:
        """Messages waiting on the step queue (all priorities): one cheap round trip, for
        backpressure on every execute. None when the broker is not Redis or unreachable."""
        if self._broker is None:
            return None
        keys = [STEPS_QUEUE] + [f"{STEPS_QUEUE}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS]
        try:
            with self._broker.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.llen(key)
                return sum(pipe.execute())
        except redis.RedisError:
            return None

    def monitor_status(self) -> dict[str, Any] | None:
        """The last alert evaluation recorded by the evaluator, or None."""
        try:
            raw = self._redis.get(MONITOR_STATUS_KEY)
        except redis.RedisError:
            return None
        return json.loads(raw) if raw else None

    def record_monitor_status(self, status: dict[str, Any]) -> None:
        """Record the last alert evaluation (see ``monitor_status``)."""
        try:
            self._redis.set(MONITOR_STATUS_KEY, json.dumps(status, default=str))
        except redis.RedisError as e:
            logger.warning("monitor: could not record its status: %s", e)

    def health(self) -> dict[str, Any]:
        """``{status: ok|degraded|down, components}``: down without database or broker,
        degraded without a worker or a live beat."""
        database, broker = self.database(), self.broker()
        workers = self.workers() if broker else []
        beat = self.beat()
        if not (database and broker):
            status = "down"
        elif not workers or beat["status"] != "ok":
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "components": {
                "database": {"status": "ok" if database else "down"},
                "broker": {"status": "ok" if broker else "down"},
                "workers": {"status": "ok" if workers else "down", "count": len(workers)},
                "beat": beat,
            },
        }

    def close(self) -> None:
        """Release the Redis connection pools."""
        if self._broker is not None:
            self._broker.close()
        self._redis.close()
