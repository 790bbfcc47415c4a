"""Analyses as rows: run one, list them, measure the applied version, apply one.

Tenant-scoped: every query filters by tenant; another tenant's result is NotFound.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from atom.actions.http_cache import HIT_HEADER
from atom.clock import now
from atom.config import Settings
from atom.errors import Conflict, InvalidInput, NotFound, Problem
from atom.optimize import estimates, history
from atom.optimize.strategies import Context, analyze, apply_patch
from atom.security import vault
from atom.store import workflows as store
from atom.store.models import Execution, OptimizationResult, StepRun
from atom.workflow.definition import Definition

CALL_ACTIONS = ("http_request", "database_query", "email", "decision")


def run(
    session: Session,
    tenant_id: uuid.UUID,
    settings: Settings,
    strategy: str,
    *,
    workflow_id: uuid.UUID | None = None,
    document: dict[str, Any] | None = None,
    origin: str = "api",
) -> OptimizationResult:
    """Analyse a stored workflow (its current version) or an inline definition, and store
    the result (the caller commits)."""
    version: int | None = None
    if workflow_id is not None:
        workflow = store.get_workflow(session, tenant_id, workflow_id)
        version = workflow.version
        definition, _ = store.validate(store.get_version(session, workflow).definition)
        past = history.read(session, tenant_id, workflow_id, definition, version)
        runs = history.finished_runs(session, tenant_id, workflow_id, version)
        measured = history.run_figures(runs) or history.run_figures(
            history.finished_runs(session, tenant_id, workflow_id)
        )
    else:
        definition, _ = store.validate(document)
        vault.check_references(session, tenant_id, list(definition.nodes))
        past, measured = history.History(0), None
    ctx = _context(definition, past, settings)
    analysis = analyze(definition, ctx, strategy)
    row = OptimizationResult(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        workflow_id=workflow_id,
        workflow_version=version,
        strategy=strategy,
        origin=origin,
        baseline=_baseline(definition, ctx, past, measured, analysis.predicted["before"]),
        suggestions=analysis.suggestions,
        optimized=analysis.optimized,
        predicted=analysis.predicted,
        trade_offs=analysis.trade_offs,
        created_at=now(),
    )
    session.add(row)
    session.flush()
    return row


def _context(definition: Definition, past: history.History, settings: Settings) -> Context:
    return Context(
        original=definition,
        measured=past.steps,
        overhead_ms=past.overhead_ms,
        slots=max(1, settings.worker_concurrency),
        step_timeout=settings.step_timeout,
        run_interval_s=past.run_interval_s,
    )


def _baseline(
    definition: Definition,
    ctx: Context,
    past: history.History,
    measured: dict[str, Any] | None,
    predicted: dict[str, Any],
) -> dict[str, Any]:
    figures = ctx.figures(definition)
    steps = {n: f.as_dict() for n, f in figures.items() if n != definition.trigger.id}
    base: dict[str, Any] = {
        "source": "history" if measured else "estimate",
        "runs": measured["runs"] if measured else 0,
        "duration_p50_ms": (measured or predicted)["duration_p50_ms"],
        "duration_p95_ms": (measured or predicted)["duration_p95_ms"],
        "success_rate": (measured or predicted)["success_rate"],
        "calls": predicted["calls"],
        "overhead_ms": round(ctx.overhead_ms, 1),
        "overhead_source": past.overhead_source,
        "worker_slots": ctx.slots,
        "steps": steps,
    }
    if any(f["source"] == "estimate" for f in steps.values()):
        base["estimates"] = estimates.table() | {"overhead_ms": estimates.HOP_OVERHEAD_MS}
    return base


def list_query(tenant_id: uuid.UUID, workflow_id: uuid.UUID | None = None) -> Select:
    """The tenant's results, newest first (optionally of one workflow)."""
    query = select(OptimizationResult).where(OptimizationResult.tenant_id == tenant_id)
    if workflow_id is not None:
        query = query.where(OptimizationResult.workflow_id == workflow_id)
    return query.order_by(OptimizationResult.created_at.desc(), OptimizationResult.id)


def get(session: Session, tenant_id: uuid.UUID, result_id: uuid.UUID) -> OptimizationResult:
    """One of the tenant's results, or NotFound."""
    row = session.scalar(
        select(OptimizationResult).where(
            OptimizationResult.id == result_id, OptimizationResult.tenant_id == tenant_id
        )
    )
    if row is None:
        raise NotFound(f"optimization result {result_id} not found")
    return row


def _calls_per_run(session: Session, runs: list[Execution]) -> float | None:
    """Outside calls per run: the attempts of calling steps, less the last attempt of a step
    the response cache answered (it called nothing)."""
    if not runs:
        return None
    cache = StepRun.output["headers"][HIT_HEADER].as_string()
    rows = session.execute(
        select(StepRun.attempts, cache).where(
            StepRun.tenant_id == runs[0].tenant_id,
            StepRun.execution_id.in_([r.id for r in runs]),
            StepRun.action_type.in_(CALL_ACTIONS),
        )
    )
    calls = sum(attempts - (1 if hit == "hit" else 0) for attempts, hit in rows)
    return round(calls / len(runs), 2)


def measure(session: Session, row: OptimizationResult) -> dict[str, Any] | None:
    """``{before, after, runs_after}`` from real runs of the analysed and the applied
    versions, once the applied version has run (else None)."""
    if row.workflow_id is None or row.applied_version is None:
        return None
    after_runs = history.finished_runs(session, row.tenant_id, row.workflow_id, row.applied_version)
    if not after_runs:
        return None
    before_runs = history.finished_runs(
        session, row.tenant_id, row.workflow_id, row.workflow_version
    )
    before = history.run_figures(before_runs)
    after = history.run_figures(after_runs)
    assert after is not None
    if before is not None:
        before["calls"] = _calls_per_run(session, before_runs)
    after["calls"] = _calls_per_run(session, after_runs)
    return {"before": before, "after": after, "runs_after": len(after_runs)}


def _accepted(row: OptimizationResult, accept: list[int]) -> list[dict[str, Any]]:
    """The suggestions ``accept`` names; InvalidInput lists every index that cannot be."""
    problems = []
    for at, index in enumerate(accept):
        where = f"accept[{at}]"
        if not 0 <= index < len(row.suggestions):
            problems.append(
                Problem(
                    where,
                    f"there is no suggestion {index} (this result has "
                    f"{len(row.suggestions)}, numbered from 0)",
                )
            )
        elif row.suggestions[index].get("applied"):
            problems.append(Problem(where, f"suggestion {index} is applied already"))
        elif not row.suggestions[index].get("patch"):
            problems.append(
                Problem(
                    where,
                    f"suggestion {index} ({row.suggestions[index]['kind']}) has no change "
                    "ATOM can make for you: make it by hand in the definition",
                )
            )
    if len(set(accept)) != len(accept):
        problems.append(Problem("accept", "names a suggestion more than once"))
    if problems:
        raise InvalidInput(problems)
    return [row.suggestions[i] for i in accept]


def apply(
    session: Session,
    tenant_id: uuid.UUID,
    result_id: uuid.UUID,
    accept: list[int] | None = None,
    settings: Settings | None = None,
) -> tuple[uuid.UUID, int]:
    """Save the result's ``optimized`` as its workflow's new version (the normal update
    path), with the behaviour-changing suggestions ``accept`` names (by index) made too;
    Conflict when the workflow changed since the analysis or there is no workflow."""
    row = get(session, tenant_id, result_id)
    if row.workflow_id is None:
        raise Conflict(
            "this analysis was of an inline definition, so there is no workflow to save it "
            "to; create one from its 'optimized' definition with POST /api/workflows"
        )
    workflow = store.get_workflow(session, tenant_id, row.workflow_id, for_update=True)
    if row.applied_version is not None:
        raise Conflict(f"this analysis was applied already, as version {row.applied_version}")
    if workflow.version != row.workflow_version:
        raise Conflict(
            f"the workflow changed since the analysis (version {row.workflow_version} was "
            f"analysed, it is now at version {workflow.version}); analyse it again"
        )
    chosen = _accepted(row, accept or [])
    document = copy.deepcopy(row.optimized)
    for suggestion in chosen:
        try:
            document = apply_patch(document, suggestion["patch"])
        except KeyError as missing:
            raise Conflict(
                f"suggestion {suggestion['kind']} changes node {missing}, which the optimized "
                "definition no longer has"
            ) from None
    _, version = store.update_workflow(session, tenant_id, workflow.id, document)
    if chosen:
        indexes = set(accept or [])
        row.suggestions = [
            s | {"accepted": True} if i in indexes else s for i, s in enumerate(row.suggestions)
        ]
        if settings is not None:
            analysed, _ = store.validate(
                store.get_version(session, workflow, row.workflow_version).definition
            )
            past = history.read(session, tenant_id, workflow.id, analysed, row.workflow_version)
            saved, _ = store.validate(document)
            ctx = _context(analysed, past, settings)
            row.predicted = row.predicted | {"applied": ctx.predict(saved).as_dict()}
    row.applied_version = version.version
    row.applied_at = now()
    session.flush()
    return workflow.id, version.version


def view(session: Session, row: OptimizationResult) -> dict[str, Any]:
    """A result as the API shows it."""
    out: dict[str, Any] = {
        "id": str(row.id),
        "workflow_id": str(row.workflow_id) if row.workflow_id else None,
        "workflow_version": row.workflow_version,
        "strategy": row.strategy,
        "origin": row.origin,
        "baseline": row.baseline,
        "suggestions": row.suggestions,
        "optimized": row.optimized,
        "predicted": row.predicted,
        "applied_version": row.applied_version,
        "applied_at": row.applied_at.isoformat() if row.applied_at else None,
        "measured": measure(session, row),
        "created_at": row.created_at.isoformat() if row.created_at else None,
    }
    if row.trade_offs is not None:
        out["trade_offs"] = row.trade_offs
    return out
