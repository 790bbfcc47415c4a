"""/api/workflows/troubleshooting: diagnose a run, list sessions, apply a resolution."""

from __future__ import annotations

import uuid
from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from api.context import check_workflow, page_of, principal, require, session, state, tenant_id
from atom.runs import lifecycle
from atom.security import permissions
from atom.security.auth import Role
from atom.store.models import TroubleshootingSession
from atom.troubleshoot import sessions

blp = Blueprint(
    "troubleshooting",
    __name__,
    url_prefix="/api/workflows/troubleshooting",
    description="Why a run failed, what ATOM did about it, and what to do.",
)


class AnalyzeSchema(Schema):
    """What to diagnose."""

    workflow_id = fields.UUID(required=True)
    execution_id = fields.UUID(
        metadata={"description": "The run; default: the workflow's latest failed run"}
    )
    error_logs = fields.List(
        fields.String(validate=validate.Length(max=sessions.MAX_LOG_LINE)),
        validate=validate.Length(max=sessions.MAX_LOG_LINES),
        metadata={"description": "Lines from your own systems, classified as evidence"},
    )
    auto_resolve = fields.Boolean(
        load_default=False,
        metadata={"description": "Retry a transient cause without a person (bounded)"},
    )


class ApplySchema(Schema):
    """Which issue's resolution to apply."""

    issue = fields.Integer(required=True, validate=validate.Range(min=0, max=10_000))


class SessionListArgs(Schema):
    """Filters for the session list."""

    workflow_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(sessions.STATUSES))


class ResolutionSchema(Schema):
    """What to do about an issue, and what came of it."""

    action = fields.String()
    automatic = fields.Boolean()
    applied = fields.Boolean()
    result = fields.String(allow_none=True)
    description = fields.String()
    wait_s = fields.Float()
    policy = fields.Dict()
    changes = fields.Dict(allow_none=True)


class IssueSchema(Schema):
    """One finding; the first of a session is its root cause."""

    category = fields.String()
    node_id = fields.String(allow_none=True)
    root_cause = fields.Boolean()
    summary = fields.String()
    evidence = fields.List(fields.Dict())
    confidence = fields.Float()
    transient = fields.Boolean()
    resolution = fields.Nested(ResolutionSchema)


class SessionSchema(Schema):
    """A troubleshooting session."""

    id = fields.UUID()
    workflow_id = fields.UUID()
    execution_id = fields.UUID(allow_none=True)
    status = fields.String(validate=validate.OneOf(sessions.STATUSES))
    origin = fields.String(
        metadata={
            "description": "api (a person asked), auto (a failed run), reconciler (a stuck run)"
        }
    )
    auto_resolve = fields.Boolean()
    summary = fields.String()
    issues = fields.List(fields.Nested(IssueSchema))
    logs = fields.List(fields.Dict(), metadata={"description": "[{line, category, confidence}]"})
    decisions = fields.List(fields.Dict())
    auto_retries = fields.Integer()
    created_at = fields.String()
    updated_at = fields.String()
    resolved_at = fields.String(allow_none=True)


@blp.route("/analyze")
class Analyze(MethodView):
    """Open a session."""

    @require(Role.OPERATOR)
    @blp.arguments(AnalyzeSchema)
    @blp.response(201, SessionSchema)
    def post(self, args: dict[str, Any]):
        """Diagnose a run: root cause, effects, evidence, and a resolution for each cause."""
        # reading a run needs view; letting the session retry it needs run
        check_workflow(args["workflow_id"], *(("run",) if args["auto_resolve"] else ()))
        db = session()
        db.info[sessions.SETTINGS] = state().settings
        row, followup = sessions.analyze(
            db,
            tenant_id(),
            args["workflow_id"],
            state().settings,
            execution_id=args.get("execution_id"),
            error_logs=tuple(args.get("error_logs") or ()),
            auto_resolve=args["auto_resolve"],
        )
        db.commit()
        if followup is not None:
            sessions.send(state().celery, followup)
        location = url_for("troubleshooting.SessionItem", session_id=row.id)
        return sessions.view(row), 201, {"Location": location}


@blp.route("/sessions")
class SessionCollection(MethodView):
    """The tenant's sessions."""

    @require(Role.VIEWER)
    @blp.arguments(SessionListArgs, location="query")
    @blp.response(200, SessionSchema(many=True))
    @blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, args: dict[str, Any], pagination_parameters: Any):
        """Sessions, newest first (``?workflow_id=&status=``)."""
        query = permissions.restrict(
            sessions.list_query(tenant_id(), args.get("workflow_id"), args.get("status")),
            TroubleshootingSession.workflow_id,
            tenant_id(),
            principal(),
        )
        return [sessions.view(r) for r in page_of(session(), query, pagination_parameters)]


@blp.route("/sessions/<uuid:session_id>")
class SessionItem(MethodView):
    """One session."""

    @require(Role.VIEWER)
    @blp.response(200, SessionSchema)
    def get(self, session_id: uuid.UUID):
        """The session: issues, resolutions and every decision taken."""
        check_workflow(sessions.get(session(), tenant_id(), session_id).workflow_id)
        return sessions.view(sessions.get(session(), tenant_id(), session_id))


@blp.route("/sessions/<uuid:session_id>/apply")
class SessionApply(MethodView):
    """Apply a resolution."""

    @require(Role.EDITOR)
    @blp.arguments(ApplySchema)
    @blp.response(200, SessionSchema)
    @blp.alt_response(409, description="Nothing to apply (applied already, or not possible now)")
    def post(self, args: dict[str, Any], session_id: uuid.UUID):
        """Apply issue ``issue``'s resolution: a new version, or a retry from the failed step."""
        # a resolution is a new version (edit) or a retry (run)
        check_workflow(sessions.get(session(), tenant_id(), session_id).workflow_id, "edit", "run")
        db = session()
        db.info[sessions.SETTINGS] = state().settings
        row, execution_id = sessions.apply(db, tenant_id(), session_id, args["issue"])
        db.commit()
        if execution_id is not None:
            lifecycle.send_residual(state().factory, state().celery, execution_id)
        return sessions.view(row)
