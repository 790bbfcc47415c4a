"""One tenant floods executions while another runs its own: does the second one wait?

Phase 1 (idle): tenant B submits N_B executions of a short workflow (one 0.2 s ``delay``
step) and we record each one's queue wait, ``started_at - created_at`` (server stamps: from
the API's insert to the first step starting). Phase 2 (abuse): tenant A fires N_A execute
requests from 8 threads as fast as it can while B submits the same N_B again. Printed: B's
p50/p95 queue wait idle and under abuse, how many of A's requests were accepted and how
many were refused with 429 by the rate limits (``ATOM_RATE_LIMIT_EXECUTE`` per key,
``ATOM_RATE_LIMIT_TENANT_EXECUTE`` per tenant; defaults 120 and 600 a minute).

    python bench/abuse.py [--flood 500] [--runs 20] [--concurrency 4] [--json]

DATABASE_URL / REDIS_URL are used when set; otherwise embedded servers under .atom/bench and
a fresh ``atom_abuse`` database; what this script started is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime

import requests
from _services import ROOT, admin_key, serve_api, services, start, stop, wait_ready

WORKFLOW = {
    "name": "abuse-bench",
    "nodes": [
        {"id": "start", "type": "trigger", "config": {"kind": "manual"}},
        {"id": "wait", "type": "action", "config": {"action_type": "delay", "seconds": 0.2}},
    ],
    "connections": [{"source": "start", "target": "wait"}],
}


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _wait_seconds(execution: dict) -> float:
    created = datetime.fromisoformat(execution["created_at"])
    started = datetime.fromisoformat(execution["started_at"])
    return (started - created).total_seconds()


def _submit(base: str, key: str, workflow_id: str) -> requests.Response:
    return requests.post(
        f"{base}/api/workflows/{workflow_id}/execute",
        json={"input": {}},
        headers={"X-API-Key": key},
        timeout=60,
    )


def _waits(base: str, key: str, ids: list[str], timeout: float = 120) -> list[float]:
    deadline, waits = time.monotonic() + timeout, {}
    while len(waits) < len(ids) and time.monotonic() < deadline:
        for execution_id in ids:
            if execution_id in waits:
                continue
            body = requests.get(
                f"{base}/api/executions/{execution_id}", headers={"X-API-Key": key}, timeout=30
            ).json()
            if body.get("started_at"):
                waits[execution_id] = _wait_seconds(body)
        time.sleep(0.2)
    if len(waits) < len(ids):
        raise RuntimeError(f"{len(ids) - len(waits)} of B's runs never started")
    return list(waits.values())


def _tenant_b(base: str, key: str, workflow_id: str, runs: int) -> list[float]:
    ids = []
    for _ in range(runs):
        answer = _submit(base, key, workflow_id)
        answer.raise_for_status()
        ids.append(answer.json()["id"])
        time.sleep(0.05)
    return _waits(base, key, ids)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flood", type=int, default=500)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    settings, stoppers = services(ROOT / ".atom" / "bench", "atom_abuse")
    settings = replace(settings, log_level="WARNING")
    log = ROOT / ".atom" / "bench" / "abuse-worker.log"
    hostname = f"bench-abuse-{os.getpid()}@localhost"
    worker = start(
        [
            sys.executable,
            "-m",
            "cli",
            "worker",
            f"--concurrency={args.concurrency}",
            f"--hostname={hostname}",
            "--loglevel=WARNING",
        ],
        settings,
        log,
    )
    server = None
    try:
        from atom.celery_app import make_celery

        wait_ready(make_celery(settings), worker, hostname, log)
        server, base = serve_api(settings)
        key_a, key_b = admin_key(settings, "flooder"), admin_key(settings, "victim")
        wf_a = requests.post(
            f"{base}/api/workflows", json=WORKFLOW, headers={"X-API-Key": key_a}, timeout=30
        ).json()["id"]
        wf_b = requests.post(
            f"{base}/api/workflows", json=WORKFLOW, headers={"X-API-Key": key_b}, timeout=30
        ).json()["id"]

        idle = _tenant_b(base, key_b, wf_b, args.runs)

        codes: list[int] = []
        with ThreadPoolExecutor(8) as pool:
            flood = [pool.submit(_submit, base, key_a, wf_a) for _ in range(args.flood)]
            time.sleep(0.5)  # A's burst is in flight before B starts
            abused = _tenant_b(base, key_b, wf_b, args.runs)
            codes = [f.result().status_code for f in flood]
        result = {
            "flood_requests": args.flood,
            "flood_accepted": codes.count(202),
            "flood_refused_429": codes.count(429),
            "b_runs": args.runs,
            "b_wait_idle_p50_s": round(statistics.median(idle), 3),
            "b_wait_idle_p95_s": round(_p(idle, 0.95), 3),
            "b_wait_abuse_p50_s": round(statistics.median(abused), 3),
            "b_wait_abuse_p95_s": round(_p(abused, 0.95), 3),
            "worker_concurrency": args.concurrency,
            "rate_limit_execute": settings.rate_limit_execute,
            "rate_limit_tenant_execute": settings.rate_limit_tenant_execute,
        }
        result["b_p95_increase_s"] = round(
            result["b_wait_abuse_p95_s"] - result["b_wait_idle_p95_s"], 3
        )
        if args.json:
            print(json.dumps(result))
        else:
            for name, value in result.items():
                print(f"{name:28} {value}")
    finally:
        if server is not None:
            server.shutdown()
        stop(worker)
        for stopper in stoppers:
            stopper()
    return 0


if __name__ == "__main__":
    sys.exit(main())
