"""Throughput and step latency with 1, 2 and 4 step-worker processes on I/O-bound steps.

Every step is an ``http_request`` to a loopback server that answers after 50 ms. Each run
starts N ``atom worker`` processes (``--concurrency C`` pool processes each, default 1, so
"a worker" is one step at a time), against the same PostgreSQL and Redis, and submits the same
work through two API processes side by side (one in this process, one ``atom api``
subprocess): E executions of a workflow whose trigger fans out to W http steps (default 20 x
10 = 200 steps). Figures come from PostgreSQL's own stamps:

* throughput: steps / (last step finished - first execution created);
* step p95: ``finished_at - started_at`` of a step (the 50 ms call plus ATOM's bookkeeping);
* wait p95: ``started_at`` of a step - ``created_at`` of its execution (queueing);
* machine CPU: the whole machine's CPU use while the load ran, and the workers' own CPU time
  per step (psutil), to see where the next limit is.

    python bench/scaling.py [--workers 1,2,4] [--executions E] [--width W] [--concurrency C]
                            [--delay-ms 50] [--json]

DATABASE_URL / REDIS_URL are used when set; otherwise embedded servers under .atom/bench, a
fresh ``atom_scaling`` database each run, and what this script started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
from _services import ROOT, admin_key, serve_api, services, start, stop, wait_ready

DATA = ROOT / ".atom" / "bench"
TIMEOUT = 120.0


def slow_server(delay: float) -> ThreadingHTTPServer:
    """A loopback HTTP server that answers every GET after ``delay`` seconds."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            time.sleep(delay)
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def document(width: int, url: str) -> dict:
    """trigger -> ``width`` http steps in parallel."""
    nodes = [{"id": "start", "type": "trigger", "config": {"kind": "manual"}}]
    nodes += [
        {
            "id": f"call{i}",
            "type": "action",
            "config": {"action_type": "http_request", "url": url, "timeout": 10},
        }
        for i in range(width)
    ]
    edges = [{"source": "start", "target": f"call{i}"} for i in range(width)]
    return {"name": f"scaling x{width}", "nodes": nodes, "connections": edges}


def wait_all(db, ids: list[str]) -> None:
    """Until every execution has ended (PostgreSQL polled directly, every 20 ms)."""
    from sqlalchemy import text

    deadline = time.monotonic() + TIMEOUT
    query = text(
        "SELECT count(*) FROM executions WHERE id = ANY(CAST(:ids AS uuid[])) "
        "AND status IN ('succeeded', 'failed', 'cancelled')"
    )
    while time.monotonic() < deadline:
        with db.connect() as conn:
            if conn.execute(query, {"ids": ids}).scalar() == len(ids):
                return
        time.sleep(0.02)
    raise TimeoutError(f"executions did not end within {TIMEOUT} s")


def figures(db, ids: list[str]) -> dict:
    """Throughput and latency of the steps of these executions, from PostgreSQL's stamps."""
    from sqlalchemy import text

    with db.connect() as conn:
        statuses = conn.execute(
            text(
                "SELECT status, count(*) FROM executions WHERE id = ANY(CAST(:ids AS uuid[])) "
                "GROUP BY status"
            ),
            {"ids": ids},
        ).all()
        rows = conn.execute(
            text(
                "SELECT e.created_at, s.started_at, s.finished_at FROM step_runs s "
                "JOIN executions e ON e.id = s.execution_id "
                "WHERE s.execution_id = ANY(CAST(:ids AS uuid[])) "
                "AND s.action_type = 'http_request' AND s.status = 'succeeded'"
            ),
            {"ids": ids},
        ).all()
    first = min(r.created_at for r in rows)
    last = max(r.finished_at for r in rows)
    span = (last - first).total_seconds()
    durations = sorted((r.finished_at - r.started_at).total_seconds() * 1000 for r in rows)
    waits = sorted((r.started_at - r.created_at).total_seconds() * 1000 for r in rows)

    def p95(values: list[float]) -> float:
        return round(statistics.quantiles(values, n=20)[-1], 1)

    return {
        "steps": len(rows),
        "executions": dict(statuses),
        "seconds": round(span, 2),
        "steps_per_s": round(len(rows) / span, 1),
        "step_p50_ms": round(statistics.median(durations), 1),
        "step_p95_ms": p95(durations),
        "wait_p95_ms": p95(waits),
    }


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) used so far by these processes and all their children."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                times = proc.cpu_times()
                total += times.user + times.system
        except psutil.Error:
            pass
    return total


def run(settings, clients, db, workers: int, args, log_dir, url: str) -> dict:
    """One configuration: N workers, a warm-up execution, then the measured load."""
    from atom.celery_app import make_celery

    app = make_celery(settings)
    procs = []
    try:
        for i in range(workers):
            hostname = f"scale{i}@bench"
            cmd = [sys.executable, "-m", "cli", "worker", "--concurrency", str(args.concurrency)]
            cmd += ["--hostname", hostname, "--loglevel", "WARNING"]
            log = log_dir / f"worker-{workers}-{i}.log"
            procs.append(start(cmd, settings, log))
            wait_ready(app, procs[-1], hostname, log)
        workflow = clients[0].create_workflow(document(args.width, url))
        warm = clients[0].execute(workflow["id"])["id"]
        wait_all(db, [warm])
        psutil.cpu_percent()  # start the machine's CPU count from here
        worker_cpu = cpu_seconds([p.pid for p in procs])
        with ThreadPoolExecutor(max_workers=4) as pool:
            ids = list(
                pool.map(
                    lambda i: clients[i % len(clients)].execute(workflow["id"])["id"],
                    range(args.executions),
                )
            )
        wait_all(db, ids)
        machine = psutil.cpu_percent()
        worker_cpu = cpu_seconds([p.pid for p in procs]) - worker_cpu
        found = figures(db, ids)
        return {
            "workers": workers,
            **found,
            "machine_cpu_pct": machine,
            "worker_cpu_ms_per_step": round(worker_cpu * 1000 / found["steps"], 1),
        }
    finally:
        for proc in procs:
            stop(proc)
        app.close()


def main(argv: list[str] | None = None) -> int:
    """Run every configuration and print a table (or JSON)."""
    from sqlalchemy import create_engine

    from atom.client import Client
    from atom.config import postgres_url
    from cli.embedded import free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--executions", type=int, default=10)
    parser.add_argument("--width", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--delay-ms", type=float, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    settings, stoppers = services(DATA, "atom_scaling")
    settings = replace(settings, http_allowlist=("127.0.0.0/8",), log_level="WARNING")
    slow = slow_server(args.delay_ms / 1000)
    url = f"http://127.0.0.1:{slow.server_port}/work"
    db = create_engine(postgres_url(settings.database_url or ""))
    log_dir = DATA / "scaling-logs"
    api_port = free_port()
    second_api = start(
        [sys.executable, "-m", "cli", "api", "--port", str(api_port), "--workers", "1"],
        replace(settings, api_port=api_port),
        log_dir / "api.log",
    )
    server = None
    results = []
    try:
        server, base = serve_api(settings)
        key = admin_key(settings, "scaling")
        clients = [Client(base, key), Client(f"http://127.0.0.1:{api_port}", key)]
        deadline = time.monotonic() + 30
        while True:  # the second API answers
            try:
                clients[1].request("GET", "/api/workflows")
                break
            except Exception as e:
                if time.monotonic() > deadline or second_api.poll() is not None:
                    raise RuntimeError(f"the second API did not start; see {log_dir}") from e
                time.sleep(0.2)
        for workers in (int(n) for n in args.workers.split(",")):
            results.append(run(settings, clients, db, workers, args, log_dir, url))
            if not args.json:
                r = results[-1]
                print(
                    f"workers={r['workers']}  steps={r['steps']}  {r['seconds']:>6} s  "
                    f"{r['steps_per_s']:>6} steps/s  step p50 {r['step_p50_ms']} ms  "
                    f"p95 {r['step_p95_ms']} ms  wait p95 {r['wait_p95_ms']} ms  "
                    f"machine CPU {r['machine_cpu_pct']}%  "
                    f"worker CPU {r['worker_cpu_ms_per_step']} ms/step  "
                    f"executions {r['executions']}",
                    flush=True,
                )
    finally:
        if server is not None:
            server.shutdown()
        stop(second_api)
        slow.shutdown()
        db.dispose()
        for stopper in stoppers:
            stopper()
    base = results[0]["steps_per_s"] if results else 0
    if args.json:
        print(json.dumps({"args": vars(args), "results": results}, indent=2))
    else:
        for r in results[1:]:
            print(f"{r['workers']} workers: {r['steps_per_s'] / base:.2f}x the throughput of 1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
