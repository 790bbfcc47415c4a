"""Run statistics computed in PostgreSQL, and the window they cover.

Statistics are tenant-scoped (every query filters by ``tenant_id``). In a window:
- ``executions.by_status`` counts the executions *created* in it, by their current status;
- ``success_rate`` and ``duration_ms`` cover the executions that *finished* in it
  (succeeded or failed): success rate = succeeded / (succeeded + failed), durations from
  start to finish, percentiles by ``percentile_cont`` in SQL.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from atom.clock import now
from atom.statuses import ExecutionStatus
from atom.store.models import Workflow

logger = logging.getLogger(__name__)

BASELINE = timedelta(days=7)
"""A workflow's latency baseline: its runs in this period before the window."""
MIN_BASELINE_RUNS = 5
MAX_WINDOW = timedelta(days=30)
WINDOW_RE = re.compile(r"^\s*(\d{1,7})\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(value: str) -> timedelta:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"7d"`` as a timedelta; ValueError if malformed or
    outside 1 s .. 30 d."""
    match = WINDOW_RE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a window: use a number and s, m, h or d, like 5m")
    window = timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    if not timedelta(seconds=1) <= window <= MAX_WINDOW:
        raise ValueError(f"{value!r} is outside 1s .. 30d")
    return window


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
           count(*) FILTER (WHERE e.status = :succeeded) AS succeeded,
           count(*) FILTER (WHERE e.status = :failed) AS failed,
           count(*) FILTER (WHERE e.status = :cancelled) AS cancelled,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {_DURATION})
               FILTER (WHERE e.status IN (:succeeded, :failed) AND e.started_at IS NOT NULL)
               AS pct
    FROM executions e
    WHERE e.tenant_id = :tenant AND e.finished_at >= :since AND e.finished_at < :until
      {{where}}
    {{group_by}}
"""


_OUTCOMES = {
    "succeeded": ExecutionStatus.SUCCEEDED.value,
    "failed": ExecutionStatus.FAILED.value,
    "cancelled": ExecutionStatus.CANCELLED.value,
}
"""The statuses ``_FINISHED_STATS`` counts, bound as parameters (no literals in the SQL)."""


def _stats(row: Any) -> RunStats:
    pct = row.pct or [None, None, None]
    return RunStats(int(row.succeeded), int(row.failed), int(row.cancelled), *pct)


_VISIBLE = "AND e.workflow_id = ANY(CAST(:visible AS uuid[]))"
"""Only the workflows a key may view (``metadata.permissions``), when ``visible`` is given."""


def run_stats(
    session: Session,
    tenant_id: uuid.UUID,
    since: datetime,
    until: datetime,
    workflow_id: uuid.UUID | None = None,
    visible: list[str] | None = None,
) -> RunStats:
    """Counts and duration percentiles of the executions that finished in [since, until)
    (of one workflow, or of the ``visible`` ones, when given)."""
    where = "AND e.workflow_id = :workflow" if workflow_id else ""
    if visible is not None:
        where += " " + _VISIBLE
    row = session.execute(
        text(_FINISHED_STATS.format(group="", where=where, group_by="")),
        {
            "tenant": tenant_id,
            "since": since,
            "until": until,
            "workflow": workflow_id,
            "visible": visible,
            **_OUTCOMES,
        },
    ).one()
    return _stats(row)


def run_stats_by_workflow(
    session: Session,
    tenant_id: uuid.UUID,
    since: datetime,
    until: datetime,
    visible: list[str] | None = None,
) -> dict[uuid.UUID, RunStats]:
    """``run_stats`` for every workflow (of the ``visible`` ones, when given) with runs that
    finished in [since, until)."""
    rows = session.execute(
        text(
            _FINISHED_STATS.format(
                group="e.workflow_id,",
                where=_VISIBLE if visible is not None else "",
                group_by="GROUP BY e.workflow_id",
            )
        ),
        {"tenant": tenant_id, "since": since, "until": until, "visible": visible, **_OUTCOMES},
    )
    return {row.workflow_id: _stats(row) for row in rows}


def created_by_status(
    session: Session, tenant_id: uuid.UUID, since: datetime, visible: list[str] | None = None
) -> dict[tuple[uuid.UUID, str], int]:
    """Executions created since ``since`` (of the ``visible`` workflows, when given), counted
    by (workflow, current status)."""
    where = _VISIBLE if visible is not None else ""
    rows = session.execute(
        text(
            "SELECT e.workflow_id, e.status, count(*) AS n FROM executions e "
            f"WHERE e.tenant_id = :tenant AND e.created_at >= :since {where} "
            "GROUP BY e.workflow_id, e.status"
        ),
        {"tenant": tenant_id, "since": since, "visible": visible},
    )
    return {(row.workflow_id, row.status): int(row.n) for row in rows}


STATUSES = tuple(ExecutionStatus)


def window_metrics(
    session: Session,
    tenant_id: uuid.UUID,
    window: timedelta,
    max_workflows: int = 100,
    visible: list[str] | None = None,
) -> dict[str, Any]:
    """The tenant's run statistics over the last ``window`` (see the module docstring); with
    ``visible``, only those workflows' runs count (a key that may not view a workflow sees
    none of its figures)."""
    until = now()
    since = until - window
    created = created_by_status(session, tenant_id, since, visible)
    overall = run_stats(session, tenant_id, since, until, visible=visible)
    per = run_stats_by_workflow(session, tenant_id, since, until, visible)
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
        counts: dict[str, int] = dict.fromkeys((str(s) for s in STATUSES), 0)
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
