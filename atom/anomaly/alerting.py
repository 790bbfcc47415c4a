"""What an ``anomaly`` rule sees: per matched series, whether an anomaly is open.

An anomaly *opens* on a series when a scored point's score reaches the rule's threshold (a
point after the rule's previous alert on that series, within the rule's window). It stays
open while the series has not come back: it *closes* when the latest point lies again in
the range the detector expected at the anomalous point (the normal the anomaly broke
from), or, for a level that holds, once no point has reached the threshold for a whole
window (the detector has accepted the new level), or when the series has no point in the
window. A point back inside the range of an anomaly that closed within the window is that
anomaly's end, not a new one (a detector that has learnt the shifted level scores the
return high, too).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, text
from sqlalchemy.orm import Session

from atom.store.models import Alert, AlertRule, MetricPoint, MetricSeries


@dataclass(frozen=True)
class Verdict:
    """One series' state for one rule."""

    subject: str
    """The series id."""
    workflow_id: uuid.UUID | None
    open: bool
    score: float | None
    """The anomalous point's score (opening), or the latest point's (open or closing)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Opening: the series and the anomalous point; otherwise the latest point (``last``)."""


def _selector(rule: AlertRule) -> Any:
    """The rule's series: the tenant's own matching ones, or the platform's queues when the
    selector names kind queue_depth."""
    selector = rule.series or {}
    kind = selector.get("kind")
    owner = MetricSeries.tenant_id == rule.tenant_id
    if kind == "queue_depth":
        owner = or_(owner, MetricSeries.tenant_id.is_(None))
    where = [owner]
    if kind:
        where.append(MetricSeries.kind == kind)
    if selector.get("workflow_id"):
        where.append(MetricSeries.workflow_id == uuid.UUID(selector["workflow_id"]))
    if selector.get("name"):
        where.append(MetricSeries.name == selector["name"])
    return and_(*where)


def _iso(value: datetime) -> str:
    return value.isoformat()


def _series_doc(series: MetricSeries) -> dict[str, Any]:
    return {
        "id": str(series.id),
        "kind": series.kind,
        "name": series.name,
        "workflow_id": str(series.workflow_id) if series.workflow_id else None,
        "unit": series.unit,
    }


def _point_doc(point: MetricPoint) -> dict[str, Any]:
    return {
        "at": _iso(point.at),
        "value": point.value,
        "score": point.score,
        "expected": [point.expected_low, point.expected_high]
        if point.expected_low is not None and point.expected_high is not None
        else None,
    }


def _within(value: float, band: Any) -> bool:
    return isinstance(band, list) and len(band) == 2 and band[0] <= value <= band[1]


def _still_open(
    session: Session, rule: AlertRule, alert: Alert, at: datetime, window: timedelta
) -> Verdict:
    details = dict(alert.details or {})
    series_id = uuid.UUID(alert.subject)
    scored = (MetricPoint.series_id == series_id, MetricPoint.scored_at.is_not(None))
    latest = session.scalar(
        select(MetricPoint)
        .where(*scored)
        .order_by(MetricPoint.at.desc(), MetricPoint.id.desc())
        .limit(1)
    )
    if latest is None or latest.at < at - window:
        return Verdict(alert.subject, alert.workflow_id, False, None, details)
    details["last"] = _point_doc(latest)
    details["through"] = _iso(max(latest.at, datetime.fromisoformat(details["through"])))
    if _within(latest.value, details.get("expected")):
        return Verdict(alert.subject, alert.workflow_id, False, latest.score, details)
    if details.get("expected") is None and (latest.score or 0.0) < rule.threshold:
        return Verdict(alert.subject, alert.workflow_id, False, latest.score, details)
    last_high = session.scalar(
        select(func.max(MetricPoint.at)).where(*scored, MetricPoint.score >= rule.threshold)
    )
    accepted = last_high is None or latest.at - last_high >= window
    return Verdict(alert.subject, alert.workflow_id, not accepted, latest.score, details)


_OPENING = text("""
    SELECT DISTINCT ON (p.series_id) p.id
    FROM metric_points p
    LEFT JOIN LATERAL (
        SELECT a.details, a.resolved_at FROM alerts a
        WHERE a.rule_id = :rule AND a.subject = p.series_id::text
        ORDER BY a.fired_at DESC LIMIT 1
    ) last ON true
    WHERE p.series_id = ANY(:series) AND p.scored_at IS NOT NULL
      AND p.score >= :threshold AND p.at > :since
      AND (last.details IS NULL OR p.at > (last.details->>'through')::timestamptz)
      AND NOT (
          last.resolved_at IS NOT NULL AND last.resolved_at > :since
          AND jsonb_typeof(last.details->'expected') = 'array'
          AND p.value BETWEEN (last.details->'expected'->>0)::float
                          AND (last.details->'expected'->>1)::float
      )
    ORDER BY p.series_id, p.at, p.id
""")


def verdicts(
    session: Session,
    rule: AlertRule,
    firing: dict[str, Alert],
    at: datetime,
    window: timedelta,
) -> list[Verdict]:
    """Every matched series with an open (or closing) anomaly for ``rule``; ``firing`` holds
    the rule's firing alerts by subject."""
    found = [_still_open(session, rule, alert, at, window) for alert in firing.values()]
    series = {
        s.id: s
        for s in session.scalars(select(MetricSeries).where(_selector(rule)))
        if str(s.id) not in firing
    }
    if not series:
        return found
    ids = list(
        session.scalars(
            _OPENING,
            {
                "rule": rule.id,
                "series": list(series),
                "threshold": rule.threshold,
                "since": at - window,
            },
        )
    )
    if not ids:
        return found
    for point in session.scalars(select(MetricPoint).where(MetricPoint.id.in_(ids))):
        owner = series[point.series_id]
        latest_at = session.scalar(
            select(func.max(MetricPoint.at)).where(
                MetricPoint.series_id == owner.id, MetricPoint.scored_at.is_not(None)
            )
        )
        details = {
            "series": _series_doc(owner),
            **_point_doc(point),
            "through": _iso(latest_at or point.at),
        }
        found.append(Verdict(str(owner.id), owner.workflow_id, True, point.score, details))
    return found
