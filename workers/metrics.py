"""Metric tasks on the ``atom.maintenance`` queue, fired by beat: score new metric points on
the ML pool (``atom.anomaly.scoring``) and prune points past the retention."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

from celery import Celery

from atom.anomaly import scoring
from atom.anomaly import store as metric_series
from atom.celery_app import PRUNE_METRICS, SCORE_METRICS
from atom.ml.client import MLClient
from atom.observe.probe import Probe
from workers.tasks import WorkerContext

logger = logging.getLogger("atom.maintenance")

SCORING_TIMEOUT = 30.0
"""Seconds the scoring pass waits for one series' scores (at least ATOM_ML_TIMEOUT)."""


def register(app: Celery, ctx: WorkerContext) -> None:
    """Register the metric tasks on ``app``."""
    per_process: dict[int, tuple[Probe, MLClient, MLClient]] = {}  # they hold connections

    def clients() -> tuple[Probe, MLClient, MLClient]:
        pid = os.getpid()
        if pid not in per_process:
            per_process.clear()
            # A series with a long history takes the pool a second or more: scoring waits
            # longer than a request would; whether the pool is up at all is asked with the
            # usual timeout, so a pool that is down holds this worker slot only that long.
            patient = replace(
                ctx.settings, ml_timeout=max(ctx.settings.ml_timeout, SCORING_TIMEOUT)
            )
            per_process[pid] = (
                Probe(ctx.factory, app, ctx.settings),
                MLClient(patient),
                MLClient(ctx.settings),
            )
        return per_process[pid]

    @app.task(name=SCORE_METRICS, acks_late=True, ignore_result=True)
    def score_metrics() -> dict:
        settings = ctx.settings
        if not settings.monitoring_enabled:  # how often (or whether) to fire: beat's call
            return {"enabled": False}
        probe, ml, quick = clients()
        return scoring.score_pass(ctx.factory, ml.call, settings, probe.queues, quick.call)

    @app.task(name=PRUNE_METRICS, acks_late=True, ignore_result=True)
    def prune_metrics() -> dict:
        pruned = metric_series.prune(ctx.factory, ctx.settings.metric_retention_days)
        if any(pruned.values()):
            logger.info("metrics: pruned %s", pruned)
        return pruned
