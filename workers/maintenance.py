"""Maintenance tasks, run from beat on the ``atom.maintenance`` queue."""

from __future__ import annotations

import logging

from celery import Celery

from atom import recovery
from atom.celery_app import RECONCILE
from workers.tasks import WorkerContext

logger = logging.getLogger("atom.maintenance")


def register(app: Celery, ctx: WorkerContext) -> None:
    """Register the maintenance tasks on ``app``."""

    @app.task(name=RECONCILE, acks_late=True, ignore_result=True)
    def reconcile() -> dict:
        if not ctx.settings.auto_recovery_enabled:
            return {"enabled": False}
        report = recovery.reconcile(ctx.factory, app, ctx.settings)
        if report.redriven:
            logger.warning("reconcile: re-drove %d stalled executions: %s",
                           len(report.redriven), ", ".join(report.redriven))
        return {"stalled": report.stalled, "redriven": report.redriven,
                "waiting_in_broker": report.waiting_in_broker}
