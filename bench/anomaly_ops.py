"""Scoring-pass benchmark: how long the periodic pass takes to score the new points of many
series on a real ML worker, by the history it sends (``ATOM_ANOMALY_CONTEXT``).

    .venv/bin/python bench/anomaly_ops.py
    .venv/bin/python bench/anomaly_ops.py --series 20 --history 9000 --contexts 8192,512

Each series is a custom metric of one tenant: ``--history`` points already scored (a
synthetic daily pattern with noise), then ``--new`` unscored points; one pass per context
size scores them (the new points are reset to unscored between passes). Derivation of run
metrics is part of the pass, but there are no runs here.
"""

from __future__ import annotations

import argparse
import math
import random
import socket
import sys
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from _services import ROOT, services, start, stop, wait_ready

sys.path.insert(0, str(ROOT))

from atom.celery_app import make_celery


def seed(settings, series: int, history: int, new: int) -> list[uuid.UUID]:
    """``series`` custom series of one tenant, their history scored, their new points not."""
    from sqlalchemy import insert

    from atom.anomaly.store import ensure_series
    from atom.security.auth import get_or_create_tenant
    from atom.store.db import make_engine, make_sessionmaker
    from atom.store.models import MetricPoint

    engine = make_engine(settings.database_url)
    rng = random.Random(7)
    start_at = datetime.now(UTC) - timedelta(minutes=history + new)
    made = []
    try:
        with make_sessionmaker(engine).begin() as db:
            tenant = get_or_create_tenant(db, f"bench-{uuid.uuid4().hex[:8]}").id
            for s in range(series):
                sid = ensure_series(db, tenant, "custom", None, f"bench.metric.{s}", "ms")
                rows = []
                for i in range(history + new):
                    at = start_at + timedelta(minutes=i)
                    value = 100 + 20 * math.sin(2 * math.pi * i / 1440) + rng.gauss(0, 3)
                    rows.append(
                        {
                            "series_id": sid,
                            "tenant_id": tenant,
                            "at": at,
                            "value": value,
                            "score": 0.1 if i < history else None,
                            "scored_at": at if i < history else None,
                        }
                    )
                db.execute(insert(MetricPoint), rows)
                made.append(sid)
    finally:
        engine.dispose()
    return made


def reset(settings, ids: list[uuid.UUID], new: int) -> None:
    """Mark the newest ``new`` points of each series unscored again."""
    from sqlalchemy import text

    from atom.store.db import make_engine

    engine = make_engine(settings.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("""
                UPDATE metric_points SET scored_at = NULL, score = NULL WHERE id IN (
                    SELECT id FROM (
                        SELECT id, row_number() OVER (PARTITION BY series_id ORDER BY at DESC)
                            AS r FROM metric_points WHERE series_id = ANY(:ids)) x
                    WHERE r <= :new)
                """),
                {"ids": ids, "new": new},
            )
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--history", type=int, default=9000)
    parser.add_argument("--new", type=int, default=10)
    parser.add_argument("--contexts", default="8192,2048,512")
    args = parser.parse_args()
    data = ROOT / ".atom" / "bench-anomaly-ops"
    settings, stoppers = services(data, "atom_bench_anomaly_ops")
    worker = start(
        [sys.executable, "-m", "cli", "worker", "--pool", "ml", "--loglevel=WARNING"],
        settings,
        data / "ml-worker.log",
    )
    app = make_celery(settings)
    try:
        from atom.anomaly import scoring
        from atom.ml.client import MLClient
        from atom.store.db import make_engine, make_sessionmaker

        wait_ready(app, worker, f"ml@{socket.gethostname()}", data / "ml-worker.log")
        ids = seed(settings, args.series, args.history, args.new)
        factory = make_sessionmaker(make_engine(settings.database_url or ""))
        print(f"{args.series} series x ({args.history} scored + {args.new} new) points")
        for context in (int(c) for c in args.contexts.split(",")):
            reset(settings, ids, args.new)
            tuned = replace(settings, anomaly_context=context, ml_timeout=60)
            started = time.perf_counter()
            report = scoring.score_pass(factory, MLClient(tuned).call, tuned)
            wall = time.perf_counter() - started
            print(
                f"context {context:>5}: pass {wall:6.2f} s, "
                f"{wall / max(1, report['series_scored']) * 1000:6.0f} ms per series, "
                f"{report['points_scored']} points scored"
            )
    finally:
        app.close()
        stop(worker)
        for stopper in stoppers:
            stopper()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
