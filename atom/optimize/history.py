"""Figures measured on a workflow's real runs: per step (durations, failures by kind,
retries) and per run (duration percentiles, success rate). Tenant-scoped reads."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from atom.actions.http_cache import HIT_HEADER
from atom.optimize.estimates import HOP_OVERHEAD_MS, calls_per_attempt
from atom.optimize.figures import Figures, StepFigures, percentile
from atom.statuses import ExecutionStatus, StepStatus
from atom.store.models import Execution, StepRun
from atom.troubleshoot.categories import TRANSIENT, Category
from atom.troubleshoot.classify import classify, status_category
from atom.workflow.definition import Definition, NodeType

RUNS_READ = 200
"""The newest finished runs a history reads."""
FINISHED = (ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED)


@dataclass(frozen=True)
class History:
    """What the runs of one workflow showed."""

    runs: int
    """Finished runs read (any version)."""
    steps: dict[str, StepFigures] = field(default_factory=dict)
    overhead_ms: float = HOP_OVERHEAD_MS
    overhead_source: str = "estimate"
    run_interval_s: float | None = None
    """Median seconds between one run's start and the next's (None: fewer than two runs)."""


def _ms(step: Any) -> float | None:
    if step.started_at is None or step.finished_at is None:
        return None
    return (step.finished_at - step.started_at).total_seconds() * 1000


def _category(step: StepRun) -> Category:
    error = step.error if isinstance(step.error, dict) else {}
    if error.get("type") == "TimeoutError":
        return Category.TIMEOUT
    status = step.output.get("status_code") if isinstance(step.output, dict) else None
    if isinstance(status, int) and (found := status_category(status)) is not None:
        return found
    return classify(str(error.get("message", ""))).category


def finished_runs(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    version: int | None = None,
    limit: int = RUNS_READ,
) -> list[Execution]:
    """The newest finished runs of the workflow (of one version, if given)."""
    query = select(Execution).where(
        Execution.tenant_id == tenant_id,
        Execution.workflow_id == workflow_id,
        Execution.status.in_(FINISHED),
        Execution.finished_at.is_not(None),
    )
    if version is not None:
        query = query.where(Execution.workflow_version == version)
    return list(session.scalars(query.order_by(Execution.finished_at.desc()).limit(limit)))


def run_figures(runs: list[Execution]) -> dict[str, Any] | None:
    """``{runs, duration_p50_ms, duration_p95_ms, success_rate}`` of finished runs (durations
    of the succeeded ones), or None without runs."""
    if not runs:
        return None
    durations = [
        (r.finished_at - r.started_at).total_seconds() * 1000
        for r in runs
        if r.status == ExecutionStatus.SUCCEEDED and r.started_at and r.finished_at
    ]
    succeeded = sum(1 for r in runs if r.status == ExecutionStatus.SUCCEEDED)
    figures = Figures(
        duration_p50_ms=percentile(durations, 0.5) if durations else None,
        duration_p95_ms=percentile(durations, 0.95) if durations else None,
        calls=None,
        success_rate=succeeded / len(runs),
    )
    return {"runs": len(runs), **figures.as_dict()}


def read(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    definition: Definition,
    version: int,
) -> History:
    """Step figures from the newest finished runs of any version (by node id), and the
    per-step overhead from the runs of ``version``."""
    runs = finished_runs(session, tenant_id, workflow_id)
    if not runs:
        return History(0)
    by_id = {r.id: r for r in runs}
    rows = list(
        session.scalars(
            select(StepRun).where(
                StepRun.tenant_id == tenant_id, StepRun.execution_id.in_(list(by_id))
            )
        )
    )
    nodes = {n.id: n for n in definition.nodes if n.type is not NodeType.TRIGGER}
    per_node: dict[str, list[StepRun]] = {}
    per_run: dict[uuid.UUID, dict[str, StepRun]] = {}
    for row in rows:
        per_run.setdefault(row.execution_id, {})[row.node_id] = row
        if row.node_id in nodes and row.status in (StepStatus.SUCCEEDED, StepStatus.FAILED):
            per_node.setdefault(row.node_id, []).append(row)
    steps = {
        node_id: _step_figures(group, calls_per_attempt(nodes[node_id]))
        for node_id, group in per_node.items()
    }
    same = [r for r in runs if r.workflow_version == version]
    overhead = _overhead(definition, same, per_run)
    return History(
        runs=len(runs),
        steps=steps,
        overhead_ms=overhead if overhead is not None else HOP_OVERHEAD_MS,
        overhead_source="history" if overhead is not None else "estimate",
        run_interval_s=_interval(runs),
    )


def _interval(runs: list[Execution]) -> float | None:
    starts = sorted(r.created_at for r in runs if r.created_at is not None)
    gaps = [(b - a).total_seconds() for a, b in zip(starts, starts[1:], strict=False)]
    return percentile(gaps, 0.5) if gaps else None


def _body_changes(rows: list[StepRun]) -> tuple[int, int, float]:
    """(succeeded runs compared, times the body changed from one to the next, their span s)."""
    done = sorted(
        (
            (r.finished_at, r.output.get("body") if isinstance(r.output, dict) else r.output)
            for r in rows
            if r.status == StepStatus.SUCCEEDED and r.finished_at is not None
        ),
        key=lambda pair: pair[0],
    )
    bodies = [json.dumps(body, sort_keys=True, default=str) for _, body in done]
    changes = sum(1 for a, b in zip(bodies, bodies[1:], strict=False) if a != b)
    span = (done[-1][0] - done[0][0]).total_seconds() if len(done) > 1 else 0.0
    return len(done), changes, span


def _cache_hit(step: StepRun) -> bool:
    headers = step.output.get("headers") if isinstance(step.output, dict) else None
    return isinstance(headers, dict) and headers.get(HIT_HEADER) == "hit"


def _step_figures(rows: list[StepRun], calls: float) -> StepFigures:
    first_try = [d for r in rows if r.attempts <= 1 and (d := _ms(r)) is not None]
    durations = first_try or [d for r in rows if (d := _ms(r)) is not None] or [0.0]
    attempts = sum(max(1, r.attempts) for r in rows)
    succeeded = sum(1 for r in rows if r.status == StepStatus.SUCCEEDED)
    failures: Counter[str] = Counter()
    transient = 0
    wasted: Counter[int] = Counter()
    for r in rows:
        if r.status == StepStatus.SUCCEEDED:
            # It was retried: the earlier attempts failed on something a retry got past.
            transient += max(0, r.attempts - 1)
            continue
        category = _category(r)
        failures[category.value] += max(1, r.attempts)
        if category in TRANSIENT:
            transient += max(1, r.attempts)
        status = r.output.get("status_code") if isinstance(r.output, dict) else None
        if r.attempts > 1 and category not in TRANSIENT and isinstance(status, int):
            wasted[status] += r.attempts - 1
    outputs, changes, span = _body_changes(rows)
    hits = sum(1 for r in rows if _cache_hit(r))
    if attempts:
        calls *= (attempts - hits) / attempts  # an answer from the cache called nothing
    return StepFigures(
        p50_ms=percentile(durations, 0.5),
        p95_ms=percentile(durations, 0.95),
        p99_ms=percentile(durations, 0.99),
        success=succeeded / attempts if attempts else 1.0,
        calls=calls,
        source="history",
        samples=len(rows),
        attempts=attempts,
        failures=dict(failures),
        transient_failures=transient,
        wasted_retries=dict(wasted),
        outputs=outputs,
        output_changes=changes,
        output_span_s=span,
    )


def _overhead(
    definition: Definition, runs: list[Execution], per_run: dict[uuid.UUID, dict[str, StepRun]]
) -> float | None:
    """Median per-step overhead (ms) of the succeeded runs: the run's duration minus its
    critical path of step durations, spread over the steps of that path (plus finalize)."""
    graph = definition.graph()
    order = graph.topological_order()
    found: list[float] = []
    for run in runs:
        steps = per_run.get(run.id, {})
        if run.status != ExecutionStatus.SUCCEEDED or not run.started_at or not run.finished_at:
            continue
        length: dict[str, tuple[float, int]] = {}
        for v in order:
            own = 0.0 if v == definition.trigger.id else (_ms(steps[v]) if v in steps else None)
            if own is None:
                own = 0.0
            hops = 0 if v == definition.trigger.id else 1
            before = max((length[p] for p in graph.predecessors[v]), default=(0.0, 0))
            length[v] = (before[0] + own, before[1] + hops)
        path, hops = max(length.values())
        total = (run.finished_at - run.started_at).total_seconds() * 1000
        found.append(max(0.0, total - path) / (hops + 1))
    return percentile(found, 0.5) if found else None
