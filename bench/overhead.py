"""What ATOM costs on top of raw Celery, per step, for the same no-op work on the same broker.

Two shapes, each run both ways in the same process, against the same Redis:

* ``chain(N)``: N no-op tasks one after the other. ATOM: a trigger followed by N ``transform``
  nodes in a line (canvas: N ``atom.run_step`` tasks, then ``atom.finalize``).
* ``chord(W)``: W no-op tasks in parallel, then one more. ATOM: W ``transform`` nodes fanned out
  from the trigger and joined into one final ``transform`` (a chord of W, body = join, finalize).

Raw Celery is a separate app with one task, ``bench.noop``, on its own queue; it copies the
broker, result backend and the reliability settings of ``atom.celery_app.make_celery`` (JSON,
late acks, reject on worker lost, prefetch 1, task events), so the difference is ATOM's engine:
PostgreSQL bookkeeping per step, rendering, the finalize task, the API. Both workers are prefork
with the same concurrency and run one at a time (never side by side on a small machine), with a
warm-up run before measuring. Raw time is apply_async() to .get() of the canvas. ATOM time is
the execution's ``finished_at - created_at`` (server-side stamps: from the API's insert to
finalize), read by polling PostgreSQL directly so HTTP polling is not counted; the client wall
time (POST execute until the poll sees the end, 5 ms poll) is reported too. Figures are medians.

    python bench/overhead.py [--chain N] [--width W] [--repeat R] [--concurrency C] [--json]

DATABASE_URL / REDIS_URL are used when set; otherwise embedded servers under .atom/bench, a
fresh ``atom_bench`` database each run, and what this script started is stopped at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

from _services import ROOT, admin_key, serve_api, services, start, stop, wait_ready

from atom.config import Settings

DATA = ROOT / ".atom" / "bench"
RAW_QUEUE, NOOP = "bench.raw", "bench.noop"
TIMEOUT = 120.0  # seconds, for any one run
# make_celery's settings that the raw app copies (everything but ATOM's queues and RedBeat).
SHARED = (
    "task_serializer",
    "result_serializer",
    "accept_content",
    "result_accept_content",
    "task_acks_late",
    "task_reject_on_worker_lost",
    "worker_prefetch_multiplier",
    "broker_transport_options",
    "broker_connection_retry_on_startup",
    "result_backend_transport_options",
    "result_expires",
    "worker_send_task_events",
    "task_send_sent_event",
    "worker_hijack_root_logger",
    "timezone",
    "enable_utc",
)


def make_raw_app(settings: Settings):
    """The raw Celery app: ATOM's broker, backend and reliability settings, one no-op task."""
    from celery import Celery

    from atom.celery_app import make_celery

    atom_app = make_celery(settings)
    app = Celery(
        "bench",
        broker=settings.celery_broker,
        backend=settings.celery_backend,
        set_as_current=False,
    )
    app.conf.update({k: atom_app.conf[k] for k in SHARED}, task_default_queue=RAW_QUEUE)
    atom_app.close()

    @app.task(name=NOOP, acks_late=True)
    def noop() -> None:
        return None

    return app


def worker_argv(concurrency: int, hostname: str) -> list[str]:
    return [
        f"--concurrency={concurrency}",
        "--pool=prefork",
        f"--hostname={hostname}",
        "--loglevel=WARNING",
    ]


def time_raw(app, shape: str, size: int) -> float:
    from celery import chain, chord, group

    t0 = time.perf_counter()
    sigs = [app.signature(NOOP, immutable=True, queue=RAW_QUEUE) for _ in range(size + 1)]
    canvas = (
        chain(*sigs[:size], app=app)
        if shape == "chain"
        else chord(group(*sigs[:size], app=app), sigs[size], app=app)
    )
    canvas.apply_async().get(timeout=TIMEOUT)
    return (time.perf_counter() - t0) * 1000


def documents(n: int, w: int) -> dict[str, dict]:
    def step(node_id: str) -> dict:
        return {
            "id": node_id,
            "type": "action",
            "config": {"action_type": "transform", "output": {"ok": True}},
        }

    trigger = {"id": "start", "type": "trigger", "config": {"kind": "manual"}}
    line = ["start", *[f"s{i}" for i in range(n)]]
    fan = [f"b{i}" for i in range(w)]
    return {
        "chain": {
            "name": f"bench-chain-{n}",
            "nodes": [trigger, *map(step, line[1:])],
            "connections": [{"source": a, "target": b} for a, b in itertools.pairwise(line)],
        },
        "chord": {
            "name": f"bench-chord-{w}",
            "nodes": [trigger, *map(step, fan), step("join")],
            "connections": [{"source": "start", "target": b} for b in fan]
            + [{"source": b, "target": "join"} for b in fan],
        },
    }


def time_atom(client, db, workflow_id: str) -> tuple[float, float]:
    """(server ms: finished_at - created_at, client wall ms) of one execution."""
    from sqlalchemy import text

    t0 = time.perf_counter()
    execution_id = client.execute(workflow_id)["id"]
    query = text("SELECT status, created_at, finished_at FROM executions WHERE id = :id")
    deadline = time.monotonic() + TIMEOUT
    with db.connect() as conn:
        while (row := conn.execute(query, {"id": execution_id}).one()).status not in (
            "succeeded",
            "failed",
            "cancelled",
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_id} still {row.status}")
            time.sleep(0.005)
    wall = (time.perf_counter() - t0) * 1000
    if row.status != "succeeded":
        raise RuntimeError(f"execution {execution_id} {row.status}")
    return (row.finished_at - row.created_at).total_seconds() * 1000, wall


def run_raw(settings: Settings, args, shapes: dict[str, int]) -> dict[str, list[float]]:
    app, hostname = make_raw_app(settings), f"bench-raw-{os.getpid()}@localhost"
    proc = start(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--raw-worker",
            f"--concurrency={args.concurrency}",
            f"--hostname={hostname}",
        ],
        settings,
        DATA / "raw.log",
    )
    try:
        wait_ready(app, proc, hostname, DATA / "raw.log")
        out = {}
        for shape, size in shapes.items():
            time_raw(app, shape, size)  # warm-up
            out[shape] = [time_raw(app, shape, size) for _ in range(args.repeat)]
        return out
    finally:
        stop(proc)
        app.close()


def run_atom(settings: Settings, args) -> dict[str, list[tuple[float, float]]]:
    from sqlalchemy import create_engine

    from atom.celery_app import make_celery
    from atom.client import Client

    db = create_engine(settings.database_url or "", isolation_level="AUTOCOMMIT")
    key = admin_key(settings)
    server, url = serve_api(settings)
    app, hostname = make_celery(settings), f"bench-atom-{os.getpid()}@localhost"
    proc = start(
        [sys.executable, "-m", "cli", "worker", *worker_argv(args.concurrency, hostname)],
        settings,
        DATA / "atom.log",
    )
    try:
        wait_ready(app, proc, hostname, DATA / "atom.log")
        client = Client(url, key)
        out = {}
        for shape, doc in documents(args.chain, args.width).items():
            workflow_id = client.create_workflow(doc)["id"]
            time_atom(client, db, workflow_id)  # warm-up
            out[shape] = [time_atom(client, db, workflow_id) for _ in range(args.repeat)]
        return out
    finally:
        stop(proc)
        server.shutdown()
        app.close()
        db.dispose()


def report(args, raw: dict, atom: dict) -> dict:
    rows = {}
    for shape, steps, label in (
        ("chain", args.chain, f"chain({args.chain})"),
        ("chord", args.width + 1, f"chord({args.width})"),
    ):
        raw_ms = statistics.median(raw[shape])
        atom_ms = statistics.median(s for s, _ in atom[shape])
        rows[label] = {
            "steps": steps,
            "raw_ms": raw_ms,
            "atom_ms": atom_ms,
            "atom_wall_ms": statistics.median(w for _, w in atom[shape]),
            "raw_per_step_ms": raw_ms / steps,
            "atom_per_step_ms": atom_ms / steps,
            "overhead_per_step_ms": (atom_ms - raw_ms) / steps,
            "ratio": atom_ms / raw_ms,
            "raw_samples_ms": raw[shape],
            "atom_samples_ms": [s for s, _ in atom[shape]],
        }
    return rows


def print_table(args, rows: dict) -> None:
    cols = (
        "steps",
        "raw_ms",
        "atom_ms",
        "atom_wall_ms",
        "raw_per_step_ms",
        "atom_per_step_ms",
        "overhead_per_step_ms",
        "ratio",
    )
    print(f"{'shape':<11}" + "".join(f"{c:>{len(c) + 2}}" for c in cols))
    for label, row in rows.items():
        print(
            f"{label:<11}"
            + "".join(f"{row[c]:>{len(c) + 2}.{0 if c == 'steps' else 2}f}" for c in cols)
        )
    ratios = ", ".join(f"{label} {row['ratio']:.1f}x" for label, row in rows.items())
    print(
        f"ATOM/raw: {ratios} (medians of {args.repeat}, concurrency {args.concurrency}; "
        "ATOM = finished_at - created_at)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--chain", type=int, default=20, help="chain length N")
    parser.add_argument("--width", type=int, default=20, help="chord width W")
    parser.add_argument("--repeat", type=int, default=5, help="measured runs per shape")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hostname", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_worker:  # the subprocess mode: run the raw Celery worker
        make_raw_app(Settings.from_env()).worker_main(
            [
                "worker",
                *worker_argv(args.concurrency, args.hostname),
                f"--queues={RAW_QUEUE}",
                "--without-mingle",
                "--without-gossip",
            ]
        )
        return 0
    settings, stoppers = services(DATA, "atom_bench")
    try:
        print("raw Celery ...", file=sys.stderr, flush=True)
        raw = run_raw(settings, args, {"chain": args.chain, "chord": args.width})
        print("ATOM ...", file=sys.stderr, flush=True)
        atom = run_atom(settings, args)
    finally:
        for stop_service in reversed(stoppers):
            stop_service()
    rows = report(args, raw, atom)
    if args.json:
        print(
            json.dumps(
                {
                    "args": {
                        k: v
                        for k, v in vars(args).items()
                        if k not in ("raw_worker", "hostname", "json")
                    },
                    "results": rows,
                },
                indent=2,
            )
        )
    else:
        print_table(args, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
