"""Monitoring: the health of the platform's parts, run statistics computed in PostgreSQL, and
the health score of a workflow.

Statistics are tenant-scoped (every query filters by ``tenant_id``). In a window:
- ``executions.by_status`` counts the executions *created* in it, by their current status;
- ``success_rate`` and ``duration_ms`` cover the executions that *finished* in it
  (succeeded or failed): success rate = succeeded / (succeeded + failed), durations from
  start to finish, percentiles by ``percentile_cont`` in SQL.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Celery
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from atom.celery_app import MAINTENANCE_QUEUE, STEPS_QUEUE
from atom.clock import now
from atom.config import Settings
from atom.store.models import Alert, Workflow

logger = logging.getLogger(__name__)

BEAT_HEARTBEAT_KEY = "atom:beat:heartbeat"
"""Written by the active beat on every tick (``beat/scheduler.py``): the time, in epoch s."""
BEAT_STALE_SECONDS = 30.0
MONITOR_STATUS_KEY = "atom:monitor:last"
"""The last alert evaluation, as JSON (written by the evaluator)."""
BASELINE = timedelta(days=7)
"""A workflow's latency baseline: its runs in this period before the window."""
MIN_BASELINE_RUNS = 5
MAX_WINDOW = timedelta(days=30)
PRIORITY_SEPARATOR = "\x06\x16"  # kombu's Redis transport: queue + sep + priority
PRIORITY_STEPS = (3, 6, 9)
_WINDOW = re.compile(r"^\s*(\d{1,7})\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(value: str) -> timedelta:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"7d"`` as a timedelta; ValueError if malformed or
    outside 1 s .. 30 d."""
    match = _WINDOW.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a window: use a number and s, m, h or d, like 5m")
    window = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if not timedelta(seconds=1) <= window <= MAX_WINDOW:
        raise ValueError(f"{value!r} is outside 1s .. 30d")
    return window


def _is_redis(url: str) -> bool:
    return url.split("://", 1)[0] in {"redis", "rediss", "unix"}


# ---------------------------------------------------------------------------------------------
# The platform's parts


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
        except redis.RedisError:
            raw = None
        if raw is None:
            return {"status": "down", "last_seen": None, "age_s": None}
        seen = float(raw)
        age = max(0.0, time.time() - seen)
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


# ---------------------------------------------------------------------------------------------
# Run statistics (tenant-scoped, in SQL)


@dataclass(frozen=True)
class RunStats:
    """What the executions that finished in a period add up to."""

    succeeded: int
    failed: int
    cancelled: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None

    @property
    def finished(self) -> int:
        """Succeeded + failed (what the success rate is over)."""
        return self.succeeded + self.failed

    @property
    def success_rate(self) -> float | None:
        """succeeded / (succeeded + failed), None without finished runs."""
        return self.succeeded / self.finished if self.finished else None

    @property
    def error_rate(self) -> float | None:
        """failed / (succeeded + failed), None without finished runs."""
        return self.failed / self.finished if self.finished else None

    def durations(self) -> dict[str, float | None]:
        """p50/p95/p99 in ms, rounded."""
        return {
            k: (round(v, 1) if v is not None else None)
            for k, v in (("p50", self.p50_ms), ("p95", self.p95_ms), ("p99", self.p99_ms))
        }


_DURATION = "extract(epoch FROM e.finished_at - e.started_at) * 1000"
_FINISHED_STATS = f"""
    SELECT {{group}}
           count(*) FILTER (WHERE e.status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE e.status = 'failed') AS failed,
           count(*) FILTER (WHERE e.status = 'cancelled') AS cancelled,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {_DURATION})
               FILTER (WHERE e.status IN ('succeeded', 'failed') AND e.started_at IS NOT NULL)
               AS pct
    FROM executions e
    WHERE e.tenant_id = :tenant AND e.finished_at >= :since AND e.finished_at < :until
      {{where}}
    {{group_by}}
"""


def _stats(row: Any) -> RunStats:
    pct = row.pct or [None, None, None]
    return RunStats(int(row.succeeded), int(row.failed), int(row.cancelled), *pct)


def run_stats(
    session: Session,
    tenant_id: uuid.UUID,
    since: datetime,
    until: datetime,
    workflow_id: uuid.UUID | None = None,
) -> RunStats:
    """Counts and duration percentiles of the executions that finished in [since, until)."""
    where = "AND e.workflow_id = :workflow" if workflow_id else ""
    row = session.execute(
        text(_FINISHED_STATS.format(group="", where=where, group_by="")),
        {"tenant": tenant_id, "since": since, "until": until, "workflow": workflow_id},
    ).one()
    return _stats(row)


def run_stats_by_workflow(
    session: Session, tenant_id: uuid.UUID, since: datetime, until: datetime
) -> dict[uuid.UUID, RunStats]:
    """``run_stats`` for every workflow with runs that finished in [since, until)."""
    rows = session.execute(
        text(
            _FINISHED_STATS.format(
                group="e.workflow_id,", where="", group_by="GROUP BY e.workflow_id"
            )
        ),
        {"tenant": tenant_id, "since": since, "until": until},
    )
    return {row.workflow_id: _stats(row) for row in rows}


def created_by_status(
    session: Session, tenant_id: uuid.UUID, since: datetime
) -> dict[tuple[uuid.UUID, str], int]:
    """Executions created since ``since``, counted by (workflow, current status)."""
    rows = session.execute(
        text(
            "SELECT workflow_id, status, count(*) AS n FROM executions "
            "WHERE tenant_id = :tenant AND created_at >= :since GROUP BY workflow_id, status"
        ),
        {"tenant": tenant_id, "since": since},
    )
    return {(row.workflow_id, row.status): int(row.n) for row in rows}


STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled")


def window_metrics(
    session: Session, tenant_id: uuid.UUID, window: timedelta, max_workflows: int = 100
) -> dict[str, Any]:
    """The tenant's run statistics over the last ``window`` (see the module docstring)."""
    until = now()
    since = until - window
    created = created_by_status(session, tenant_id, since)
    overall = run_stats(session, tenant_id, since, until)
    per = run_stats_by_workflow(session, tenant_id, since, until)
    ids = {wf for wf, _ in created} | set(per)
    names = (
        dict(
            session.execute(
                select(Workflow.id, Workflow.name).where(
                    Workflow.tenant_id == tenant_id, Workflow.id.in_(ids)
                )
            ).all()
        )
        if ids
        else {}
    )

    def by_status(workflow_id: uuid.UUID | None) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for (wf, status), n in created.items():
            if workflow_id is None or wf == workflow_id:
                counts[status] = counts.get(status, 0) + n
        return counts

    rows: list[dict[str, Any]] = []
    for wf in ids:
        stats = per.get(wf) or RunStats(0, 0, 0, None, None, None)
        counts = by_status(wf)
        rows.append(
            {
                "workflow_id": str(wf),
                "name": names.get(wf),
                "executions": {"total": sum(counts.values()), "by_status": counts},
                "finished": {
                    "succeeded": stats.succeeded,
                    "failed": stats.failed,
                    "cancelled": stats.cancelled,
                },
                "success_rate": stats.success_rate,
                "duration_ms": stats.durations(),
            }
        )
    rows.sort(key=lambda r: (-r["executions"]["total"], r["name"] or "", r["workflow_id"]))
    counts = by_status(None)
    return {
        "window": None,
        "window_seconds": int(window.total_seconds()),
        "from": since.isoformat(),
        "to": until.isoformat(),
        "executions": {"total": sum(counts.values()), "by_status": counts},
        "finished": {
            "succeeded": overall.succeeded,
            "failed": overall.failed,
            "cancelled": overall.cancelled,
        },
        "success_rate": overall.success_rate,
        "duration_ms": overall.durations(),
        "workflows": rows[:max_workflows],
        "workflows_truncated": len(rows) > max_workflows,
    }


def degradation(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    window: timedelta,
    at: datetime | None = None,
) -> tuple[float | None, RunStats, RunStats]:
    """p95 in the window over p95 in the baseline before it (None without enough runs),
    with both periods' statistics."""
    until = at or now()
    since = until - window
    current = run_stats(session, tenant_id, since, until, workflow_id)
    baseline = run_stats(session, tenant_id, since - BASELINE, since, workflow_id)
    if baseline.finished < MIN_BASELINE_RUNS or not baseline.p95_ms or current.p95_ms is None:
        return None, current, baseline
    return current.p95_ms / baseline.p95_ms, current, baseline


# ---------------------------------------------------------------------------------------------
# The health score of a workflow

SEVERITY_PENALTY = {"critical": 20, "high": 10, "medium": 5, "low": 2}
WEIGHTS = {"success_rate": 50, "latency": 30, "open_alerts": 20}


def _latency_points(ratio: float | None) -> float:
    """Full marks up to 1.2x the baseline p95, none from 3x, linear in between."""
    if ratio is None or ratio <= 1.2:
        return WEIGHTS["latency"]
    return max(0.0, WEIGHTS["latency"] * (3.0 - ratio) / 1.8)


def workflow_health(
    session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID, window: timedelta
) -> dict[str, Any]:
    """A 0-100 score with its factors (see README 'Workflow health')."""
    ratio, current, baseline = degradation(session, tenant_id, workflow_id, window)
    open_alerts = list(
        session.scalars(
            select(Alert).where(
                Alert.tenant_id == tenant_id,
                Alert.workflow_id == workflow_id,
                Alert.status == "firing",
            )
        )
    )
    rate = current.success_rate
    success_points = WEIGHTS["success_rate"] * (1.0 if rate is None else rate)
    latency_points = _latency_points(ratio)
    penalty = sum(SEVERITY_PENALTY.get(a.severity, 5) for a in open_alerts)
    alert_points = max(0, WEIGHTS["open_alerts"] - penalty)
    score = round(success_points + latency_points + alert_points)
    factors = {
        "success_rate": {
            "weight": WEIGHTS["success_rate"],
            "points": round(success_points, 1),
            "value": rate,
            "succeeded": current.succeeded,
            "failed": current.failed,
            "detail": (
                f"{current.succeeded} of {current.finished} finished runs succeeded"
                if current.finished
                else "no finished runs in the window"
            ),
        },
        "latency": {
            "weight": WEIGHTS["latency"],
            "points": round(latency_points, 1),
            "value": round(ratio, 3) if ratio is not None else None,
            "p95_ms": current.durations()["p95"],
            "baseline_p95_ms": baseline.durations()["p95"],
            "baseline_runs": baseline.finished,
            "detail": (
                f"p95 is {ratio:.2f}x the baseline of the {BASELINE.days} days before"
                if ratio is not None
                else f"no baseline yet (needs {MIN_BASELINE_RUNS} runs in the "
                f"{BASELINE.days} days before the window)"
            ),
        },
        "open_alerts": {
            "weight": WEIGHTS["open_alerts"],
            "points": alert_points,
            "value": len(open_alerts),
            "alerts": [
                {"id": str(a.id), "severity": a.severity, "message": a.message} for a in open_alerts
            ],
            "detail": f"{len(open_alerts)} firing alert(s) about this workflow",
        },
    }
    status = "healthy" if score >= 80 else "warning" if score >= 50 else "critical"
    return {
        "workflow_id": str(workflow_id),
        "window_seconds": int(window.total_seconds()),
        "score": score,
        "status": status,
        "factors": factors,
    }
