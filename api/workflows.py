"""/api/workflows: create, list, get, update (new version), delete, validate, plan, execute."""

from __future__ import annotations

import uuid
from typing import Any

from flask import request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from api.context import (
    page_of,
    principal,
    refuse_when_saturated,
    require,
    session,
    state,
    tenant_id,
)
from api.schemas import (
    DefinitionSchema,
    ExecuteSchema,
    ExecutionSchema,
    PlanSchema,
    ValidationResultSchema,
    WorkflowListArgs,
    WorkflowSchema,
)
from atom.errors import InvalidInput
from atom.runs import engine, runner
from atom.security import permissions
from atom.security.auth import Role
from atom.store import workflows
from atom.store.models import Workflow

blp = Blueprint(
    "workflows",
    __name__,
    url_prefix="/api/workflows",
    description="Workflow definitions, their versions and plans.",
)


@blp.route("")
class WorkflowCollection(MethodView):
    """The tenant's workflows."""

    @require(Role.VIEWER)
    @blp.arguments(WorkflowListArgs, location="query")
    @blp.response(200, WorkflowSchema(many=True))
    @blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, args: dict[str, Any], pagination_parameters: Any):
        """List workflows, newest first (``?name=`` filters by part of the name)."""
        db = session()
        query = permissions.restrict(
            workflows.list_query(tenant_id(), args.get("name")),
            Workflow.id,
            tenant_id(),
            principal(),
        )
        page = page_of(db, query, pagination_parameters)
        versions = workflows.versions_of(db, page)
        return [workflows.workflow_view(w, versions.get(w.id)) for w in page]

    @require(Role.EDITOR)
    @blp.arguments(DefinitionSchema)
    @blp.response(201, WorkflowSchema)
    def post(self, document: dict[str, Any]):
        """Create a workflow from a definition; 422 lists every problem."""
        db = session()
        allowlist = state().settings.http_allowlist
        workflow, version = workflows.create_workflow(db, tenant_id(), document, allowlist)
        db.commit()
        location = url_for("workflows.WorkflowItem", workflow_id=workflow.id)
        return workflows.workflow_view(workflow, version), 201, {"Location": location}


@blp.route("/validate")
class WorkflowValidation(MethodView):
    """Validation without saving."""

    @require(Role.VIEWER)
    @blp.arguments(DefinitionSchema)
    @blp.response(200, ValidationResultSchema)
    def post(self, document: dict[str, Any]):
        """Validate and compile a definition: 200 with the plan, or 422 with every problem."""
        _definition, plan = workflows.validate(document, state().settings.http_allowlist)
        return {"valid": True, "plan": plan}


@blp.route("/<uuid:workflow_id>")
class WorkflowItem(MethodView):
    """One workflow."""

    @require(Role.VIEWER)
    @blp.response(200, WorkflowSchema)
    def get(self, workflow_id: uuid.UUID):
        """The workflow with its current definition."""
        db = session()
        workflow = workflows.get_workflow(db, tenant_id(), workflow_id)
        return workflows.workflow_view(workflow, workflows.get_version(db, workflow))

    @require(Role.EDITOR)
    @blp.arguments(DefinitionSchema)
    @blp.response(200, WorkflowSchema)
    def put(self, document: dict[str, Any], workflow_id: uuid.UUID):
        """Store a new version; running executions keep the version they started on."""
        db = session()
        allowlist = state().settings.http_allowlist
        workflow, version = workflows.update_workflow(
            db, tenant_id(), workflow_id, document, allowlist
        )
        db.commit()
        return workflows.workflow_view(workflow, version)

    @require(Role.EDITOR)
    @blp.response(204)
    def delete(self, workflow_id: uuid.UUID):
        """Soft delete; executions stay readable."""
        db = session()
        workflows.delete_workflow(db, tenant_id(), workflow_id)
        db.commit()


@blp.route("/<uuid:workflow_id>/plan")
class WorkflowPlan(MethodView):
    """The compiled canvas of the current version."""

    @require(Role.VIEWER)
    @blp.response(200, PlanSchema)
    def get(self, workflow_id: uuid.UUID):
        """The chain/chord/step tree, and the barriers the compiler added (if any)."""
        db = session()
        workflow = workflows.get_workflow(db, tenant_id(), workflow_id)
        version = workflows.get_version(db, workflow)
        return {"workflow_id": workflow.id, "version": version.version, **version.plan}


def _idempotency_key() -> str | None:
    """The request's ``Idempotency-Key`` header: up to 200 printable ASCII characters."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 200 or not all(" " < c <= "~" for c in key):
        raise InvalidInput({"Idempotency-Key": ["must be 1 to 200 printable ASCII characters"]})
    return key


@blp.route("/<uuid:workflow_id>/execute")
class WorkflowExecute(MethodView):
    """Runs of a workflow, whatever its trigger kind."""

    @require(Role.OPERATOR)
    @blp.arguments(ExecuteSchema)
    @blp.response(202, ExecutionSchema)
    @blp.alt_response(429, description="Too many steps waiting for a worker; see Retry-After")
    def post(self, body: dict[str, Any], workflow_id: uuid.UUID):
        """Start an execution; ``input`` is what templates see as ``input``."""
        refuse_when_saturated()
        app_state = state()
        execution = runner.start_execution(
            app_state.factory,
            app_state.celery,
            tenant_id(),
            workflow_id,
            body.get("input") or {},
            {"kind": "api"},
            idempotency_key=_idempotency_key(),
        )
        db = session()
        execution = engine.get_execution(db, tenant_id(), execution.id)
        view = engine.execution_view(execution, engine.steps_of(db, execution))
        location = url_for("executions.ExecutionItem", execution_id=execution.id)
        return view, 202, {"Location": location}
