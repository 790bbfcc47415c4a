"""Chaos mixes: runs submitted while Redis restarts, PostgreSQL restarts, or workers are
SIGKILLed; prints runs accepted, finished, lost, duplicated and the time to recover.

Every run is trigger -> ``call`` (a POST to a loopback server that takes 0.3 s and counts the
side effect by its ``Idempotency-Key``) -> ``after``. Runs are submitted at a steady rate for
the whole mix, through the API, while the fault happens:

* ``redis``: Redis is stopped for ``--down`` seconds halfway through (its data is lost: no
  persistence), then started on the same port.
* ``postgres``: PostgreSQL is stopped (fast shutdown) for ``--down`` seconds halfway through.
* ``sigkill``: one of the two workers is SIGKILLed every 2 s and started again.

Then it waits (up to ``--settle`` s) for every accepted run to end. ``lost``: accepted runs
not ended by then; ``effects``: distinct side effects the service saw (by key); ``missing``:
succeeded runs without one; ``repeated``: calls that repeated a key (a delivery SIGKILLed
mid-call is taken over and calls again with the same ``Idempotency-Key``, which the service
uses to perform the effect once); ``recover``: seconds from the service's return (or the
last kill) until every run had ended. ``tests/faults/test_chaos.py`` runs the same mixes
(and two beats with the active one killed) as tests, with smaller run counts.

    python bench/chaos.py [--mix redis|postgres|sigkill|all] [--runs 60] [--down 5]

Always starts its own embedded PostgreSQL and Redis under .atom/chaos (it restarts them),
two workers (2 processes each) and a beat, with the reconciler every 2 s and a stall after
6 s; everything it started is stopped at the end.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import replace

from _services import ROOT, admin_key, serve_api, start, stop, wait_ready

from atom.config import Settings

DATA = ROOT / ".atom" / "chaos"
RECOVERY = {"stall_seconds": 6.0, "reconcile_interval": 2.0}


def loopback():
    sys.path.insert(0, str(ROOT))
    from tests.integration.loopback import LoopbackService

    service = LoopbackService().start()

    def handler(req, match):
        time.sleep(0.3)
        return 200, {"done": True}

    service.route(r"POST /side-effect", handler)
    return service


def workflow(url: str) -> dict:
    return {
        "name": "chaos",
        "nodes": [
            {"id": "start", "type": "trigger", "config": {}},
            {
                "id": "call",
                "type": "action",
                "config": {
                    "action_type": "http_request",
                    "method": "POST",
                    "url": url + "/side-effect",
                    "json": {"n": "{{ input.n }}"},
                },
            },
            {
                "id": "after",
                "type": "action",
                "config": {"action_type": "transform", "output": "{{ steps.call.output.body }}"},
            },
        ],
        "connections": [
            {"source": "start", "target": "call"},
            {"source": "call", "target": "after"},
        ],
    }


class Platform:
    """Embedded PostgreSQL and Redis this script may restart, workers, beat, the API."""

    def __init__(self) -> None:
        from atom.store.migrations import upgrade
        from cli import embedded

        self.embedded = embedded
        self.redis_port = embedded.free_port()
        self.redis = embedded.start_redis(DATA / "redis", port=self.redis_port)
        self.postgres = embedded.start_postgres(DATA / "postgres")
        self.postgres.drop_database("atom_chaos")
        url = self.postgres.create_database("atom_chaos")
        upgrade(url)
        self.settings = replace(
            Settings.from_env(),
            database_url=url,
            redis_url=self.redis.url,
            data_dir=DATA,
            http_allowlist=("127.0.0.0/8",),
            # The mixes submit hundreds of runs a minute from one key: the per-key execute
            # budget would refuse most of them and hide what the faults do.
            rate_limit_enabled=False,
            **RECOVERY,
        )
        self.workers: dict[str, object] = {}
        self.beat = None
        self.server = None

    def start_worker(self, name: str) -> None:
        from atom.celery_app import make_celery

        hostname = f"{name}@chaos"
        log = DATA / "logs" / f"{name}.log"
        proc = start(
            [sys.executable, "-m", "cli", "worker", "-c", "2", "-n", hostname, "-l", "WARNING"],
            self.settings,
            log,
        )
        app = make_celery(self.settings)
        try:
            wait_ready(app, proc, hostname, log)
        finally:
            app.close()
        self.workers[name] = proc

    def start_all(self):
        from atom.client import Client

        for name in ("w1", "w2"):
            self.start_worker(name)
        self.beat = start(
            [sys.executable, "-m", "cli", "beat", "-l", "WARNING"],
            self.settings,
            DATA / "logs" / "beat.log",
        )
        self.server, url = serve_api(self.settings)
        return Client(url, admin_key(self.settings, "chaos"), timeout=60)

    def restart_redis(self, down: float) -> None:
        self.redis.stop()
        time.sleep(down)
        self.redis = self.embedded.start_redis(DATA / "redis", port=self.redis_port)

    def restart_postgres(self, down: float) -> None:
        self.postgres.stop()
        time.sleep(down)
        self.postgres = self.embedded.start_postgres(DATA / "postgres")

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
        for proc in [*self.workers.values(), self.beat]:
            if proc is not None:
                stop(proc)
        self.redis.stop()
        self.postgres.stop()


def inject(platform: Platform, mix: str, down: float, stop_at: float) -> None:
    """The fault of ``mix``; returns when the service is back (or the kills are over)."""
    if mix == "redis":
        platform.restart_redis(down)
    elif mix == "postgres":
        platform.restart_postgres(down)
    elif mix == "sigkill":
        turn = 0
        while time.monotonic() < stop_at:
            name = ("w1", "w2")[turn % 2]
            platform.workers[name].send_signal(signal.SIGKILL)  # type: ignore[attr-defined]
            stop(platform.workers[name])  # reaps the rest of its process group
            platform.start_worker(name)
            turn += 1
            time.sleep(2)


def wait_ended(client, accepted: list[str], deadline: float) -> dict[str, str]:
    """Poll until every accepted run has ended (or ``deadline``); run id -> final status."""
    ended: dict[str, str] = {}
    while time.monotonic() < deadline and len(ended) < len(accepted):
        for run in accepted:
            if run in ended:
                continue
            try:
                status = client.execution(run)["status"]
            except Exception:
                break
            if status in {"succeeded", "failed", "cancelled"}:
                ended[run] = status
        time.sleep(0.5)
    return ended


def run_mix(mix: str, runs: int, down: float, settle: float) -> dict:
    """One mix on a fresh platform; the figures."""
    platform = Platform()
    service = loopback()
    try:
        client = platform.start_all()
        workflow_id = client.create_workflow(workflow(service.url))["id"]
        accepted: list[str] = []
        refused = Counter()
        duration = 20.0
        stop_at = time.monotonic() + duration

        def submit() -> None:
            interval = duration / runs
            for n in range(runs):
                try:
                    accepted.append(client.execute(workflow_id, {"n": n})["id"])
                except Exception as e:
                    refused[type(e).__name__] += 1
                time.sleep(max(0.0, interval))

        submitter = threading.Thread(target=submit)
        submitter.start()
        time.sleep(duration / 2)
        inject(platform, mix, down, stop_at)
        back = time.monotonic()
        submitter.join()
        ended = wait_ended(client, accepted, back + settle)
        recover = time.monotonic() - back
        effects = Counter(c.headers.get("Idempotency-Key") for c in service.calls("POST", "/"))
        succeeded = sum(1 for s in ended.values() if s == "succeeded")
        return {
            "mix": mix,
            "accepted": len(accepted),
            "refused": sum(refused.values()),
            "finished": len(ended),
            "succeeded": succeeded,
            "lost": len(accepted) - len(ended),
            # Side effects: distinct Idempotency-Keys the service saw; "missing": succeeded
            # runs whose effect never arrived; "repeated": calls that repeated a key (a
            # delivery killed mid-call is taken over and calls again with the same key).
            "effects": len(effects),
            "missing": max(0, succeeded - len(effects)),
            "duplicated": sum(n - 1 for n in effects.values() if n > 1),
            "recover_s": round(recover, 1),
        }
    finally:
        service.stop()
        platform.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mix", choices=["redis", "postgres", "sigkill", "all"], default="all")
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--down", type=float, default=5.0)
    parser.add_argument("--settle", type=float, default=120.0)
    args = parser.parse_args()
    mixes = ["redis", "postgres", "sigkill"] if args.mix == "all" else [args.mix]
    print("mix        accepted refused finished succeeded lost effects missing repeated recover_s")
    for mix in mixes:
        r = run_mix(mix, args.runs, args.down, args.settle)
        print(
            f"{r['mix']:<10} {r['accepted']:>8} {r['refused']:>7} {r['finished']:>8} "
            f"{r['succeeded']:>9} {r['lost']:>4} {r['effects']:>7} {r['missing']:>7} "
            f"{r['duplicated']:>8} {r['recover_s']:>9}",
            flush=True,
        )


if __name__ == "__main__":
    main()
