"""Maintenance tasks, run from beat on the ``atom.maintenance`` queue."""

from __future__ import annotations

import logging
import os
from datetime import datetime

from celery import Celery, Task

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
from atom.troubleshoot import stuck
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
        # The troubleshooter explains and records what the reconciler finds (stuck runs).
        explainer = stuck.Explainer(ctx.factory, app, ctx.settings)
        observe = explainer if ctx.settings.auto_troubleshoot else None
        report = recovery.reconcile(ctx.factory, app, ctx.settings, observe)
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
        bind=True,
        acks_late=True,
        ignore_result=True,
        # Past these the slot is left to the sweeper, which accounts for every slot.
        max_retries=ctx.settings.infra_retries,
        autoretry_for=DB_ERRORS,
        retry_backoff=1,
        retry_backoff_max=10,
    )
    def fire_schedule(self: Task, schedule_id: str, fire_time: str) -> str:
        try:
            return firing.fire(
                ctx.factory,
                app,
                schedule_id,
                datetime.fromisoformat(fire_time),
                ctx.settings.schedule_misfire_grace,
                saturated=firing.saturation(probe().step_backlog, ctx.settings.max_queue_depth),
            )
        except firing.TooEarly as early:
            # Sent by a beat whose clock runs ahead: wait for the slot by the database's clock.
            logger.warning(
                "schedule %s: fire for %s came early (%s)", schedule_id, fire_time, early
            )
            raise self.retry(countdown=early.seconds + 0.05, max_retries=None) from None

    @app.task(name=SWEEP_SCHEDULES, acks_late=True, ignore_result=True)
    def sweep_schedules() -> dict:
        settings = ctx.settings
        counts = firing.sweep(
            ctx.factory,
            app,
            grace=settings.schedule_grace,
            misfire_grace=settings.schedule_misfire_grace,
            saturated=firing.saturation(probe().step_backlog, settings.max_queue_depth),
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
