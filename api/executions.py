"""/api/executions: the state of runs and of every step."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import func, select

from api.context import require, session, tenant_id
from api.schemas import ExecutionListArgs, ExecutionSchema
from atom import engine
from atom.auth import Role
from atom.models import Execution

blp = Blueprint("executions", __name__, url_prefix="/api/executions",
                description="Runs of workflows and their steps.")


@blp.route("")
class ExecutionCollection(MethodView):
    """The tenant's executions."""

    @require(Role.VIEWER)
    @blp.arguments(ExecutionListArgs, location="query")
    @blp.response(200, ExecutionSchema(many=True))
    @blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, args: dict[str, Any], pagination_parameters: Any):
        """List executions, newest first (``?workflow_id=&status=``), without their steps."""
        db = session()
        query = select(Execution).where(Execution.tenant_id == tenant_id())
        if "workflow_id" in args:
            query = query.where(Execution.workflow_id == args["workflow_id"])
        if "status" in args:
            query = query.where(Execution.status == args["status"])
        pagination_parameters.item_count = db.scalar(
            select(func.count()).select_from(query.subquery()))
        rows = db.scalars(query.order_by(Execution.created_at.desc(), Execution.id)
                          .offset(pagination_parameters.first_item)
                          .limit(pagination_parameters.page_size))
        return [engine.execution_view(e) for e in rows]


@blp.route("/<uuid:execution_id>")
class ExecutionItem(MethodView):
    """One execution."""

    @require(Role.VIEWER)
    @blp.response(200, ExecutionSchema)
    def get(self, execution_id: uuid.UUID):
        """The run and every step: status, attempts, timing, output, error."""
        db = session()
        execution = engine.get_execution(db, tenant_id(), execution_id)
        definition = engine.load_definition(db, execution.version_id)
        return engine.execution_view(execution, engine.steps_of(db, execution), definition)
