"""Metric series and their points: record custom metrics, read a series back, prune.

A series is named by its key: tenant (or ``platform``), kind, workflow and name. Points carry
their anomaly score, and the range the detector expected, once the scoring pass
(``atom.anomaly.scoring``) has sent them to the ML pool.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from atom.clock import now
from atom.errors import InvalidInput, NotFound
from atom.store.models import MetricPoint, MetricSeries, Workflow

PRUNE_BATCH = 10_000


def series_key(
    tenant_id: uuid.UUID | None, kind: str, workflow_id: uuid.UUID | None, name: str
) -> str:
    """The unique key of a series."""
    return f"{tenant_id or 'platform'}|{kind}|{workflow_id or ''}|{name}"


def ensure_series(
    session: Session,
    tenant_id: uuid.UUID | None,
    kind: str,
    workflow_id: uuid.UUID | None,
    name: str,
    unit: str,
) -> uuid.UUID:
    """The id of the series, made if new (safe against a concurrent maker); its unit is the
    last one recorded."""
    key = series_key(tenant_id, kind, workflow_id, name)
    made = session.execute(
        insert(MetricSeries)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            kind=kind,
            workflow_id=workflow_id,
            name=name,
            key=key,
            unit=unit,
        )
        .on_conflict_do_update(index_elements=[MetricSeries.key], set_={"unit": unit})
        .returning(MetricSeries.id)
    )
    return made.scalar_one()


def add_points(
    session: Session,
    series_id: uuid.UUID,
    tenant_id: uuid.UUID | None,
    points: Iterable[tuple[datetime, float]],
) -> int:
    """Append points to a series; how many."""
    points_list = list(points)
    rows = [
        {"series_id": series_id, "tenant_id": tenant_id, "at": at, "value": float(value)}
        for at, value in points_list
    ]
    if not rows:
        return 0
    session.execute(insert(MetricPoint), rows)
    last = max(at for at, _ in points_list)
    session.execute(
        update(MetricSeries)
        .where(MetricSeries.id == series_id)
        .values(last_point_at=func.greatest(func.coalesce(MetricSeries.last_point_at, last), last))
    )
    return len(rows)


def _check_workflows(session: Session, tenant_id: uuid.UUID, ids: set[uuid.UUID]) -> None:
    if not ids:
        return
    found = set(
        session.scalars(
            select(Workflow.id).where(
                Workflow.tenant_id == tenant_id,
                Workflow.id.in_(ids),
                Workflow.deleted_at.is_(None),
            )
        )
    )
    missing = sorted(str(i) for i in ids - found)
    if missing:
        raise NotFound(f"workflow {missing[0]} not found")


def record(
    session: Session, tenant_id: uuid.UUID, points: list[dict[str, Any]], retention_days: float
) -> list[dict[str, Any]]:
    """Record checked custom points (``validation.MetricPointInSchema``); the stored points.
    A workflow must be the tenant's (else NotFound); a point older than the retention
    is refused (it would be pruned at once)."""
    _check_workflows(session, tenant_id, {p["workflow_id"] for p in points if p["workflow_id"]})
    at_now = now()
    oldest = at_now - timedelta(days=retention_days)
    problems = {}
    for i, point in enumerate(points):
        point["timestamp"] = point["timestamp"] or at_now
        if point["timestamp"] < oldest:
            where = f"points[{i}].timestamp" if len(points) > 1 else "timestamp"
            problems[where] = [f"is older than the retention ({retention_days:g} days)"]
    if problems:
        raise InvalidInput(problems)
    stored = []
    by_series: dict[uuid.UUID, list[tuple[datetime, float]]] = {}
    for point in points:
        series_id = ensure_series(
            session, tenant_id, "custom", point["workflow_id"], point["name"], point["unit"]
        )
        by_series.setdefault(series_id, []).append((point["timestamp"], point["value"]))
        stored.append(
            {
                "series_id": series_id,
                "kind": "custom",
                "name": point["name"],
                "workflow_id": point["workflow_id"],
                "unit": point["unit"],
                "timestamp": point["timestamp"],
                "value": point["value"],
            }
        )
    for series_id, pts in by_series.items():
        add_points(session, series_id, tenant_id, pts)
    session.flush()
    return stored


def visible(tenant_id: uuid.UUID) -> Any:
    """The series a tenant may read: its own, and the platform's queue depths."""
    return or_(MetricSeries.tenant_id == tenant_id, MetricSeries.tenant_id.is_(None))


def series_query(
    session: Session,
    tenant_id: uuid.UUID,
    kind: str | None = None,
    workflow_id: uuid.UUID | None = None,
    name: str | None = None,
) -> Select:
    """The tenant's series, filtered (an unknown or foreign workflow is NotFound)."""
    if workflow_id is not None:
        _check_workflows(session, tenant_id, {workflow_id})
    query = select(MetricSeries).where(visible(tenant_id))
    if kind:
        query = query.where(MetricSeries.kind == kind)
    if workflow_id is not None:
        query = query.where(MetricSeries.workflow_id == workflow_id)
    if name is not None:
        query = query.where(MetricSeries.name == name)
    return query.order_by(MetricSeries.kind, MetricSeries.name, MetricSeries.id)


def points_query(
    session: Session,
    tenant_id: uuid.UUID,
    kind: str,
    name: str | None,
    workflow_id: uuid.UUID | None,
    since: datetime | None,
    until: datetime | None,
    min_score: float | None,
) -> Select:
    """Points of the series named by kind, name and workflow, oldest first; a custom series
    without ``workflow_id`` is the tenant-wide one of that name."""
    if workflow_id is not None:
        _check_workflows(session, tenant_id, {workflow_id})
    series = select(MetricSeries.id).where(visible(tenant_id), MetricSeries.kind == kind)
    if name is not None:
        series = series.where(MetricSeries.name == name)
    if workflow_id is not None or kind == "custom":
        series = series.where(
            MetricSeries.workflow_id == workflow_id
            if workflow_id is not None
            else MetricSeries.workflow_id.is_(None)
        )
    query = (
        select(MetricPoint, MetricSeries)
        .join(MetricSeries, MetricSeries.id == MetricPoint.series_id)
        .where(MetricPoint.series_id.in_(series.scalar_subquery()))
    )
    if since is not None:
        query = query.where(MetricPoint.at >= since)
    if until is not None:
        query = query.where(MetricPoint.at < until)
    if min_score is not None:
        query = query.where(MetricPoint.score >= min_score)
    return query.order_by(MetricPoint.at, MetricPoint.id)


def point_view(point: MetricPoint, series: MetricSeries) -> dict[str, Any]:
    """A point as the API shows it."""
    expected = (
        [point.expected_low, point.expected_high]
        if point.expected_low is not None and point.expected_high is not None
        else None
    )
    return {
        "id": point.id,
        "series_id": series.id,
        "kind": series.kind,
        "name": series.name,
        "workflow_id": series.workflow_id,
        "unit": series.unit,
        "timestamp": point.at,
        "value": point.value,
        "scored": point.scored_at is not None,
        "score": point.score,
        "expected": expected,
    }


def series_view(series: MetricSeries) -> dict[str, Any]:
    """A series as the API shows it."""
    return {
        "id": series.id,
        "kind": series.kind,
        "name": series.name,
        "workflow_id": series.workflow_id,
        "unit": series.unit,
        "platform": series.tenant_id is None,
        "created_at": series.created_at,
        "last_point_at": series.last_point_at,
    }


def prune(factory: sessionmaker[Session], retention_days: float) -> dict[str, int]:
    """Delete points older than the retention (in batches), then the series left empty
    whose last point is that old too."""
    cutoff = now() - timedelta(days=retention_days)
    points = 0
    while True:
        with factory.begin() as session:
            batch = (
                select(MetricPoint.id)
                .where(MetricPoint.at < cutoff)
                .limit(PRUNE_BATCH)
                .scalar_subquery()
            )
            deleted = session.execute(delete(MetricPoint).where(MetricPoint.id.in_(batch)))
            count = deleted.rowcount  # type: ignore[attr-defined]
        points += count
        if count < PRUNE_BATCH:
            break
    with factory.begin() as session:
        empty = session.execute(
            delete(MetricSeries).where(
                or_(MetricSeries.last_point_at.is_(None), MetricSeries.last_point_at < cutoff),
                MetricSeries.created_at < cutoff,
                ~select(MetricPoint.id).where(MetricPoint.series_id == MetricSeries.id).exists(),
            )
        )
        series = empty.rowcount  # type: ignore[attr-defined]
    return {"points": points, "series": series}
