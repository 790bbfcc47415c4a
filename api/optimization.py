"""/api/workflows/optimization: analyse a workflow, list and read analyses, apply one."""

from __future__ import annotations

import uuid
from typing import Any

from flask import g, url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api.context import (
    check_workflow,
    client_address,
    page_of,
    principal,
    require,
    session,
    state,
    tenant_id,
)
from atom.optimize import results
from atom.optimize.strategies import STRATEGIES
from atom.security import audit, permissions
from atom.security.auth import Role
from atom.store.models import OptimizationResult

blp = Blueprint(
    "optimization",
    __name__,
    url_prefix="/api/workflows/optimization",
    description="Faster, cheaper, more reliable workflows, predicted and then measured.",
)


class OptimizeRequestSchema(Schema):
    """What to analyse: a stored workflow or an inline definition, and how."""

    workflow_id = fields.UUID(metadata={"description": "A stored workflow (its current version)"})
    workflow = fields.Dict(
        metadata={"description": "An inline definition, validated as POST /api/workflows does"}
    )
    strategy = fields.String(required=True, validate=validate.OneOf(STRATEGIES))

    @validates_schema
    def one_subject(self, data: dict[str, Any], **_: Any) -> None:
        """Exactly one of ``workflow_id`` and ``workflow``."""
        given = [k for k in ("workflow_id", "workflow") if k in data]
        if len(given) != 1:
            message = "give exactly one of workflow_id and workflow"
            raise ValidationError({"workflow_id": [message], "workflow": [message]})


def document_exactly_one(api: Any) -> None:
    """Say in the OpenAPI document what ``one_subject`` checks: exactly one of the two."""
    request = api.spec.components.schemas.get("OptimizeRequest")
    if request is not None:
        request["oneOf"] = [{"required": ["workflow_id"]}, {"required": ["workflow"]}]


class OptimizationListArgs(Schema):
    """Filters for the result list."""

    workflow_id = fields.UUID()


class ExpectedFiguresSchema(Schema):
    """A workflow's figures per run."""

    duration_p50_ms = fields.Float(allow_none=True)
    duration_p95_ms = fields.Float(allow_none=True)
    calls = fields.Float(allow_none=True)
    success_rate = fields.Float(allow_none=True)


class OptimizationSuggestionSchema(Schema):
    """One proposed change and its expected effect on the whole workflow."""

    kind = fields.String(
        metadata={
            "description": "parallelize|cache|timeout|retry|fallback|dedupe|batch|"
            "drop_unused|no_retry"
        }
    )
    nodes = fields.List(fields.String())
    rationale = fields.String()
    expected = fields.Nested(ExpectedFiguresSchema)
    changes_behaviour = fields.Boolean()
    applied = fields.Boolean(metadata={"description": "Whether `optimized` includes it"})
    patch = fields.List(
        fields.Dict(),
        metadata={
            "description": "For a change that changes behaviour and that ATOM can make: the "
            "edits, `[{op: set, node, path, value}]`; name its index in `accept` when applying"
        },
    )
    accepted = fields.Boolean(
        metadata={"description": "Made when the result was applied, because `accept` named it"}
    )


class OptimizationResultSchema(Schema):
    """A stored analysis."""

    id = fields.UUID()
    workflow_id = fields.UUID(allow_none=True)
    workflow_version = fields.Integer(allow_none=True)
    strategy = fields.String()
    origin = fields.String(metadata={"description": "api | beat"})
    baseline = fields.Dict()
    suggestions = fields.List(fields.Nested(OptimizationSuggestionSchema))
    optimized = fields.Dict()
    predicted = fields.Dict(
        metadata={
            "description": "{before, after}, each like `expected`; `applied` too when "
            "suggestions were accepted at apply: the figures of the version saved"
        }
    )
    trade_offs = fields.List(fields.String())
    applied_version = fields.Integer(allow_none=True)
    applied_at = fields.String(allow_none=True)
    measured = fields.Dict(
        allow_none=True,
        metadata={"description": "{before, after, runs_after} once the applied version ran"},
    )
    created_at = fields.String()


class ApplyResultSchema(Schema):
    """Which behaviour-changing suggestions to make as well (optional body)."""

    accept = fields.List(
        fields.Integer(validate=validate.Range(min=0, max=1000)),
        load_default=list,
        validate=validate.Length(max=100),
        metadata={
            "description": "Indexes (from 0) in `suggestions` of listed suggestions with a "
            "`patch` to make too; the others are never applied"
        },
    )


class AppliedVersionSchema(Schema):
    """The version ``optimized`` was saved as."""

    workflow_id = fields.UUID()
    version = fields.Integer()


@blp.route("/analyze")
class Analyze(MethodView):
    """Run an analysis."""

    @require(Role.OPERATOR)
    @blp.arguments(OptimizeRequestSchema)
    @blp.response(200, OptimizationResultSchema)
    def post(self, args: dict[str, Any]):
        """Analyse with a strategy: baseline, suggestions, optimized definition, prediction."""
        db = session()
        check_workflow(args.get("workflow_id"))  # its metadata.permissions: view
        row = results.run(
            db,
            tenant_id(),
            state().settings,
            args["strategy"],
            workflow_id=args.get("workflow_id"),
            document=args.get("workflow"),
        )
        db.commit()
        location = url_for("optimization.ResultItem", result_id=row.id)
        return results.view(db, row), 200, {"Location": location}


@blp.route("/results")
class ResultCollection(MethodView):
    """The tenant's analyses."""

    @require(Role.VIEWER)
    @blp.arguments(OptimizationListArgs, location="query")
    @blp.response(200, OptimizationResultSchema(many=True))
    @blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, args: dict[str, Any], pagination_parameters: Any):
        """Analyses, newest first (``?workflow_id=``)."""
        db = session()
        check_workflow(args.get("workflow_id"))
        query = permissions.restrict(
            results.list_query(tenant_id(), args.get("workflow_id")),
            OptimizationResult.workflow_id,
            tenant_id(),
            principal(),
        )
        return [results.view(db, r) for r in page_of(db, query, pagination_parameters)]


@blp.route("/results/<uuid:result_id>")
class ResultItem(MethodView):
    """One analysis."""

    @require(Role.VIEWER)
    @blp.response(200, OptimizationResultSchema)
    def get(self, result_id: uuid.UUID):
        """The analysis, with `measured` once its applied version has run."""
        db = session()
        row = results.get(db, tenant_id(), result_id)
        check_workflow(row.workflow_id)
        return results.view(db, row)


@blp.route("/results/<uuid:result_id>/apply")
class ResultApply(MethodView):
    """Save an analysis's optimized definition as the workflow's new version."""

    @require(Role.EDITOR)
    @blp.arguments(ApplyResultSchema)
    @blp.response(200, AppliedVersionSchema)
    @blp.alt_response(
        409,
        description="The workflow changed since the analysis, it was applied already, or "
        "the analysis was of an inline definition",
    )
    def post(self, args: dict[str, Any], result_id: uuid.UUID):
        """Apply: a new version through the normal update path (version history, audit),
        with the listed suggestions `accept` names made too."""
        db = session()
        # saving a version: the workflow's edit permission
        check_workflow(results.get(db, tenant_id(), result_id).workflow_id, "edit")
        workflow_id, version = results.apply(
            db, tenant_id(), result_id, args["accept"], state().settings
        )
        audit.record(
            db,
            tenant_id=tenant_id(),
            key_id=g.key_id,
            action="workflow.update",
            target_type="workflow",
            target_id=str(workflow_id),
            client=client_address(),
            status=200,
        )
        db.commit()
        return {"workflow_id": workflow_id, "version": version}
