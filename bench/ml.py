"""Decision engine benchmark: decision latency through the API, retraining time at 10k
outcomes, resident memory of an ML worker.

    .venv/bin/python bench/ml.py                  # 10,000 outcomes, 500 timed decisions
    .venv/bin/python bench/ml.py --outcomes 2000 --decisions 200

The data are synthetic (``atom.ml.simulation.World``: the best of three actions depends on
a customer tier and an amount); no public data set is used. The outcomes are logged as a
uniform-random policy would have logged them (propensity 1/3) and written straight to
PostgreSQL, so the training time measures LightGBM and the store, not 20,000 HTTP calls.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime

import psutil
import requests
from _services import ROOT, admin_key, api_process, serve_api, services, start, stop, wait_ready

sys.path.insert(0, str(ROOT))

from atom.celery_app import ML_DECIDE, ML_PING, make_celery
from atom.ml import features as feats
from atom.ml.client import MLClient
from atom.ml.simulation import ACTIONS, World


def seed_outcomes(settings, http, base: str, n: int) -> str:
    """Create the model over HTTP, then log ``n`` decisions with outcomes directly."""
    from sqlalchemy import update

    from atom.store.db import make_engine, make_sessionmaker
    from atom.store.models import Decision, MLModel

    made = http.post(
        f"{base}/api/decisions",
        json={"model": "bench", "context": World().context(), "actions": ACTIONS},
        timeout=30,
    )
    made.raise_for_status()
    engine = make_engine(settings.database_url)
    world, rng = World(seed=1), random.Random(1)
    with make_sessionmaker(engine).begin() as db:
        model = db.query(MLModel).filter_by(name="bench").one()
        rows = []
        for _ in range(n):
            context = world.context()
            action = rng.choice(ACTIONS)
            rows.append(
                Decision(
                    id=uuid.uuid4(),
                    tenant_id=model.tenant_id,
                    model_id=model.id,
                    model_version=None,
                    context=context,
                    features=feats.flatten(context),
                    actions=ACTIONS,
                    chosen=action,
                    scores=dict.fromkeys(ACTIONS),
                    propensity=1 / 3,
                    explored=True,
                    reward=world.reward(context, action),
                    outcome_at=datetime.now(UTC),
                )
            )
        db.add_all(rows)
        db.execute(update(MLModel).where(MLModel.id == model.id).values(outcomes=n))
    engine.dispose()
    return "bench"


def profile_api(settings, key: str, name: str, n: int) -> None:
    """``n`` decisions through the Flask test client (no HTTP server) under cProfile."""
    import cProfile
    import pstats

    from api.app import create_app

    client = create_app(settings).test_client()
    world = World(seed=3)

    def one() -> None:
        r = client.post(
            "/api/decisions",
            json={"model": name, "context": world.context()},
            headers={"X-API-Key": key},
        )
        assert r.status_code == 201, r.get_data(as_text=True)

    for _ in range(20):
        one()
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    for _ in range(n):
        one()
    profiler.disable()
    print(f"test client: {(time.perf_counter() - t0) * 1000 / n:.2f} ms per decision", flush=True)
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(25)
    stats.print_callers(r"sleep|\{method 'execute'|sendall|\{method 'commit'|poll")


def main() -> int:
    # A benchmark is a flood by design: the API's write budget (300/minute) would stop it.
    # The limiter stays on (its Redis work is part of every decision), with room to spare.
    os.environ.setdefault("ATOM_RATE_LIMIT_WRITES", "1000000/minute")
    os.environ.setdefault("ATOM_RATE_LIMIT_READS", "1000000/minute")
    parser = argparse.ArgumentParser()
    parser.add_argument("--outcomes", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=500)
    parser.add_argument(
        "--server",
        choices=["gunicorn", "werkzeug"],
        default="gunicorn",
        help="gunicorn: `atom api` in its own process, as deployed (default); werkzeug: a "
        "threaded server inside this process (shares the GIL with the timing client)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also run N decisions through Flask's test client under cProfile and print "
        "where the API's time goes",
    )
    args = parser.parse_args()
    data = ROOT / ".atom" / "bench-ml"
    settings, stoppers = services(data, "atom_bench_ml")
    worker = start(
        [sys.executable, "-m", "cli", "worker", "--pool", "ml", "--loglevel=WARNING"],
        settings,
        data / "ml-worker.log",
    )
    app = make_celery(settings)
    server = api_proc = None
    try:
        import socket

        wait_ready(app, worker, f"ml@{socket.gethostname()}", data / "ml-worker.log")
        if args.server == "gunicorn":
            api_proc, base = api_process(settings, data / "api.log")
        else:
            server, base = serve_api(settings)
        http = requests.Session()
        http.headers["X-API-Key"] = admin_key(settings)
        name = seed_outcomes(settings, http, base, args.outcomes)

        started = time.perf_counter()
        assert http.post(f"{base}/api/models/{name}/train", timeout=30).status_code == 202
        model: dict = {}
        while not (model.get("last_training") or {}).get("trained"):
            time.sleep(0.2)
            model = http.get(f"{base}/api/models/{name}", timeout=30).json()
        wall = time.perf_counter() - started
        training = model["last_training"]

        world = World(seed=2)
        for _ in range(20):  # warm-up: connections, the booster cache in both children
            http.post(f"{base}/api/decisions", json={"model": name, "context": world.context()})
        latencies = []
        for _ in range(args.decisions):
            t0 = time.perf_counter()
            r = http.post(
                f"{base}/api/decisions",
                json={"model": name, "context": world.context()},
                timeout=30,
            )
            latencies.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 201, r.text
        latencies.sort()
        if args.profile:
            profile_api(settings, http.headers["X-API-Key"], name, args.profile)

        # Where the time goes: the bare Celery round trip to the pool (a no-op task), and
        # the decide task through the same client the API uses (no HTTP, no database).
        client = MLClient(settings)
        model_row = http.get(f"{base}/api/models/{name}", timeout=30).json()
        ping_ms, decide_ms = [], []
        from sqlalchemy import select

        from atom.store.db import make_engine
        from atom.store.models import MLModel

        engine = make_engine(settings.database_url)
        with engine.connect() as conn:
            model_id = str(conn.scalar(select(MLModel.id).where(MLModel.name == name)))
        engine.dispose()
        for _ in range(args.decisions):
            t0 = time.perf_counter()
            client.call(ML_PING)
            ping_ms.append((time.perf_counter() - t0) * 1000)
            row = feats.flatten(world.context())
            t0 = time.perf_counter()
            client.call(
                ML_DECIDE, model_id=model_id, version=model_row["version"], actions=ACTIONS, row=row
            )
            decide_ms.append((time.perf_counter() - t0) * 1000)
        ping_ms.sort()
        decide_ms.sort()
        family = [psutil.Process(worker.pid), *psutil.Process(worker.pid).children(recursive=True)]
        rss = {p.pid: p.memory_info().rss / 2**20 for p in family}
        result = {
            "outcomes": args.outcomes,
            "training_seconds_on_pool": training["seconds"],
            "training_wall_seconds_via_api": round(wall, 2),
            "published": training["published"],
            "holdout_metrics": model["metrics"],
            "decisions": args.decisions,
            "decision_ms_p50": round(statistics.median(latencies), 2),
            "decision_ms_p95": round(latencies[int(0.95 * len(latencies)) - 1], 2),
            "decision_ms_max": round(latencies[-1], 2),
            "celery_noop_roundtrip_ms_p50_p95": [
                round(statistics.median(ping_ms), 2),
                round(ping_ms[int(0.95 * len(ping_ms)) - 1], 2),
            ],
            "decide_task_no_http_ms_p50_p95": [
                round(statistics.median(decide_ms), 2),
                round(decide_ms[int(0.95 * len(decide_ms)) - 1], 2),
            ],
            "ml_worker_rss_mib": {str(k): round(v, 1) for k, v in rss.items()},
            "ml_worker_rss_total_mib": round(sum(rss.values()), 1),
            "load_average": [round(x, 2) for x in psutil.getloadavg()],
        }
        print(json.dumps(result, indent=2, default=str))
    finally:
        if server is not None:
            server.shutdown()
        if api_proc is not None:
            stop(api_proc)
        stop(worker)
        app.close()
        for stopper in stoppers:
            stopper()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
