"""ATOM's own run metrics as series, derived from what the platform records.

- ``workflow_duration``: one point per finished run (succeeded or failed), at its finish,
  its duration in ms (``executions``);
- ``workflow_error_rate``: one point per bucket (``ATOM_ANOMALY_BUCKET``) in which the
  workflow had finished runs: failed / finished, at the bucket's end;
- ``step_duration``: one point per finished action step, per action type, in ms
  (``step_runs``);
- ``queue_depth``: the platform's broker queues, sampled once per pass (no tenant).

Each source is read forward from a cursor (``metric_cursors``), up to ``ATOM_ANOMALY_SETTLE``
seconds ago so that a run finishing now has committed before it is read; a pass reads at
most ``LIMIT`` rows per source and the next pass goes on from there.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import TextClause, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from atom.anomaly.store import add_points, ensure_series
from atom.clock import now
from atom.config import Settings
from atom.statuses import ExecutionStatus, StepStatus
from atom.store.models import MetricCursor

logger = logging.getLogger(__name__)

LIMIT = 5000
BACKFILL = timedelta(days=1)
"""How far back the first pass reads (a new installation's history)."""

Points = dict[tuple[uuid.UUID | None, str, uuid.UUID | None, str], list[tuple[datetime, float]]]


def _cursor(session: Session, name: str, default: datetime) -> datetime:
    row = session.get(MetricCursor, name, with_for_update=True)
    return row.through if row is not None else default


def _advance(session: Session, name: str, through: datetime) -> None:
    session.execute(
        insert(MetricCursor)
        .values(name=name, through=through)
        .on_conflict_do_update(index_elements=[MetricCursor.name], set_={"through": through})
    )


def _store(session: Session, points: Points, units: dict[str, str]) -> int:
    added = 0
    for (tenant_id, kind, workflow_id, name), pts in points.items():
        series_id = ensure_series(session, tenant_id, kind, workflow_id, name, units[kind])
        added += add_points(session, series_id, tenant_id, pts)
    return added


_FINISHED_RUNS = text("""
    SELECT tenant_id, workflow_id, finished_at,
           extract(epoch FROM finished_at - started_at) * 1000 AS ms
    FROM executions
    WHERE finished_at > :since AND finished_at <= :until AND started_at IS NOT NULL
      AND status IN (:succeeded, :failed)
    ORDER BY finished_at
    LIMIT :limit
""")

_FINISHED_STEPS = text("""
    SELECT tenant_id, action_type, finished_at,
           extract(epoch FROM finished_at - started_at) * 1000 AS ms
    FROM step_runs
    WHERE finished_at > :since AND finished_at <= :until AND started_at IS NOT NULL
      AND action_type IS NOT NULL AND status IN (:succeeded, :failed)
    ORDER BY finished_at
    LIMIT :limit
""")

_ERROR_BUCKETS = text("""
    SELECT tenant_id, workflow_id,
           floor(extract(epoch FROM finished_at) / :bucket) AS slot,
           count(*) FILTER (WHERE status = :failed) AS failed,
           count(*) AS finished
    FROM executions
    WHERE finished_at >= :since AND finished_at < :until AND status IN (:succeeded, :failed)
    GROUP BY tenant_id, workflow_id, slot
""")


def _durations(
    session: Session, name: str, query: TextClause, kind: str, until: datetime, extra: dict
) -> int:
    """Points from finished rows past the cursor (runs or steps), oldest first."""
    since = _cursor(session, name, until - BACKFILL)
    rows = session.execute(
        query,
        {"since": since, "until": until, "limit": LIMIT, **extra},
    ).all()
    points: Points = defaultdict(list)
    for tenant_id, subject, finished_at, ms in rows:
        if kind == "workflow_duration":
            points[(tenant_id, kind, subject, "")].append((finished_at, max(0.0, float(ms))))
        else:
            points[(tenant_id, kind, None, subject)].append((finished_at, max(0.0, float(ms))))
    # A full page stops at its last finish time; rows sharing that instant are read again
    # next time only if the page cut between them, which the strict > would lose: so a full
    # page stops just before its last instant instead.
    through = until
    if len(rows) == LIMIT:
        last = rows[-1][2]
        through = last - timedelta(microseconds=1)
        for key in list(points):
            points[key] = [p for p in points[key] if p[0] <= through]
        if through <= since:  # more than LIMIT rows at one instant: take them all
            through = last
    added = _store(session, points, {kind: "ms"})
    _advance(session, name, through)
    return added


def _error_rates(session: Session, until: datetime, bucket: float) -> int:
    """Complete buckets past the cursor, per workflow with finished runs in them."""
    end = datetime.fromtimestamp(math.floor(until.timestamp() / bucket) * bucket, UTC)
    since = _cursor(session, "workflow_error_rate", end - BACKFILL)
    since = max(since, end - BACKFILL)
    if end <= since:
        return 0
    rows = session.execute(
        _ERROR_BUCKETS,
        {
            "since": since,
            "until": end,
            "bucket": bucket,
            "succeeded": ExecutionStatus.SUCCEEDED.value,
            "failed": ExecutionStatus.FAILED.value,
        },
    ).all()
    points: Points = defaultdict(list)
    for tenant_id, workflow_id, slot, failed, finished in sorted(rows, key=lambda r: r[2]):
        at = datetime.fromtimestamp((float(slot) + 1) * bucket, UTC)
        points[(tenant_id, "workflow_error_rate", workflow_id, "")].append(
            (at, int(failed) / int(finished))
        )
    added = _store(session, points, {"workflow_error_rate": "ratio"})
    _advance(session, "workflow_error_rate", end)
    return added


def _queue_depths(
    session: Session, queues: Callable[[], dict[str, int]], at: datetime, every: float
) -> int:
    """One sample of every broker queue, at most once per ``every`` seconds."""
    last = _cursor(session, "queue_depth", datetime.min.replace(tzinfo=UTC))
    if (at - last).total_seconds() < every:
        return 0
    try:
        depths = queues()
    except Exception as e:  # the broker is down: no sample this time
        logger.warning("anomaly: queue depths unavailable: %s", type(e).__name__)
        return 0
    points: Points = {
        (None, "queue_depth", None, queue): [(at, float(depth))] for queue, depth in depths.items()
    }
    _advance(session, "queue_depth", at)
    return _store(session, points, {"queue_depth": "messages"})


def derive(
    factory: sessionmaker[Session],
    settings: Settings,
    queues: Callable[[], dict[str, int]] | None = None,
) -> dict[str, int]:
    """Add the points recorded since the last pass; how many, by kind."""
    at = now()
    until = at - timedelta(seconds=settings.anomaly_settle)
    outcomes = {
        "succeeded": ExecutionStatus.SUCCEEDED.value,
        "failed": ExecutionStatus.FAILED.value,
    }
    steps = {"succeeded": StepStatus.SUCCEEDED.value, "failed": StepStatus.FAILED.value}
    added = {}
    with factory.begin() as session:
        added["workflow_duration"] = _durations(
            session, "workflow_duration", _FINISHED_RUNS, "workflow_duration", until, outcomes
        )
    with factory.begin() as session:
        added["workflow_error_rate"] = _error_rates(
            session, until, max(1.0, settings.anomaly_bucket)
        )
    with factory.begin() as session:
        added["step_duration"] = _durations(
            session, "step_duration", _FINISHED_STEPS, "step_duration", until, steps
        )
    if queues is not None:
        with factory.begin() as session:
            added["queue_depth"] = _queue_depths(
                session, queues, at, max(1.0, settings.anomaly_interval)
            )
    return added


def cursors(session: Session) -> dict[str, datetime]:
    """Where each source's derivation stands."""
    return {c.name: c.through for c in session.scalars(select(MetricCursor))}
