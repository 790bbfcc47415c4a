"""``atom worker``: a Celery worker for the step queues."""

from __future__ import annotations

import argparse
import logging
import os

from atom.celery_app import MAINTENANCE_QUEUE, ML_QUEUE, STEPS_QUEUE, make_celery
from atom.config import Settings
from workers import maintenance, metrics, tasks, troubleshooting

# Longest retry countdown a worker holds is visibility_timeout / 2 (longer ones are parked);
# below this the margin would be too thin for step time limits and clock skew.
MIN_VISIBILITY_TIMEOUT = 120


def serve_metrics(settings: Settings, port: int) -> None:
    """Serve this worker's own metrics (its prefork children included) on ``port``."""
    from prometheus_client import start_http_server

    from atom.observe import metrics

    own = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    only = os.path.basename(own) if own else None
    start_http_server(
        port, addr="0.0.0.0", registry=metrics.registry(settings.metrics_root, only=only)
    )


def main(settings: Settings, argv: list[str] | None = None) -> None:
    """Parse worker options and run the worker until it is stopped."""
    parser = argparse.ArgumentParser(prog="atom worker")
    parser.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=None,
        help="processes (default: ATOM_WORKER_CONCURRENCY, or ATOM_ML_CONCURRENCY for --pool ml)",
    )
    parser.add_argument(
        "--queues",
        "-Q",
        default=f"{STEPS_QUEUE},{MAINTENANCE_QUEUE}",
        help="comma-separated queues (default: %(default)s)",
    )
    parser.add_argument(
        "--pool",
        default="prefork",
        help="Celery pool (default: prefork), or `ml` for the ML worker pool: queue "
        f"{ML_QUEUE}, LightGBM models, concurrency ATOM_ML_CONCURRENCY",
    )
    parser.add_argument("--hostname", "-n", default=None)
    parser.add_argument("--loglevel", "-l", default=settings.log_level)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve this worker's Prometheus metrics on this port (for when "
        "the API runs on another machine)",
    )
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(args.loglevel)  # handlers and format: atom.telemetry
    if settings.visibility_timeout < MIN_VISIBILITY_TIMEOUT:
        parser.error(
            f"ATOM_VISIBILITY_TIMEOUT is {settings.visibility_timeout} s; it must be at "
            f"least {MIN_VISIBILITY_TIMEOUT} s, longer than any countdown a worker "
            "holds, or Redis redelivers messages that are still waiting"
        )
    app = make_celery(settings)
    if args.pool == "ml":
        # Only the ML pool loads LightGBM (tests/unit/test_ml_isolation.py pins it).
        from workers import ml

        ml.register(app, settings)
        args.pool, args.queues = "prefork", ML_QUEUE
        args.concurrency = args.concurrency or settings.ml_concurrency
        args.hostname = args.hostname or "ml@%h"
    else:
        ctx = tasks.register(app, settings)
        maintenance.register(app, ctx)
        metrics.register(app, ctx)
        troubleshooting.register(app, ctx)
        args.concurrency = args.concurrency or settings.worker_concurrency
    if args.metrics_port:
        serve_metrics(settings, args.metrics_port)
    worker_argv = [
        "worker",
        f"--concurrency={args.concurrency}",
        f"--queues={args.queues}",
        f"--pool={args.pool}",
        f"--loglevel={args.loglevel}",
        "--without-mingle",
        "--without-gossip",
    ]
    if settings.log_format == "json":
        worker_argv.insert(0, "--quiet")  # no banner: every line of output is JSON
    if args.hostname:
        worker_argv.append(f"--hostname={args.hostname}")
    app.worker_main(worker_argv)
