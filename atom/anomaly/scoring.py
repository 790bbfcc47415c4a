"""The scoring pass: derive the new run-metric points, then send every series that has
unscored points to the ML pool's streaming detector and store its scores.

A pass (a maintenance task fired by beat every ``ATOM_ANOMALY_INTERVAL`` s, one at a time
through an advisory lock) scores only series with new points, at most
``ATOM_ANOMALY_MAX_SERIES`` of them, taking tenants in turn (each tenant's series with the
oldest waiting point first), and per series at most ``ATOM_ANOMALY_MAX_POINTS`` new points
after ``ATOM_ANOMALY_CONTEXT`` already-scored ones as the detector's history (a point's score
depends only on the points before it, so the window gives the new points their scores). One
series per call: a tenant's points never travel with another's. When the ML pool does not
answer, the pass stops, logs that once, and the points wait for a later pass.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, text, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from atom.anomaly import derive
from atom.celery_app import ML_ANOMALY_SCORE, ML_PING
from atom.clock import now
from atom.config import Settings
from atom.errors import AtomError
from atom.ml.client import MLUnavailable
from atom.store.models import MetricPoint

logger = logging.getLogger(__name__)

SCORING_LOCK = 742005  # 742001 migrations, 742002 reconciler, 742003 alerts, 742004 sweep

Ask = Callable[..., Any]
"""``ask(task_name, **kwargs)``: the ML client's ``call``."""

_WAITING: dict[str, float | None] = {"since": None}  # this process's ML outage: logged once


_DUE = text("""
    WITH due AS (
        SELECT p.series_id, p.tenant_id, min(p.at) AS first
        FROM metric_points p
        WHERE p.scored_at IS NULL
        GROUP BY p.series_id, p.tenant_id
    )
    SELECT series_id FROM (
        SELECT series_id, first,
               row_number() OVER (PARTITION BY tenant_id ORDER BY first) AS turn
        FROM due
    ) ranked
    ORDER BY turn, first
    LIMIT :limit
""")


def _epoch(value: Any) -> float:
    return float(value.timestamp())


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def score_series(session: Session, series_id: uuid.UUID, ask: Ask, settings: Settings) -> int:
    """Score one series' waiting points; how many were scored."""
    new = session.execute(
        select(MetricPoint.id, MetricPoint.at, MetricPoint.value)
        .where(MetricPoint.series_id == series_id, MetricPoint.scored_at.is_(None))
        .order_by(MetricPoint.at, MetricPoint.id)
        .limit(settings.anomaly_max_points)
    ).all()
    if not new:
        return 0
    first, last = new[0], new[-1]
    position = tuple_(MetricPoint.at, MetricPoint.id)
    history = session.execute(
        select(MetricPoint.id, MetricPoint.at, MetricPoint.value)
        .where(
            MetricPoint.series_id == series_id,
            MetricPoint.scored_at.is_not(None),
            position < tuple_(first.at, first.id),
        )
        .order_by(MetricPoint.at.desc(), MetricPoint.id.desc())
        .limit(settings.anomaly_context)
    ).all()
    history = list(history)[::-1]
    # Points already scored that sit among the new ones (a late custom point) are history.
    between = session.execute(
        select(MetricPoint.id, MetricPoint.at, MetricPoint.value)
        .where(
            MetricPoint.series_id == series_id,
            MetricPoint.scored_at.is_not(None),
            position > tuple_(first.at, first.id),
            position < tuple_(last.at, last.id),
        )
        .order_by(MetricPoint.at, MetricPoint.id)
    ).all()
    waiting = {row.id for row in new}
    sequence = [*history, *sorted([*new, *between], key=lambda r: (r.at, r.id))]
    answer = ask(
        ML_ANOMALY_SCORE,
        timestamps=[_epoch(r.at) for r in sequence],
        values=[float(r.value) for r in sequence],
        sensitivity=settings.anomaly_sensitivity,
    )
    scores = answer.get("scores") or []
    expected = answer.get("expected") or []
    at = now()
    changes = []
    for i, row in enumerate(sequence):
        if row.id not in waiting:
            continue
        score = _finite(scores[i]) if i < len(scores) else None
        band = expected[i] if i < len(expected) else None
        low = high = None
        if isinstance(band, list | tuple) and len(band) == 2:
            low, high = _finite(band[0]), _finite(band[1])
        changes.append(
            {
                "id": row.id,
                "score": None if score is None else min(1.0, max(0.0, score)),
                "expected_low": low if high is not None else None,
                "expected_high": high if low is not None else None,
                "scored_at": at,
            }
        )
    session.execute(update(MetricPoint), changes)
    return len(changes)


def _skip(session: Session, series_id: uuid.UUID, settings: Settings) -> None:
    """Mark a series' waiting points scored without a score (the detector refused them)."""
    ids = select(MetricPoint.id).where(
        MetricPoint.series_id == series_id, MetricPoint.scored_at.is_(None)
    )
    session.execute(
        update(MetricPoint)
        .where(MetricPoint.id.in_(ids.limit(settings.anomaly_max_points).scalar_subquery()))
        .values(scored_at=now())
    )


def score_pass(
    factory: sessionmaker[Session],
    ask: Ask,
    settings: Settings,
    queues: Callable[[], dict[str, int]] | None = None,
    ping: Ask | None = None,
) -> dict[str, Any]:
    """Derive new points and score what waits; one pass at a time (else skipped).

    ``ping`` (an ML client with the short ``ATOM_ML_TIMEOUT``) is asked first when points
    wait, so a pool that is down costs the pass that long, not ``ask``'s longer wait."""
    started = time.monotonic()
    engine = factory.kw["bind"]
    with engine.connect() as lock:
        if not lock.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": SCORING_LOCK}):
            return {"skipped": "another scoring pass is running"}
        lock.commit()
        try:
            return _pass(factory, ask, settings, queues, ping, started)
        finally:
            lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SCORING_LOCK})
            lock.commit()


def _pass(
    factory: sessionmaker[Session],
    ask: Ask,
    settings: Settings,
    queues: Callable[[], dict[str, int]] | None,
    ping: Ask | None,
    started: float,
) -> dict[str, Any]:
    derived = derive.derive(factory, settings, queues)
    with factory() as session:
        due = list(session.scalars(_DUE, {"limit": settings.anomaly_max_series}))
    scored = series_done = 0
    waiting = False
    for series_id in due:
        try:
            if ping is not None and series_done == 0:
                ping(ML_PING)
            with factory.begin() as session:
                scored += score_series(session, series_id, ask, settings)
            series_done += 1
        except MLUnavailable as e:
            waiting = True
            if _WAITING["since"] is None:
                _WAITING["since"] = time.monotonic()
                logger.warning("anomaly scoring waits for the ML pool: %s", e)
            break
        except AtomError as e:  # the detector refused this series: do not retry it forever
            logger.warning("anomaly scoring: series %s refused: %s", series_id, e)
            with factory.begin() as session:
                _skip(session, series_id, settings)
    if not waiting and due and _WAITING["since"] is not None:
        logger.warning(
            "anomaly scoring resumed: the ML pool answers again after %.0f s",
            time.monotonic() - (_WAITING["since"] or 0.0),
        )
        _WAITING["since"] = None
    return {
        "derived": derived,
        "series_due": len(due),
        "series_scored": series_done,
        "points_scored": scored,
        "waiting_for_ml": waiting,
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
    }
