"""Maintenance tasks, run from beat on the ``atom.maintenance`` queue."""

from __future__ import annotations

import logging
import os

from celery import Celery

from atom import alerts, recovery
from atom.celery_app import EVALUATE_ALERTS, RECONCILE
from atom.monitoring import Probe
from workers.tasks import WorkerContext

logger = logging.getLogger("atom.maintenance")


def register(app: Celery, ctx: WorkerContext) -> None:
    """Register the maintenance tasks on ``app``."""
    probes: dict[int, Probe] = {}  # one per process: it holds connections

    def probe() -> Probe:
        pid = os.getpid()
        if pid not in probes:
            probes.clear()
            probes[pid] = Probe(ctx.factory, app, ctx.settings)
        return probes[pid]

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

    @app.task(name=EVALUATE_ALERTS, acks_late=True, ignore_result=True)
    def evaluate_alerts() -> dict:
        if not ctx.settings.monitoring_enabled:
            return {"enabled": False}
        return alerts.evaluate(ctx.factory, probe(), ctx.settings)
