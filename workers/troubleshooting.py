"""Troubleshooting tasks on the maintenance queue: after a run ends, and a scheduled retry."""

from __future__ import annotations

import uuid

from celery import Celery

from atom.celery_app import TROUBLESHOOT_FINISHED, TROUBLESHOOT_RETRY
from atom.runs import lifecycle
from atom.troubleshoot import sessions
from workers.tasks import DB_ERRORS, WorkerContext

_RETRYING = {
    "acks_late": True,
    "ignore_result": True,
    "max_retries": None,
    "autoretry_for": DB_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 30,
}


def register(app: Celery, ctx: WorkerContext) -> None:
    """Register the troubleshooting tasks on ``app``."""

    @app.task(name=TROUBLESHOOT_FINISHED, **_RETRYING)
    def troubleshoot_finished(execution_id: str) -> None:
        """A run ended: open a session (failed), close one (succeeded), or retry again."""
        with ctx.factory.begin() as s:
            s.info[sessions.SETTINGS] = ctx.settings
            followup = sessions.on_finished(s, uuid.UUID(execution_id), ctx.settings)
        if followup is not None:
            sessions.send(app, followup)

    @app.task(name=TROUBLESHOOT_RETRY, **_RETRYING)
    def troubleshoot_retry(session_id: str, issue: int) -> None:
        """The wait is over: retry the execution from its failed step with the new policy."""
        with ctx.factory.begin() as s:
            s.info[sessions.SETTINGS] = ctx.settings
            execution_id = sessions.retry_task(s, uuid.UUID(session_id), issue)
        if execution_id is not None:
            lifecycle.send_residual(ctx.factory, app, execution_id)
