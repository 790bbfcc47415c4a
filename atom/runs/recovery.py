"""Self-healing: find executions that stopped making progress and re-drive what is left.

An execution is *stalled* when it is queued or running, nothing about it changed for
``stall_seconds`` (no step started, ended or heart-beat, no retry is due later), and the
broker holds no message for it. That covers a worker killed mid-step (its heartbeat goes
stale), a message lost from Redis (a flush, a failover), a chord callback that never fired
(every step ended, no finalize), a process that died between committing an execution and
sending it, and a parked retry whose time has come. Re-driving bumps the epoch and sends the
residual graph; PostgreSQL's record decides what is left, so nothing that succeeded runs
again.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

import redis
from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from atom.clock import db_now
from atom.config import Settings
from atom.runs import lifecycle, parallel_limit
from atom.store.models import Execution

logger = logging.getLogger(__name__)

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Past this many messages the broker scan gives up and assumes every execution is queued
# (a backlog that large is not a stall; nothing is re-driven on a guess).
MAX_SCANNED_MESSAGES = 200_000
RECONCILE_LOCK = 742002

_STALLED = text("""
    SELECT e.id FROM executions e
    WHERE e.status IN ('queued', 'running') AND e.updated_at < :cutoff
      AND e.epoch > 0  -- epoch 0: waiting for a slot (atom.runs.parallel_limit), not stalled
      AND NOT EXISTS (
        SELECT 1 FROM step_runs s WHERE s.execution_id = e.id AND (
            s.updated_at >= :cutoff OR s.heartbeat_at >= :alive OR s.retry_at >= :cutoff))
    ORDER BY e.updated_at
    LIMIT :limit
""")


_STARTED = text("SELECT pg_postmaster_start_time()")
_PROGRESS = text("""
    SELECT EXISTS (
        SELECT 1 FROM step_runs s WHERE s.execution_id = :id AND (
            s.updated_at >= :cutoff OR s.heartbeat_at >= :alive OR s.retry_at >= :cutoff))
""")


def still_stalled(settings: Settings) -> Callable[[Session, Execution], bool]:
    """The stall test of ``_STALLED`` for one execution, under its row lock (``redrive``, and
    the troubleshooter before it records a re-drive)."""

    def check(session: Session, execution: Execution) -> bool:
        stamp = db_now(session)
        cutoff = stamp - timedelta(seconds=settings.stall_seconds)
        alive = stamp - timedelta(seconds=settings.heartbeat_timeout)
        if execution.updated_at >= cutoff:
            return False
        params = {"id": execution.id, "cutoff": cutoff, "alive": alive}
        return not session.execute(_PROGRESS, params).scalar_one()

    return check


@dataclass(frozen=True)
class Report:
    """What one reconciliation pass saw and did."""

    stalled: int
    redriven: list[str]
    waiting_in_broker: int


def stalled(session: Session, settings: Settings, limit: int = 100) -> list[uuid.UUID]:
    """Executions with no progress for ``stall_seconds`` (across all tenants: maintenance);
    ages are measured on the database's clock, which wrote the stamps.

    Nothing while PostgreSQL has been up for less than ``stall_seconds``: "no progress for
    that long" means nothing while the database could not take any. During an outage no
    worker could write a heartbeat or record a step's end (it waits to, in-process, retrying
    at least every 5 s), so a live step would look dead, and re-driving it would run it twice.
    """
    stamp = db_now(session)
    uptime = (stamp - session.execute(_STARTED).scalar_one()).total_seconds()
    if uptime < settings.stall_seconds:
        logger.info("reconcile: the database started %.0f s ago; waiting before judging", uptime)
        return []
    rows = session.execute(
        _STALLED,
        {
            "cutoff": stamp - timedelta(seconds=settings.stall_seconds),
            "alive": stamp - timedelta(seconds=settings.heartbeat_timeout),
            "limit": limit,
        },
    )
    return [row[0] for row in rows]


def ids_in_broker(url: str) -> set[str] | None:
    """Execution ids named by messages waiting in the broker's queues.

    Messages delivered but unacknowledged are not counted: after a worker is SIGKILLed its
    messages sit there until the visibility timeout, and nothing tells a dead consumer's
    from a live one's. A countdown retry is not missed this way (its ``retry_at`` counts as
    progress), and a message a busy worker prefetched is at worst sent once more under a new
    epoch, where the old copy exits at once. None when the broker is not Redis or holds too
    many messages to scan.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    client = redis.Redis.from_url(url)
    try:
        found: set[str] = set()
        scanned = 0
        for key in client.scan_iter(_type="list", count=1000):
            length = client.llen(key)
            scanned += length
            if scanned > MAX_SCANNED_MESSAGES:
                return None
            for start in range(0, length, 1000):
                for raw in client.lrange(key, start, start + 999):
                    found.update(m.decode() for m in _UUID.findall(cast(bytes, raw)))
        return found
    finally:
        client.close()


Observer = Callable[[uuid.UUID, str], None]
"""Told about each stalled execution before anything happens to it: ``(id, "redrive")`` or
``(id, "waiting")`` (its message waits in the broker). The troubleshooter explains and
records; it never changes what the reconciler does, and its failures are only logged."""


def _tell(observe: Observer | None, execution_id: uuid.UUID, finding: str) -> None:
    if observe is None:
        return
    try:
        observe(execution_id, finding)
    except Exception:  # explaining must never stop the healing
        logger.exception("reconcile: explaining execution %s failed", execution_id)


def reconcile(
    factory: sessionmaker[Session],
    app: Celery,
    settings: Settings,
    observe: Observer | None = None,
) -> Report:
    """One pass of the self-healing loop; only one runs at a time (advisory lock)."""
    if parallel_limit.limit_of(app) > 0:
        parallel_limit.admit_all(factory, app, parallel_limit.limit_of(app))
    with factory.begin() as session:
        got = session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": RECONCILE_LOCK})
        candidates = stalled(session, settings) if got else []
    if not candidates:
        return Report(0, [], 0)
    queued = ids_in_broker(settings.celery_broker)
    if queued is None:
        logger.info(
            "reconcile: broker not scannable; %d stalled executions left alone", len(candidates)
        )
        return Report(len(candidates), [], len(candidates))
    redriven, waiting = [], 0
    for execution_id in candidates:
        if str(execution_id) in queued:
            waiting += 1
            _tell(observe, execution_id, "waiting")
            continue
        _tell(observe, execution_id, "redrive")
        if lifecycle.redrive(
            factory,
            app,
            execution_id,
            f"no progress for {settings.stall_seconds:g} s and no message in the broker",
            still_stalled(settings),
        ):
            redriven.append(str(execution_id))
    return Report(len(candidates), redriven, waiting)
