"""``atom worker``: a Celery worker for the step queues."""

from __future__ import annotations

import argparse
import logging

from atom.celery_app import STEPS_QUEUE, make_celery
from atom.config import Settings
from workers.tasks import register


def main(settings: Settings, argv: list[str] | None = None) -> None:
    """Parse worker options and run the worker until it is stopped."""
    parser = argparse.ArgumentParser(prog="atom worker")
    parser.add_argument("--concurrency", "-c", type=int, default=settings.worker_concurrency)
    parser.add_argument("--queues", "-Q", default=STEPS_QUEUE,
                        help="comma-separated queues (default: %(default)s)")
    parser.add_argument("--pool", default="prefork", help="Celery pool (default: prefork)")
    parser.add_argument("--hostname", "-n", default=None)
    parser.add_argument("--loglevel", "-l", default=settings.log_level)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_celery(settings)
    register(app, settings)
    worker_argv = ["worker", f"--concurrency={args.concurrency}", f"--queues={args.queues}",
                   f"--pool={args.pool}", f"--loglevel={args.loglevel}", "--without-mingle",
                   "--without-gossip"]
    if args.hostname:
        worker_argv.append(f"--hostname={args.hostname}")
    app.worker_main(worker_argv)
