"""Webhooks (``/api/workflows/{id}/webhook``, ``/api/hooks/{token}``) and events
(``/api/events``)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask import request, url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from api import guard
from api.context import (
    check_workflow,
    principal,
    refuse_when_saturated,
    require,
    session,
    state,
    tenant_id,
)
from api.schemas import ExecutionSchema
from atom.errors import InvalidInput, Problem
from atom.ml import behaviour
from atom.runs import engine, runner, triggers
from atom.security import permissions
from atom.security.auth import Role

blp = Blueprint(
    "triggers", __name__, url_prefix="/api", description="Start workflows from webhooks and events."
)


class WebhookSchema(Schema):
    """A webhook token (shown once) and the URL to post to."""

    id = fields.UUID(
        metadata={"description": "the webhook's id: stays across rotations; audit entries name it"}
    )
    token = fields.String()
    url = fields.String()


class EventInSchema(Schema):
    """An event: its type and payload (the started runs' input)."""

    type = fields.String(required=True, validate=validate.Length(min=1, max=200))
    payload = fields.Raw(load_default=dict)
    user_id = fields.Raw(load_default=None, metadata={"description": "kept for predictions"})
    userId = fields.Raw(load_default=None, metadata={"description": "AuraOS spelling"})
    timestamp = fields.AwareDateTime(
        load_default=None, metadata={"description": "when it happened (default: now)"}
    )


class EventOutSchema(Schema):
    """The runs an event started."""

    event_id = fields.String()
    executions = fields.List(fields.Nested(ExecutionSchema))


@blp.route("/workflows/<uuid:workflow_id>/webhook")
class WorkflowWebhook(MethodView):
    """A workflow's webhook."""

    @require(Role.EDITOR)
    @blp.response(201, WebhookSchema)
    def post(self, workflow_id: uuid.UUID):
        """Create the webhook, or rotate its token: the old token stops working at once.

        The token lets anyone holding it run the workflow, so making one needs ``edit`` and
        ``run`` on it (``metadata.permissions``)."""
        check_workflow(workflow_id, "edit", "run")
        db = session()
        webhook_id, token = triggers.set_webhook(db, tenant_id(), workflow_id)
        db.commit()
        url = url_for("triggers.Hook", token=token, _external=True)
        return {"id": webhook_id, "token": token, "url": url}

    @require(Role.EDITOR)
    @blp.response(204)
    def delete(self, workflow_id: uuid.UUID):
        """Remove the webhook."""
        db = session()
        triggers.delete_webhook(db, tenant_id(), workflow_id)
        db.commit()


@blp.route("/hooks/<string:token>")
class Hook(MethodView):
    """The public end of a webhook: no API key, the token is the secret."""

    @blp.response(202, ExecutionSchema)
    @blp.alt_response(413, description="Body over ATOM_WEBHOOK_MAX_BYTES")
    @blp.alt_response(429, description="Too many steps waiting for a worker; see Retry-After")
    def post(self, token: str):
        """Start the workflow; the JSON body becomes the execution's input.

        The token is the capability: no key is asked. A workflow whose
        ``metadata.permissions.run`` is set must list ``webhook`` there, or deliveries get
        403. Every delivery to a live webhook is in the audit log as ``webhook.deliver``."""
        app_state = state()
        db = session()
        workflow = triggers.workflow_for_token(db, token)
        permissions.check(db, workflow.tenant_id, workflow.id, permissions.WEBHOOK, "run")
        db.rollback()
        raw = request.get_data(cache=False)
        try:
            body = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as e:  # the input guard answers first; kept as a backstop
            guard.not_json(e)
        except ValueError as e:
            raise InvalidInput([Problem("body", f"cannot be read: {e}")]) from e
        refuse_when_saturated()  # after the token check: an unknown token stays a 404
        execution = runner.start_execution(
            app_state.factory,
            app_state.celery,
            workflow.tenant_id,
            workflow.id,
            body,
            {"kind": "webhook"},
        )
        return engine.execution_view(execution)


@blp.route("/events")
class Events(MethodView):
    """Events from the caller's systems."""

    @require(Role.OPERATOR)
    @blp.arguments(EventInSchema)
    @blp.response(202, EventOutSchema)
    @blp.alt_response(429, description="Too many steps waiting for a worker; see Retry-After")
    def post(self, event: dict[str, Any]):
        """Start every workflow of this tenant whose trigger is this event type."""
        db = session()
        matching = triggers.workflows_for_event(db, tenant_id(), event["type"], principal())
        if matching:
            refuse_when_saturated()
        user = behaviour.user_of(event)
        if user is not None:  # the history of user-behaviour predictions (atom.ml)
            behaviour.record(db, tenant_id(), user, event["type"], event["timestamp"])
            db.commit()
        db.rollback()
        event_id = str(uuid.uuid4())
        app_state = state()
        started = [
            runner.start_execution(
                app_state.factory,
                app_state.celery,
                tenant_id(),
                wf.id,
                event["payload"],
                triggers.event_trigger(event["type"], event_id),
            )
            for wf in matching
        ]
        return {"event_id": event_id, "executions": [engine.execution_view(e) for e in started]}
