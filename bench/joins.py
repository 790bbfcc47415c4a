"""Chord join latency: how long after its header's last task ends does a chord's body start.

Two shapes, each on the same Redis broker and result backend:

* ``flat``: ``chord([a, b], m)``; the header's members are single tasks.
* ``nested``: ``chord([chain(a, group(b, c)), d], m)``; a header member is a chain that ends
  in a group (what the compiler makes of ``a -> (b || c)`` beside ``d``, all joined by ``m``).

Three ways:

* ``raw-stock``: raw Celery with its stock Redis result backend (``redis://``);
* ``raw-atom``: raw Celery with ATOM's backend class (``atom.celery_app.NoWaitRedisBackend``);
* ``atom``: ATOM's engine: a workflow of ``transform`` steps of the same shape, run through the
  API and a real ``cli worker``; the times are the step rows' ``started_at``/``finished_at``.

Raw tasks stamp their start and end (``time.time()``) in Redis. The join latency of a run is
the body's start minus the latest end among the header's last tasks (``b, c, d`` or ``a, b``).
Figures are medians (and maxima) over ``--repeat`` runs after a warm-up run.

    python bench/joins.py [--repeat R] [--concurrency C] [--json]

DATABASE_URL / REDIS_URL are used when set; otherwise embedded servers under .atom/bench-joins,
a fresh ``atom_bench_joins`` database each run, and what this script started is stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from _services import ROOT, admin_key, serve_api, services, start, stop, wait_ready

from atom.config import Settings

DATA = ROOT / ".atom" / "bench-joins"
RAW_QUEUE, STAMP = "bench.joins", "bench.stamp"
TIMEOUT = 60.0
SHAPES = {"flat": ("a", "b"), "nested": ("b", "c", "d")}
"""Each shape and the header tasks that end last (the body waits for all of them)."""


def make_raw_app(settings: Settings, backend: str):
    """A raw Celery app like overhead.py's, with the stock or ATOM's Redis backend."""
    import redis
    from celery import Celery

    from atom.celery_app import _backend_url, make_celery

    atom_app = make_celery(settings)
    url = settings.celery_backend if backend == "stock" else _backend_url(settings.celery_backend)
    app = Celery("bench", broker=settings.celery_broker, backend=url, set_as_current=False)
    app.conf.update(
        {k: atom_app.conf[k] for k in ("task_serializer", "accept_content", "task_acks_late")},
        result_backend_transport_options=atom_app.conf.result_backend_transport_options,
        worker_prefetch_multiplier=1,
        task_default_queue=RAW_QUEUE,
        worker_hijack_root_logger=False,
    )
    atom_app.close()
    stamps = redis.Redis.from_url(settings.redis_url or "")

    @app.task(name=STAMP, shared=False)
    def stamp(run: str, label: str) -> None:
        stamps.rpush(run, json.dumps([label, "start", time.time()]))
        stamps.rpush(run, json.dumps([label, "end", time.time()]))

    return app, stamps


def raw_canvas(app, shape: str, run: str):
    from celery import chain, chord, group

    def s(label: str):
        return app.signature(STAMP, args=(run, label), immutable=True, queue=RAW_QUEUE)

    if shape == "flat":
        return chord(group(s("a"), s("b"), app=app), s("m"), app=app)
    return chord(
        group(chain(s("a"), group(s("b"), s("c"), app=app), app=app), s("d"), app=app),
        s("m"),
        app=app,
    )


def time_raw(app, stamps, shape: str) -> float:
    """Join latency (ms) of one raw run."""
    run = f"bench-joins:{uuid.uuid4().hex}"
    raw_canvas(app, shape, run).apply_async()
    deadline = time.monotonic() + TIMEOUT
    while True:
        events = [json.loads(e) for e in stamps.lrange(run, 0, -1)]
        times = {(label, what): at for label, what, at in events}
        if ("m", "start") in times:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"raw {shape} run did not reach its body: {events}")
        time.sleep(0.01)
    stamps.delete(run)
    last = max(times[(label, "end")] for label in SHAPES[shape])
    return (times[("m", "start")] - last) * 1000


def documents() -> dict[str, dict]:
    def step(node_id: str) -> dict:
        return {
            "id": node_id,
            "type": "action",
            "config": {"action_type": "transform", "output": {"ok": True}},
        }

    trigger = {"id": "start", "type": "trigger", "config": {"kind": "manual"}}
    edges = {
        "flat": [("start", "a"), ("start", "b"), ("a", "m"), ("b", "m")],
        "nested": [
            ("start", "a"),
            ("a", "b"),
            ("a", "c"),
            ("start", "d"),
            ("b", "m"),
            ("c", "m"),
            ("d", "m"),
        ],
    }
    return {
        shape: {
            "name": f"bench-joins-{shape}",
            "nodes": [trigger, *map(step, sorted({t for _, t in pairs}))],
            "connections": [{"source": a, "target": b} for a, b in pairs],
        }
        for shape, pairs in edges.items()
    }


def time_atom(client, db, workflow_id: str, shape: str) -> float:
    """Join latency (ms) of one ATOM execution, from its step rows."""
    from sqlalchemy import text

    execution_id = client.execute(workflow_id)["id"]
    status = text("SELECT status FROM executions WHERE id = :id")
    steps = text("SELECT node_id, started_at, finished_at FROM step_runs WHERE execution_id = :id")
    deadline = time.monotonic() + TIMEOUT
    with db.connect() as conn:
        while (state := conn.execute(status, {"id": execution_id}).scalar_one()) not in (
            "succeeded",
            "failed",
            "cancelled",
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_id} still {state}")
            time.sleep(0.01)
        if state != "succeeded":
            raise RuntimeError(f"execution {execution_id} {state}")
        rows = {r.node_id: r for r in conn.execute(steps, {"id": execution_id})}
    last = max(rows[label].finished_at for label in SHAPES[shape])
    return (rows["m"].started_at - last).total_seconds() * 1000


def run_raw(settings: Settings, args, backend: str) -> dict[str, list[float]]:
    app, stamps = make_raw_app(settings, backend)
    hostname = f"bench-joins-{backend}-{os.getpid()}@localhost"
    log = DATA / f"raw-{backend}.log"
    proc = start(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--raw-worker",
            backend,
            f"--concurrency={args.concurrency}",
            f"--hostname={hostname}",
        ],
        settings,
        log,
    )
    try:
        wait_ready(app, proc, hostname, log)
        out = {}
        for shape in SHAPES:
            time_raw(app, stamps, shape)  # warm-up
            out[shape] = [time_raw(app, stamps, shape) for _ in range(args.repeat)]
        return out
    finally:
        stop(proc)
        app.close()
        stamps.close()


def run_atom(settings: Settings, args) -> dict[str, list[float]]:
    from sqlalchemy import create_engine

    from atom.celery_app import make_celery
    from atom.client import Client

    db = create_engine(settings.database_url or "", isolation_level="AUTOCOMMIT")
    key = admin_key(settings)
    server, url = serve_api(settings)
    app, hostname = make_celery(settings), f"bench-joins-atom-{os.getpid()}@localhost"
    log = DATA / "atom.log"
    proc = start(
        [
            sys.executable,
            "-m",
            "cli",
            "worker",
            f"--concurrency={args.concurrency}",
            "--pool=prefork",
            f"--hostname={hostname}",
            "--loglevel=WARNING",
        ],
        settings,
        log,
    )
    try:
        wait_ready(app, proc, hostname, log)
        client = Client(url, key)
        out = {}
        for shape, doc in documents().items():
            workflow_id = client.create_workflow(doc)["id"]
            time_atom(client, db, workflow_id, shape)  # warm-up
            out[shape] = [time_atom(client, db, workflow_id, shape) for _ in range(args.repeat)]
        return out
    finally:
        stop(proc)
        server.shutdown()
        app.close()
        db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=10, help="measured runs per shape and way")
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes")
    parser.add_argument("--json", action="store_true", help="print every sample as JSON")
    parser.add_argument("--raw-worker", choices=("stock", "atom"), help=argparse.SUPPRESS)
    parser.add_argument("--hostname", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_worker:  # the subprocess mode: a raw Celery worker with that backend
        app, _ = make_raw_app(Settings.from_env(), args.raw_worker)
        app.worker_main(
            [
                "worker",
                f"--concurrency={args.concurrency}",
                "--pool=prefork",
                f"--hostname={args.hostname}",
                "--loglevel=WARNING",
                f"--queues={RAW_QUEUE}",
                "--without-mingle",
                "--without-gossip",
            ]
        )
        return 0
    settings, stoppers = services(DATA, "atom_bench_joins")
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for backend in ("stock", "atom"):
            print(f"raw Celery, {backend} backend ...", file=sys.stderr, flush=True)
            results[f"raw-{backend}"] = run_raw(settings, args, backend)
        print("ATOM ...", file=sys.stderr, flush=True)
        results["atom"] = run_atom(settings, args)
    finally:
        for stop_service in reversed(stoppers):
            stop_service()
    if args.json:
        print(json.dumps({"args": {"repeat": args.repeat}, "join_ms": results}, indent=2))
        return 0
    print(f"{'way':<10}{'shape':<8}{'median_ms':>11}{'max_ms':>9}")
    for way, shapes in results.items():
        for shape, samples in shapes.items():
            print(f"{way:<10}{shape:<8}{statistics.median(samples):>11.1f}{max(samples):>9.1f}")
    print(
        f"join latency = body start - last header task end; {args.repeat} runs each, "
        f"concurrency {args.concurrency}, load {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
