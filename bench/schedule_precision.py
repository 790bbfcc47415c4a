"""How late a scheduled run starts: from a schedule's due time to its execution and its step.

Real processes, as in production: a worker (``python -m cli worker --concurrency C``) and a
beat (``python -m cli beat``) as subprocesses, the API in this process. The workflow is a
trigger followed by one ``transform`` step. An interval schedule (``--interval``, overlap allow)
runs until ``--fires`` fires are recorded (``--cron`` adds a ``* * * * *`` schedule, which needs
``--cron-fires`` minutes); then the schedules are disabled and PostgreSQL is read directly. Per
fire, from its due time (``schedule_fires.fire_time``):

* due -> execution created: ``executions.created_at``, PostgreSQL's ``now()`` of the fire
  task's transaction (beat wake-up, broker, worker pickup of the fire task);
* due -> step started: the step's ``started_at``, stamped when the step has been claimed
  (also: the fire transaction, sending the canvas, worker pickup of ``run_step``, its prepare).

Celery task events (``task-sent`` / ``task-started``, which ATOM enables) break the time down
further: when beat sent the fire, when the worker started it, when the step's task was sent and
started. Also reported: fires by status and source (``beat``, or ``sweeper`` when the safety net
fired a slot late) and slots with no record (there should be none). Every fire counts, the first
too, which is also printed on its own: a schedule created while beat sleeps is seen at beat's next
wake-up (``MAX_INTERVAL`` in beat/main.py, 1 s). The worker is warmed up by one manual run first.
p99 of 60 fires is about the max; run more fires for a meaningful tail.

    python bench/schedule_precision.py [--interval S] [--fires N] [--cron] [--cron-fires M]
                                       [--concurrency C] [--timeout T] [--json]

DATABASE_URL / REDIS_URL are used when set (then make sure no other ATOM worker or beat uses
them); otherwise embedded servers under .atom/bench-schedule, a fresh ``atom_bench_schedule``
database each run, and what this script started is stopped at the end.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import signal
import sys
import threading
import time
from collections import Counter
from datetime import datetime

from _services import ROOT, admin_key, serve_api, services, start, stop, wait_ready

from atom.celery_app import FIRE_SCHEDULE, RUN_STEP
from atom.config import Settings

DATA = ROOT / ".atom" / "bench-schedule"
DATABASE = "atom_bench_schedule"
STEP = "step"
SETTLE = 30.0  # seconds to let the last runs finish after the schedules are disabled
# (label, from stamp, to stamp): the headline delays, then where the time goes.
STAGES = (
    ("due -> execution created", "due", "created"),
    ("due -> step started", "due", "step_started"),
    ("  due -> beat sent the fire", "due", "fire_sent"),
    ("  sent -> fire task started", "fire_sent", "fire_started"),
    ("  fire started -> execution created", "fire_started", "created"),
    ("  execution created -> step sent", "created", "step_sent"),
    ("  step sent -> step task started", "step_sent", "step_task_started"),
    ("  step task started -> step started", "step_task_started", "step_started"),
)


class Events:
    """Celery's task-sent and task-started events, kept by task id, from a background thread."""

    def __init__(self, app):
        self.app = app
        self.sent: dict[str, dict] = {}
        self.started: dict[str, float] = {}
        self.receiver = None
        self.listening = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)

    def _on_sent(self, event: dict) -> None:
        self.sent.setdefault(event["uuid"], event)

    def _on_started(self, event: dict) -> None:
        self.started.setdefault(event["uuid"], event["timestamp"])

    def _listen(self) -> None:
        with self.app.connection_for_read() as conn:
            self.receiver = self.app.events.Receiver(
                conn, handlers={"task-sent": self._on_sent, "task-started": self._on_started}
            )
            self.listening.set()
            self.receiver.capture(limit=None, timeout=None, wakeup=False)

    def start(self) -> None:
        self.thread.start()
        if not self.listening.wait(30):
            raise RuntimeError("could not listen to Celery events")

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(5)

    def sent_named(self, name: str) -> list[dict]:
        return [e for e in list(self.sent.values()) if e.get("name") == name]

    def stamps(self) -> tuple[dict, dict]:
        """{(schedule_id, due epoch): (sent, started)} of fires; {execution_id: ...} of steps."""
        fires, steps = {}, {}
        for event in self.sent_named(FIRE_SCHEDULE):
            schedule_id, fire_time = ast.literal_eval(event["args"])
            key = (schedule_id, round(datetime.fromisoformat(fire_time).timestamp(), 6))
            fires[key] = (event["timestamp"], self.started.get(event["uuid"]))
        for event in self.sent_named(RUN_STEP):
            execution_id, node_id, _epoch = ast.literal_eval(event["args"])
            if node_id == STEP:
                steps[execution_id] = (event["timestamp"], self.started.get(event["uuid"]))
        return fires, steps


def document() -> dict:
    return {
        "name": "bench-schedule",
        "nodes": [
            {"id": "start", "type": "trigger", "config": {"kind": "schedule"}},
            {
                "id": STEP,
                "type": "action",
                "config": {"action_type": "transform", "output": {"ok": True}},
            },
        ],
        "connections": [{"source": "start", "target": STEP}],
    }


def wait_for_beat(settings: Settings, beat, since: float) -> None:
    """Until the beat is active: it sets its heartbeat on every tick (60 s at most)."""
    import redis

    from atom.observe.probe import BEAT_HEARTBEAT_KEY

    client, deadline = redis.Redis.from_url(settings.events_redis), time.monotonic() + 60
    try:
        while float(client.get(BEAT_HEARTBEAT_KEY) or 0) < since:
            if beat.poll() is not None:
                raise RuntimeError(f"beat exited; see {DATA / 'beat.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"beat not active within 60 s; see {DATA / 'beat.log'}")
            time.sleep(0.1)
    finally:
        client.close()


def count_fires(db, schedule_ids: dict[str, str]) -> dict[str, int]:
    from sqlalchemy import text

    query = text("SELECT count(*) FROM schedule_fires WHERE schedule_id = :id")
    with db.connect() as conn:
        return {
            name: conn.execute(query, {"id": sid}).scalar_one()
            for name, sid in schedule_ids.items()
        }


def wait_for_fires(
    db, schedule_ids: dict[str, str], want: dict[str, int], procs: dict, deadline: float
) -> bool:
    """Until each schedule has its fires; False when the deadline came first."""
    shown = None
    while (counts := count_fires(db, schedule_ids)) and any(
        counts[name] < want[name] for name in want
    ):
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited; see {DATA / name}.log")
        if time.monotonic() > deadline:
            return False
        if counts != shown:
            shown = counts
            progress = ", ".join(f"{n} {counts[n]}/{want[n]}" for n in want)
            print(f"\rfires: {progress} ", end="", file=sys.stderr, flush=True)
        time.sleep(0.5)
    print(file=sys.stderr)
    return True


def settle(db, schedule_ids: dict[str, str]) -> None:
    """Wait (bounded) until every run the fires started has ended."""
    from sqlalchemy import text

    query = text(
        "SELECT count(*) FROM schedule_fires f JOIN executions e "
        "ON e.id = f.execution_id WHERE f.schedule_id = ANY(CAST(:ids AS uuid[])) "
        "AND e.status NOT IN ('succeeded', 'failed', 'cancelled')"
    )
    deadline = time.monotonic() + SETTLE
    with db.connect() as conn:
        while (
            conn.execute(query, {"ids": list(schedule_ids.values())}).scalar_one()
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)


def read_fires(db, schedule_id: str, events: Events) -> tuple[list[dict], dict]:
    """Every fire of the schedule with its stamps (epoch seconds), and the schedule row."""
    from sqlalchemy import text

    query = text("""
        SELECT f.fire_time, f.status, f.source, f.reason, e.id AS execution_id,
               e.status AS execution_status, e.created_at, s.started_at, s.finished_at
        FROM schedule_fires f
        LEFT JOIN executions e ON e.id = f.execution_id
        LEFT JOIN step_runs s ON s.execution_id = e.id AND s.node_id = :step
        WHERE f.schedule_id = :id ORDER BY f.fire_time""")
    with db.connect() as conn:
        rows = conn.execute(query, {"id": schedule_id, "step": STEP}).all()
        schedule = (
            conn.execute(text("SELECT * FROM schedules WHERE id = :id"), {"id": schedule_id})
            .one()
            ._asdict()
        )
    fire_stamps, step_stamps = events.stamps()

    def epoch(value: datetime | None) -> float | None:
        return value.timestamp() if value else None

    fires = []
    for row in rows:
        due = row.fire_time.timestamp()
        fire_sent, fire_started = fire_stamps.get((schedule_id, round(due, 6)), (None, None))
        step_sent, step_task_started = step_stamps.get(str(row.execution_id), (None, None))
        fires.append(
            {
                "fire_time": row.fire_time.isoformat(),
                "status": row.status,
                "source": row.source,
                "reason": row.reason,
                "execution_status": row.execution_status,
                "due": due,
                "fire_sent": fire_sent,
                "fire_started": fire_started,
                "created": epoch(row.created_at),
                "step_sent": step_sent,
                "step_task_started": step_task_started,
                "step_started": epoch(row.started_at),
                "step_finished": epoch(row.finished_at),
            }
        )
    return fires, schedule


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (as numpy's default)."""
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), min(math.floor(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(name: str, fires: list[dict], schedule: dict) -> dict:
    from atom.schedules.timing import Timing

    for fire in fires:
        fire["delays_ms"] = {
            label.strip(): (fire[b] - fire[a]) * 1000
            for label, a, b in STAGES
            if fire[a] is not None and fire[b] is not None
        }
    delays = {}
    for label, _, _ in STAGES:
        samples = [
            (f["delays_ms"][label.strip()], f["fire_time"])
            for f in fires
            if label.strip() in f["delays_ms"]
        ]
        values = [v for v, _ in samples]
        delays[label.strip()] = {"n": len(values)} | (
            {
                "p50": percentile(values, 50),
                "p95": percentile(values, 95),
                "p99": percentile(values, 99),
                "max": max(values),
                "max_at": max(samples)[1],
            }
            if values
            else {}
        )
    recorded = [datetime.fromisoformat(f["fire_time"]) for f in fires]
    timing = Timing(
        schedule["cron"], schedule["interval_seconds"], schedule["timezone"], schedule["anchor"]
    )
    expected = (
        timing.slots_between(schedule["created_at"], max(recorded), limit=10**6) if recorded else []
    )
    return {
        "schedule": name,
        "id": str(schedule["id"]),
        "cron": schedule["cron"],
        "interval_seconds": schedule["interval_seconds"],
        "fires": len(fires),
        "by_status": dict(Counter(f["status"] for f in fires)),
        "by_source": dict(Counter(f["source"] for f in fires)),
        "executions": dict(Counter(f["execution_status"] for f in fires if f["execution_status"])),
        "missing_slots": [s.isoformat() for s in sorted(set(expected) - set(recorded))],
        "unexpected_slots": [s.isoformat() for s in sorted(set(recorded) - set(expected))],
        "delays_ms": delays,
        "samples": fires,
    }


def print_table(result: dict) -> None:
    for summary in result["schedules"]:
        print(
            f"\n{summary['schedule']}: {summary['fires']} fires; status "
            f"{summary['by_status']}, source {summary['by_source']}, runs "
            f"{summary['executions']}; missing slots {len(summary['missing_slots'])}"
            f"{' ' + str(summary['missing_slots']) if summary['missing_slots'] else ''}, "
            f"off-grid {len(summary['unexpected_slots'])}"
        )
        print(f"{'delay (ms)':<38}{'n':>5}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}  max at")
        for label, _, _ in STAGES:
            row = summary["delays_ms"][label.strip()]
            figures = (
                "".join(f"{row[k]:>9.1f}" for k in ("p50", "p95", "p99", "max"))
                if row["n"]
                else f"{'-':>9}" * 4
            )
            print(f"{label:<38}{row['n']:>5}{figures}  {row.get('max_at', '')}")
        if summary["samples"] and (first := summary["samples"][0]["delays_ms"]):
            print(
                "first fire: "
                + ", ".join(
                    f"{label} {first[label]:.1f} ms"
                    for label in ("due -> beat sent the fire", "due -> step started")
                    if label in first
                )
            )
    if result["timed_out"]:
        print(f"\nTIMED OUT after {result['args']['timeout']:.0f} s: fewer fires than asked")


def measure(settings: Settings, args) -> dict:
    from sqlalchemy import create_engine

    from atom.celery_app import make_celery
    from atom.client import Client

    db = create_engine(settings.database_url or "", isolation_level="AUTOCOMMIT")
    app, hostname = make_celery(settings), f"bench-schedule-{os.getpid()}@localhost"
    events, procs, server = Events(app), {}, None
    try:
        events.start()
        server, url = serve_api(settings)
        client = Client(url, admin_key(settings, "bench-schedule"))
        procs["worker"] = start(
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
            DATA / "worker.log",
        )
        wait_ready(app, procs["worker"], hostname, DATA / "worker.log")
        workflow_id = client.create_workflow(document())["id"]
        client.wait(client.execute(workflow_id)["id"], timeout=60)  # warm-up
        beat_started = time.time()
        procs["beat"] = start(
            [sys.executable, "-m", "cli", "beat", "--loglevel=INFO"], settings, DATA / "beat.log"
        )
        wait_for_beat(settings, procs["beat"], beat_started)
        specs = {f"every {args.interval} s": {"interval_seconds": args.interval}}
        want = {f"every {args.interval} s": args.fires}
        if args.cron:
            specs["cron * * * * *"], want["cron * * * * *"] = {"cron": "* * * * *"}, args.cron_fires
        schedule_ids = {
            name: client.request(
                "POST",
                "/api/schedules",
                json={"workflow_id": workflow_id, "overlap": "allow", **spec},
            )["id"]
            for name, spec in specs.items()
        }
        done = wait_for_fires(db, schedule_ids, want, procs, time.monotonic() + args.timeout)
        for schedule_id in schedule_ids.values():
            client.request("PATCH", f"/api/schedules/{schedule_id}", json={"enabled": False})
        settle(db, schedule_ids)
        time.sleep(0.5)  # the last events
        summaries = [
            summarize(name, *read_fires(db, sid, events)) for name, sid in schedule_ids.items()
        ]
        return {"schedules": summaries, "timed_out": not done}
    finally:
        for proc in reversed(procs.values()):
            stop(proc)
        events.stop()
        if server is not None:
            server.shutdown()
        app.close()
        db.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--interval", type=int, default=1, help="seconds between fires")
    parser.add_argument("--fires", type=int, default=60, help="fires to wait for")
    parser.add_argument(
        "--cron", action="store_true", help="also run a '* * * * *' schedule (one fire a minute)"
    )
    parser.add_argument("--cron-fires", type=int, default=2, help="cron fires to wait for")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--timeout", type=float, help="seconds to wait for the fires (default: their span + 60 s)"
    )
    parser.add_argument("--json", action="store_true", help="print every fire, as JSON")
    args = parser.parse_args()
    if args.timeout is None:
        args.timeout = (
            max(args.fires * args.interval, 60 * args.cron_fires if args.cron else 0) + 60.0
        )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    settings, stoppers = services(DATA, DATABASE)
    try:
        result = measure(settings, args)
    finally:
        for stop_service in reversed(stoppers):
            stop_service()
    result["args"] = {k: v for k, v in vars(args).items() if k != "json"}
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print_table(result)
    return 1 if result["timed_out"] else 0


if __name__ == "__main__":
    sys.exit(main())
