"""Beat's optimizer job: analyse the active workflows (hybrid) and store recommendations.

It never applies anything. A workflow is active when it has finished a run since its last
periodic analysis (or ever, before the first), so an idle workflow is not analysed again
and again. At most ``PER_PASS`` workflows are analysed per pass: those never analysed first
(the most recently run of them first), then the least recently analysed.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from atom.config import Settings
from atom.errors import AtomError
from atom.optimize import results
from atom.statuses import ExecutionStatus
from atom.store.models import Execution, OptimizationResult, Workflow

logger = logging.getLogger("atom.optimize")

PER_PASS = 50


def due(session: Session) -> list[tuple[Any, Any]]:
    """(tenant_id, workflow_id) of live workflows with a run finished since their last
    periodic analysis."""
    last = (
        select(
            OptimizationResult.workflow_id.label("workflow_id"),
            func.max(OptimizationResult.created_at).label("at"),
        )
        .where(OptimizationResult.origin == "beat")
        .group_by(OptimizationResult.workflow_id)
        .subquery()
    )
    latest_run = (
        select(Execution.workflow_id, func.max(Execution.finished_at).label("finished"))
        .where(Execution.status.in_((ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED)))
        .group_by(Execution.workflow_id)
        .subquery()
    )
    query = (
        select(Workflow.tenant_id, Workflow.id)
        .join(latest_run, latest_run.c.workflow_id == Workflow.id)
        .outerjoin(last, last.c.workflow_id == Workflow.id)
        .where(
            Workflow.deleted_at.is_(None),
            (last.c.at.is_(None)) | (latest_run.c.finished > last.c.at),
        )
        .order_by(last.c.at.asc().nulls_first(), latest_run.c.finished.desc())
        .limit(PER_PASS)
    )
    return [(t, w) for t, w in session.execute(query)]


def analyse_active(factory: sessionmaker, settings: Settings) -> dict[str, Any]:
    """One pass: a hybrid analysis of every due workflow, each in its own transaction."""
    if not settings.optimization_enabled:
        return {"enabled": False}
    with factory() as session:
        todo = due(session)
    stored = []
    for tenant_id, workflow_id in todo:
        try:
            with factory.begin() as session:
                row = results.run(
                    session, tenant_id, settings, "hybrid", workflow_id=workflow_id, origin="beat"
                )
                stored.append(str(row.id))
        except AtomError as e:  # a workflow deleted meanwhile, a definition that no longer loads
            logger.warning("optimizer: could not analyse workflow %s: %s", workflow_id, e)
    return {"enabled": True, "analysed": len(stored), "results": stored}
