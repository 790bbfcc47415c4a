"""``atom beat``: celery beat on the RedBeat scheduler (one active beat, through its lock),
with the platform's periodic jobs."""

from __future__ import annotations

import argparse
import logging
from datetime import timedelta

from atom.celery_app import (
    EVALUATE_ALERTS,
    MAINTENANCE_QUEUE,
    ML_QUEUE,
    ML_RETRAIN_DUE,
    OPTIMIZE_WORKFLOWS,
    PRUNE_METRICS,
    RECONCILE,
    SCORE_METRICS,
    SWEEP_SCHEDULES,
    make_celery,
)
from atom.config import Settings

# Beat wakes at least this often: a schedule created or changed while it sleeps is seen
# within this time (RedBeat only peeks at the next due entry when it goes to sleep).
MAX_INTERVAL = 1
# The single-beat lock expires this long after the active beat stops renewing it, so a
# standby beat takes over within that time when the active one dies.
LOCK_TIMEOUT = 10
# Metric points past ATOM_METRIC_RETENTION_DAYS are deleted this often (seconds).
PRUNE_INTERVAL = 3600


def periodic_jobs(settings: Settings) -> dict:
    """The platform's own schedule (RedBeat static entries)."""
    sweep = settings.schedule_sweep_interval
    jobs: dict = {
        "atom-sweep-schedules": {
            "task": SWEEP_SCHEDULES,
            "schedule": timedelta(seconds=sweep),
            "options": {"queue": MAINTENANCE_QUEUE, "expires": sweep},
        }
    }
    if settings.auto_recovery_enabled:
        every = timedelta(seconds=settings.reconcile_interval)
        jobs["atom-reconcile"] = {
            "task": RECONCILE,
            "schedule": every,
            "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.reconcile_interval},
        }
    if settings.monitoring_enabled:
        jobs["atom-monitor"] = {
            "task": EVALUATE_ALERTS,
            "schedule": timedelta(seconds=settings.monitor_interval),
            "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.monitor_interval},
        }
    if settings.monitoring_enabled and settings.anomaly_interval > 0:
        jobs["atom-score-metrics"] = {
            "task": SCORE_METRICS,
            "schedule": timedelta(seconds=settings.anomaly_interval),
            "options": {"queue": MAINTENANCE_QUEUE, "expires": settings.anomaly_interval},
        }
    jobs["atom-prune-metrics"] = {  # custom and derived metric points past the retention
        "task": PRUNE_METRICS,
        "schedule": timedelta(seconds=PRUNE_INTERVAL),
        "options": {"queue": MAINTENANCE_QUEUE, "expires": PRUNE_INTERVAL},
    }
    if settings.optimization_enabled and settings.optimization_interval > 0:
        every_s = settings.optimization_interval
        jobs["atom-optimize"] = {  # recommendations only: nothing is applied
            "task": OPTIMIZE_WORKFLOWS,
            "schedule": timedelta(seconds=every_s),
            "options": {"queue": MAINTENANCE_QUEUE, "expires": every_s},
        }
    if settings.ml_retrain_interval > 0:  # models with outcomes their last training missed
        jobs["atom-ml-retrain"] = {
            "task": ML_RETRAIN_DUE,
            "schedule": timedelta(seconds=settings.ml_retrain_interval),
            "options": {"queue": ML_QUEUE, "expires": settings.ml_retrain_interval},
        }
    return jobs


def main(settings: Settings, argv: list[str] | None = None) -> None:
    """Run beat until stopped."""
    parser = argparse.ArgumentParser(prog="atom beat")
    parser.add_argument("--loglevel", "-l", default=settings.log_level)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = make_celery(settings)
    app.conf.beat_schedule = periodic_jobs(settings)
    # The scheduler rebuilds schedule entries from PostgreSQL when it starts.
    app.conf.atom_database_url = settings.database_url
    app.conf.atom_misfire_grace = settings.schedule_misfire_grace
    app.conf.beat_max_loop_interval = MAX_INTERVAL
    app.conf.redbeat_lock_timeout = LOCK_TIMEOUT
    # No retrying inside RedBeat's Redis client: a failed call fails the tick at once, and the
    # scheduler's own loop backs off and logs once per outage (beat.scheduler.Outage). Keep
    # the credentials make_celery put there (atom.celery_app._without_credentials).
    app.conf.redbeat_redis_options = {**app.conf.redbeat_redis_options, "retry_period": 0}
    app.start(
        [
            "beat",
            "--scheduler=beat.scheduler:AtomScheduler",
            f"--loglevel={args.loglevel}",
            f"--max-interval={MAX_INTERVAL}",
        ]
    )
