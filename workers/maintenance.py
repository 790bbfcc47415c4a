"""Maintenance tasks, run from beat on the ``atom.maintenance`` queue."""

from __future__ import annotations

import logging
import os
from datetime import datetime

from celery import Celery

from atom.alerts import evaluation as alerts
from atom.celery_app import (
    EVALUATE_ALERTS,
    FIRE_SCHEDULE,
    OPTIMIZE_WORKFLOWS,
    RECONCILE,
    SWEEP_SCHEDULES,
)
from atom.observe.probe import Probe
from atom.optimize import periodic
from atom.runs import recovery
from atom.schedules import firing
from workers.tasks import DB_ERRORS, WorkerContext

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
            logger.warning(
                "reconcile: re-drove %d stalled executions: %s",
                len(report.redriven),
                ", ".join(report.redriven),
            )
        return {
            "stalled": report.stalled,
            "redriven": report.redriven,
            "waiting_in_broker": report.waiting_in_broker,
        }

    @app.task(
        name=FIRE_SCHEDULE,
        acks_late=True,
        ignore_result=True,
        max_retries=None,
        autoretry_for=DB_ERRORS,
        retry_backoff=1,
        retry_backoff_max=10,
    )
    def fire_schedule(schedule_id: str, fire_time: str) -> str:
        return firing.fire(
            ctx.factory,
            app,
            schedule_id,
            datetime.fromisoformat(fire_time),
            ctx.settings.schedule_misfire_grace,
        )

    @app.task(name=SWEEP_SCHEDULES, acks_late=True, ignore_result=True)
    def sweep_schedules() -> dict:
        settings = ctx.settings
        counts = firing.sweep(
            ctx.factory,
            app,
            grace=settings.schedule_grace,
            misfire_grace=settings.schedule_misfire_grace,
        )
        if any(counts.values()):
            logger.warning("schedule sweep: %s", counts)
        return counts

    @app.task(name=EVALUATE_ALERTS, acks_late=True, ignore_result=True)
    def evaluate_alerts() -> dict:
        if not ctx.settings.monitoring_enabled:
            return {"enabled": False}
        return alerts.evaluate(ctx.factory, probe(), ctx.settings)

    _register_optimizer(app, ctx)


def _register_optimizer(app: Celery, ctx: WorkerContext) -> None:
    """The periodic optimizer pass (recommendations only; nothing is applied)."""

    @app.task(name=OPTIMIZE_WORKFLOWS, acks_late=True, ignore_result=True)
    def optimize_workflows() -> dict:
        report = periodic.analyse_active(ctx.factory, ctx.settings)
        if report.get("analysed"):
            logger.info("optimizer: stored %d recommendations", report["analysed"])
        return report
