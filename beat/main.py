"""``atom beat``: celery beat on the RedBeat scheduler (one active beat, through its lock)."""

from __future__ import annotations

import argparse
import logging

from atom.celery_app import make_celery
from atom.config import Settings


def main(settings: Settings, argv: list[str] | None = None) -> None:
    """Run beat until stopped."""
    parser = argparse.ArgumentParser(prog="atom beat")
    parser.add_argument("--loglevel", "-l", default=settings.log_level)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.loglevel,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_celery(settings)
    app.start(["beat", "--scheduler=redbeat.RedBeatScheduler", f"--loglevel={args.loglevel}"])
