"""/api/workflows/automation/generate: a workflow from plain English."""

from __future__ import annotations

import threading
import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import g, url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api.context import require, session, state, tenant_id
from atom.catalogue import load
from atom.config import Settings
from atom.errors import Forbidden
from atom.generation import generator
from atom.generation.history import service_usage
from atom.schedules import crud, entry
from atom.security.auth import Role
from atom.store import workflows

blp = Blueprint(
    "generation",
    __name__,
    url_prefix="/api/workflows/automation",
    description="Workflows generated from a request in plain English.",
)


def warm_up(settings: Settings) -> threading.Thread:
    """Load the catalogue and build the generator in the background (about a second of CPU),
    so that the first request does not pay for it."""
    thread = threading.Thread(
        target=generator, args=(settings.catalogue_base_url,), name="atom-generator-warm-up"
    )
    thread.daemon = True
    thread.start()
    return thread


class GenerateContextSchema(Schema):
    """What the generator should know about the user."""

    timezone = fields.String(metadata={"description": "IANA zone for schedules, e.g. Europe/Paris"})
    preferred_services = fields.Raw(
        metadata={
            "description": "Slugs or names, as a list or by kind: "
            '{"email": "outlook", "chat": "teams"}'
        }
    )

    class Meta:
        unknown = "include"

    @validates_schema
    def check(self, data: dict[str, Any], **_: Any) -> None:
        """A real timezone and services that are in the catalogue."""
        errors: dict[str, list[str]] = {}
        zone = data.get("timezone")
        if zone is not None:
            try:
                ZoneInfo(zone)
            except (ZoneInfoNotFoundError, ValueError):
                errors["timezone"] = [f"{zone!r} is not an IANA timezone (e.g. Europe/Paris)"]
        preferred = data.get("preferred_services")
        if preferred is not None:
            problems = _unknown_services(preferred)
            if problems:
                errors["preferred_services"] = problems
        if errors:
            raise ValidationError(errors)


def _unknown_services(preferred: Any) -> list[str]:
    if isinstance(preferred, dict):
        values = [
            v
            for value in preferred.values()
            for v in (value if isinstance(value, list) else [value])
        ]
    elif isinstance(preferred, list):
        values = preferred
    else:
        return ["must be a list of services or an object of kind -> service"]
    catalogue = load()
    known = set(catalogue.services)
    for service in catalogue.services.values():
        known |= {service.name.lower(), *service.aliases}
    return [
        f"{v!r} is not a service in the catalogue (GET /api/services)"
        for v in values
        if not isinstance(v, str) or v.strip().lower() not in known
    ]


class GenerateSchema(Schema):
    """A request in plain English."""

    user_input = fields.String(required=True, validate=validate.Length(min=1, max=4000))
    user_id = fields.String(validate=validate.Length(max=200))
    context = fields.Nested(GenerateContextSchema, load_default=dict)
    enhanced_intelligence = fields.Boolean(load_default=True)
    context_aware = fields.Boolean(load_default=True)
    save = fields.Boolean(load_default=False)


class GeneratedSchema(Schema):
    """The generated workflow and what was understood."""

    workflow = fields.Dict(metadata={"description": "A definition POST /api/workflows accepts"})
    detected = fields.Dict()
    confidence = fields.Float()
    missing = fields.List(fields.Dict())
    pattern = fields.String()
    generation_ms = fields.Float()
    workflow_id = fields.UUID(metadata={"description": "With save: the created workflow"})
    schedule_id = fields.UUID(metadata={"description": "With save and a schedule: its schedule"})


@blp.route("/generate")
class Generate(MethodView):
    """Generation."""

    @require(Role.VIEWER)
    @blp.arguments(GenerateSchema)
    @blp.response(200, GeneratedSchema)
    @blp.alt_response(201, schema=GeneratedSchema, description="Saved (save: true)")
    def post(self, body: dict[str, Any]):
        """A workflow for ``user_input``; ``save: true`` creates it (editor role)."""
        if body["save"] and Role(g.role).rank < Role.EDITOR.rank:
            raise Forbidden(
                f"Saving a generated workflow needs the editor role; the key has {g.role}."
            )
        started = time.perf_counter()
        settings = state().settings
        db = session()
        history = (
            service_usage(db, tenant_id(), load(), settings.catalogue_base_url)
            if body["context_aware"]
            else {}
        )
        result = generator(settings.catalogue_base_url).generate(
            body["user_input"], body["context"], history
        )
        view = result.view()
        view["generation_ms"] = round((time.perf_counter() - started) * 1000, 2)  # with history
        if not body["save"]:
            return view
        workflow, _version = workflows.create_workflow(
            db, tenant_id(), result.workflow, settings.http_allowlist
        )
        view["workflow_id"] = workflow.id
        schedule = result.detected["schedule"]
        created = None
        if schedule:
            created = crud.create_schedule(
                db, tenant_id(), {"workflow_id": workflow.id, **schedule, "enabled": True}
            )
            view["schedule_id"] = created.id
        db.commit()
        if created is not None:
            entry.put_entry(
                state().celery,
                created,
                settings.schedule_misfire_grace,
                entry.resume_point(db, created),
            )
        return view, 201, {"Location": url_for("workflows.WorkflowItem", workflow_id=workflow.id)}
