"""/api/executions: the state of runs and of every step."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Response, g
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import select

from api.context import page_of, principal, require, session, state, tenant_id
from api.schemas import ExecutionListArgs, ExecutionSchema
from atom.runs import dispatch, engine, events, lifecycle
from atom.security import permissions
from atom.security.auth import Role
from atom.store.models import Execution

blp = Blueprint(
    "executions",
    __name__,
    url_prefix="/api/executions",
    description="Runs of workflows and their steps.",
)


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
        query = permissions.restrict(
            select(Execution).where(Execution.tenant_id == tenant_id()),
            Execution.workflow_id,
            tenant_id(),
            principal(),
        )
        if "workflow_id" in args:
            query = query.where(Execution.workflow_id == args["workflow_id"])
        if "status" in args:
            query = query.where(Execution.status == args["status"])
        rows = page_of(
            db, query.order_by(Execution.created_at.desc(), Execution.id), pagination_parameters
        )
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


def _view(db, execution_id: uuid.UUID) -> dict[str, Any]:
    execution = engine.get_execution(db, tenant_id(), execution_id)
    definition = engine.load_definition(db, execution.version_id)
    return engine.execution_view(execution, engine.steps_of(db, execution), definition)


@blp.route("/<uuid:execution_id>/pause")
class ExecutionPause(MethodView):
    """Pause a run."""

    @require(Role.OPERATOR)
    @blp.response(200, ExecutionSchema)
    @blp.alt_response(409, description="The execution's status does not allow a pause")
    def post(self, execution_id: uuid.UUID):
        """running -> paused: running steps finish, no new step starts."""
        db = session()
        lifecycle.pause(db, tenant_id(), execution_id)
        db.commit()
        return _view(db, execution_id)


@blp.route("/<uuid:execution_id>/resume")
class ExecutionResume(MethodView):
    """Resume a paused run."""

    @require(Role.OPERATOR)
    @blp.response(200, ExecutionSchema)
    @blp.alt_response(409, description="The execution is not paused")
    def post(self, execution_id: uuid.UUID):
        """paused -> running: what is left runs; nothing that succeeded runs again."""
        db = session()
        lifecycle.resume(db, tenant_id(), execution_id)
        db.commit()
        lifecycle.send_residual(state().factory, state().celery, execution_id)
        return _view(db, execution_id)


@blp.route("/<uuid:execution_id>/cancel")
class ExecutionCancel(MethodView):
    """Cancel a run."""

    @require(Role.OPERATOR)
    @blp.response(200, ExecutionSchema)
    @blp.alt_response(409, description="The execution has already ended")
    def post(self, execution_id: uuid.UUID):
        """queued, running or paused -> cancelled; running steps are interrupted."""
        db = session()
        _execution, running = lifecycle.cancel(db, tenant_id(), execution_id)
        db.commit()
        if running:
            # SIGUSR1 raises SoftTimeLimitExceeded inside the step, which records it cancelled.
            # The cancel is committed: with the broker down, running steps end on their own.
            with contextlib.suppress(*dispatch.BROKER_ERRORS):
                state().celery.control.revoke(running, terminate=True, signal="SIGUSR1")
        return _view(db, execution_id)


@blp.route("/<uuid:execution_id>/retry")
class ExecutionRetry(MethodView):
    """Retry a failed run from its failed steps."""

    @require(Role.OPERATOR)
    @blp.response(200, ExecutionSchema)
    @blp.alt_response(409, description="The execution has not failed")
    def post(self, execution_id: uuid.UUID):
        """failed -> running: failed and never-run steps run again; succeeded ones do not."""
        db = session()
        lifecycle.retry(db, tenant_id(), execution_id)
        db.commit()
        lifecycle.send_residual(state().factory, state().celery, execution_id)
        return _view(db, execution_id)


@blp.route("/<uuid:execution_id>/events")
class ExecutionEvents(MethodView):
    """The run's changes as they happen."""

    @require(Role.VIEWER)
    @blp.doc(
        responses={
            "200": {
                "description": "Server-Sent Events: `snapshot` (the execution as GET shows "
                "it), then `step` and `execution` events as they happen, and `end` (the final "
                "execution) once it is terminal; then the stream closes. A comment "
                "line keeps a quiet stream alive every 15 s.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        }
    )
    def get(self, execution_id: uuid.UUID):
        """Follow the run: a snapshot first, every step and status change, the end."""
        engine.get_execution(session(), tenant_id(), execution_id)  # 404 for other tenants
        session().rollback()
        tenant, app_state = tenant_id(), state()
        key = str(g.key_id)
        lease = app_state.streams.acquire(key)  # 429 past the caps; freed when the stream ends

        def snapshot(db) -> dict[str, Any]:
            execution = engine.get_execution(db, tenant, execution_id)
            definition = engine.load_definition(db, execution.version_id)
            return engine.execution_view(execution, engine.steps_of(db, execution), definition)

        def stream() -> Iterator[str]:
            yield f": events of execution {execution_id}\n\n"
            for item in events.follow(
                app_state.factory, app_state.settings.events_redis, execution_id, snapshot
            ):
                app_state.streams.renew(lease)  # keeps its slot among the key's streams
                if item is None:
                    yield ": keep-alive\n\n"
                    continue
                name, data = item
                yield f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"

        response = Response(
            stream(),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        response.call_on_close(lambda: app_state.streams.release(lease))
        return response
