"""/api/schedules: cron and interval schedules, and the fires they made."""

from __future__ import annotations

import uuid
from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from api.context import check_workflow, page_of, principal, require, session, state, tenant_id
from atom.errors import InvalidInput, NotFound, Problem
from atom.schedules import crud, entry
from atom.schedules.validation import ScheduleInSchema, SchedulePatchSchema
from atom.security import permissions
from atom.security.auth import Role
from atom.statuses import FireStatus, values
from atom.store.models import Schedule

blp = Blueprint(
    "schedules",
    __name__,
    url_prefix="/api/schedules",
    description="Run workflows on a clock: cron in a timezone, or an interval.",
)


class ScheduleSchema(Schema):
    """A schedule, with human text and its next five fire times."""

    id = fields.UUID()
    workflow_id = fields.UUID()
    cron = fields.String(allow_none=True)
    interval_seconds = fields.Integer(allow_none=True)
    timezone = fields.String()
    input = fields.Raw()
    enabled = fields.Boolean()
    overlap = fields.String()
    catchup = fields.Boolean()
    max_catchup = fields.Integer()
    description = fields.String()
    next_runs = fields.List(fields.DateTime())
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class FireSchema(Schema):
    """One fire time: the run it started, or why none did."""

    fire_time = fields.DateTime()
    status = fields.String(validate=validate.OneOf(values(FireStatus)))
    reason = fields.String(allow_none=True)
    source = fields.String(metadata={"description": "beat, sweeper (late) or catchup"})
    execution_id = fields.UUID(allow_none=True)
    recorded_at = fields.DateTime()


class ScheduleListArgs(Schema):
    """Filters."""

    workflow_id = fields.UUID()


def _schedule(schedule_id: uuid.UUID, *kinds: str) -> Schedule:
    """The tenant's schedule, if the request's key may view (and ``kinds``) its workflow:
    404 otherwise, like another tenant's (403 where it may view but not ``kinds``)."""
    schedule = crud.get_schedule(session(), tenant_id(), schedule_id)
    workflow_id = schedule.workflow_id
    check_workflow(workflow_id, *kinds)
    return crud.get_schedule(session(), tenant_id(), schedule_id)


@blp.route("")
class ScheduleCollection(MethodView):
    """The tenant's schedules."""

    @require(Role.VIEWER)
    @blp.arguments(ScheduleListArgs, location="query")
    @blp.response(200, ScheduleSchema(many=True))
    @blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, args: dict[str, Any], pagination_parameters: Any):
        """List schedules, newest first."""
        db = session()
        query = permissions.restrict(
            crud.list_query(tenant_id(), args.get("workflow_id")),
            Schedule.workflow_id,
            tenant_id(),
            principal(),
        )
        return [crud.schedule_view(s) for s in page_of(db, query, pagination_parameters)]

    @require(Role.EDITOR)
    @blp.arguments(ScheduleInSchema)
    @blp.response(201, ScheduleSchema)
    def post(self, body: dict[str, Any]):
        """Create a schedule; the running beat picks it up without a restart."""
        try:  # a schedule runs the workflow: its creator must be allowed to run it
            check_workflow(body.get("workflow_id"), "run")
        except NotFound as e:
            raise InvalidInput(
                [Problem("workflow_id", f"no workflow {body['workflow_id']} here")]
            ) from e
        db = session()
        schedule = crud.create_schedule(db, tenant_id(), body)
        db.commit()
        entry.put_entry(
            state().celery,
            schedule,
            state().settings.schedule_misfire_grace,
            entry.resume_point(db, schedule),
        )
        location = url_for("schedules.ScheduleItem", schedule_id=schedule.id)
        return crud.schedule_view(schedule), 201, {"Location": location}


@blp.route("/<uuid:schedule_id>")
class ScheduleItem(MethodView):
    """One schedule."""

    @require(Role.VIEWER)
    @blp.response(200, ScheduleSchema)
    def get(self, schedule_id: uuid.UUID):
        """The schedule with its next five fire times."""
        return crud.schedule_view(_schedule(schedule_id))

    @require(Role.EDITOR)
    @blp.arguments(SchedulePatchSchema)
    @blp.response(200, ScheduleSchema)
    def patch(self, changes: dict[str, Any], schedule_id: uuid.UUID):
        """Change cron, interval, timezone, input, enabled, overlap or catchup."""
        _schedule(schedule_id, "run")
        db = session()
        schedule = crud.update_schedule(db, tenant_id(), schedule_id, changes)
        db.commit()
        entry.put_entry(
            state().celery,
            schedule,
            state().settings.schedule_misfire_grace,
            entry.resume_point(db, schedule),
        )
        return crud.schedule_view(schedule)

    @require(Role.EDITOR)
    @blp.response(204)
    def delete(self, schedule_id: uuid.UUID):
        """Delete the schedule and its fire history; beat stops firing it at once."""
        _schedule(schedule_id, "run")
        db = session()
        schedule = crud.get_schedule(db, tenant_id(), schedule_id, for_update=True)
        db.delete(schedule)
        db.commit()
        entry.delete_entry(state().celery, schedule_id)


@blp.route("/<uuid:schedule_id>/fires")
class ScheduleFires(MethodView):
    """What a schedule did at each fire time."""

    @require(Role.VIEWER)
    @blp.response(200, FireSchema(many=True))
    @blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, schedule_id: uuid.UUID, pagination_parameters: Any):
        """Fires, newest first, each with the execution it started or why none did."""
        db = session()
        schedule = _schedule(schedule_id)
        query = crud.fires_query(schedule)
        return [crud.fire_view(f) for f in page_of(db, query, pagination_parameters)]
