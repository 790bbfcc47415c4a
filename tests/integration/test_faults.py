"""Fault injection with real processes and real signals: each test asserts the outcome.

Steps here run on their own queue, ``faults``, served by workers each test starts and kills;
the session's worker (which also serves the maintenance queue) and a real beat keep running,
so the self-healing loop works as it does in production, with default intervals.
"""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text, update

from atom.client import Client
from atom.config import Settings
from tests.conftest import Processes, wait_for_worker
from tests.integration.helpers import action, by_node, trigger, workflow
from tests.integration.loopback import LoopbackService

QUEUE = "faults"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def beat(processes: Processes, worker) -> Iterator[subprocess.Popen]:
    """A real beat process firing the reconciler on the maintenance queue."""
    proc = processes.start("beat", name="beat")
    time.sleep(2)
    assert proc.poll() is None, Path(proc.log_path).read_text()
    yield proc
    processes.stop(proc)


@pytest.fixture
def fault_workers(processes: Processes, settings: Settings) -> Iterator:
    """start() runs a worker on the faults queue; all of them stop when the test ends."""
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        name = f"faults{next(_names)}@{socket.gethostname()}"
        proc = processes.start(
            "worker",
            f"--queues={QUEUE}",
            "--concurrency=2",
            f"--hostname={name}",
            name=name.split("@")[0],
        )
        started.append(proc)
        wait_for_worker(settings, proc, hostname=name)
        return proc

    yield start
    for proc in started:
        processes.stop(proc)


def on_faults(node: dict) -> dict:
    return {**node, "queue": QUEUE}


def slow_side_effect(service: LoopbackService, seconds: float) -> None:
    def handler(req, match):
        time.sleep(seconds)
        return 200, {"done": True}

    service.route(r"POST /side-effect", handler)


def side_effect_workflow(service: LoopbackService) -> dict:
    return workflow(
        "side-effect",
        [
            trigger(),
            on_faults(
                action(
                    "call",
                    "http_request",
                    method="POST",
                    url=service.url + "/side-effect",
                    json={"order": "{{ input.order }}"},
                )
            ),
            on_faults(action("after", "transform", output="{{ steps.call.output.body.done }}")),
        ],
        [("start", "call"), ("call", "after")],
    )


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigkill_worker_mid_step_then_another_finishes_the_run(
    client: Client,
    service: LoopbackService,
    processes: Processes,
    settings: Settings,
    beat,
    fault_workers,
):
    slow_side_effect(service, 3)
    first = fault_workers()
    run = client.execute(client.create_workflow(side_effect_workflow(service))["id"], {"order": 7})
    wait_until(lambda: service.calls("POST", "/side-effect"), 20, "the step to start")
    killed_at = time.monotonic()
    processes.stop(first, signal.SIGKILL)
    fault_workers()

    done = client.wait(run["id"], timeout=60)
    assert time.monotonic() - killed_at < 60
    assert done["status"] == "succeeded", done
    calls = service.calls("POST", "/side-effect")
    assert 1 <= len(calls) <= 2
    assert {c.headers["Idempotency-Key"] for c in calls} == {f"{run['id']}:call"}
    assert by_node(done)["call"]["attempts"] == len(calls)
    assert by_node(done)["after"]["output"] is True


def test_flushall_with_no_worker_then_the_run_completes(
    client: Client,
    service: LoopbackService,
    processes: Processes,
    settings: Settings,
    beat,
    fault_workers,
):
    slow_side_effect(service, 0)
    run = client.execute(client.create_workflow(side_effect_workflow(service))["id"], {"order": 8})
    broker = redis.Redis.from_url(settings.celery_broker)
    wait_until(lambda: broker.llen(QUEUE) > 0, 10, "the step message to be queued")
    broker.flushall()
    assert broker.llen(QUEUE) == 0
    fault_workers()

    done = client.wait(run["id"], timeout=120)
    assert done["status"] == "succeeded", done
    assert len(service.calls("POST", "/side-effect")) == 1


def test_the_same_step_message_delivered_twice_has_one_side_effect(
    client: Client,
    service: LoopbackService,
    processes: Processes,
    settings: Settings,
    fault_workers,
):
    slow_side_effect(service, 2)
    run = client.execute(client.create_workflow(side_effect_workflow(service))["id"], {"order": 9})
    broker = redis.Redis.from_url(settings.celery_broker)
    wait_until(lambda: broker.llen(QUEUE) > 0, 10, "the step message to be queued")
    broker.lpush(QUEUE, broker.lindex(QUEUE, 0))  # the very same message, twice
    assert broker.llen(QUEUE) == 2
    fault_workers()

    done = client.wait(run["id"], timeout=60)
    assert done["status"] == "succeeded", done
    wait_until(lambda: broker.llen(QUEUE) == 0, 30, "the queue to drain")
    time.sleep(2)
    assert len(service.calls("POST", "/side-effect")) == 1
    assert by_node(client.execution(run["id"]))["call"]["attempts"] == 1


def test_database_connections_killed_during_a_run(client: Client, settings: Settings):
    doc = workflow(
        "db-chaos",
        [trigger()] + [action(f"s{i}", "delay", seconds=0.4) for i in range(6)],
        [("start", "s0")] + [(f"s{i}", f"s{i + 1}") for i in range(5)],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    admin = create_engine(settings.database_url or "", isolation_level="AUTOCOMMIT")
    killed = 0
    try:
        for _ in range(4):
            time.sleep(0.5)
            with admin.connect() as conn:
                killed += conn.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar()
    finally:
        admin.dispose()
    assert killed > 0
    done = client.wait(run["id"], timeout=90)
    assert done["status"] == "succeeded", done
    assert done["metrics"]["steps_succeeded"] == 6


def test_malformed_and_unknown_messages_are_rejected_and_the_queue_drains(
    client: Client,
    service: LoopbackService,
    processes: Processes,
    settings: Settings,
    fault_workers,
):
    from atom.celery_app import make_celery

    broker = redis.Redis.from_url(settings.celery_broker)
    broker.lpush(QUEUE, b"{this is not json")
    broker.lpush(
        QUEUE,
        b'{"body": "bm90IGpzb24=", "content-type": "application/json", '
        b'"content-encoding": "utf-8", "properties": {"body_encoding": '
        b'"base64", "delivery_tag": "x"}, "headers": {}}',
    )
    app = make_celery(settings)
    app.send_task("atom.no_such_task", args=(1,), queue=QUEUE)
    app.close()
    slow_side_effect(service, 0)
    worker = fault_workers()

    run = client.execute(client.create_workflow(side_effect_workflow(service))["id"], {"order": 10})
    done = client.wait(run["id"], timeout=60)
    assert done["status"] == "succeeded", done
    wait_until(lambda: broker.llen(QUEUE) == 0, 30, "the queue to drain")
    log = Path(worker.log_path).read_text()
    assert "atom.no_such_task" in log and "unregistered" in log.lower()
    assert log.count("discarded a malformed broker message") == 2
    assert "Connection to broker lost" not in log
    assert worker.poll() is None, "a bad message must not take the worker down"


def test_a_retry_longer_than_half_the_visibility_timeout_is_parked_then_woken(
    client: Client, service: LoopbackService, processes: Processes, settings: Settings, beat
):
    """The worker keeps no countdown the broker could redeliver early: the retry is parked in
    PostgreSQL (retry_at) and the reconciler re-drives the run once it is due."""
    from atom.store.db import make_engine, make_sessionmaker
    from atom.store.models import Execution, StepRun

    answers = [503]
    service.route(
        r"POST /side-effect",
        lambda req, m: (answers.pop(0), {}) if answers else (200, {"done": True}),
    )
    name = f"faults{next(_names)}@{socket.gethostname()}"
    parked_worker = processes.start(
        "worker",
        f"--queues={QUEUE}",
        "--concurrency=1",
        f"--hostname={name}",
        env={"ATOM_VISIBILITY_TIMEOUT": "120"},
        name="parking",
    )
    wait_for_worker(settings, parked_worker, hostname=name)
    doc = side_effect_workflow(service)
    doc["nodes"][1]["retry"] = {"max_retries": 2, "retry_delay": 61}  # > 120 s / 2
    run = client.execute(client.create_workflow(doc)["id"], {"order": 11})
    try:
        parked = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            parked = by_node(client.execution(run["id"]))["call"]
            if parked["status"] == "pending" and parked["attempts"] == 1:
                break
            time.sleep(0.2)
        assert parked and parked["error"]["retry_in_s"] == 61, parked
        broker = redis.Redis.from_url(settings.celery_broker)
        assert broker.llen(QUEUE) == 0, "a parked retry must not sit in the broker"
        time.sleep(2)
        assert by_node(client.execution(run["id"]))["call"]["attempts"] == 1

        # Let time pass for the database: the retry fell due 40 s ago.
        factory = make_sessionmaker(make_engine(settings.database_url or ""))
        past = datetime.now(UTC) - timedelta(seconds=40)
        with factory.begin() as session:
            session.execute(
                update(StepRun)
                .where(StepRun.execution_id == run["id"])
                .values(retry_at=past, updated_at=past)
            )
            session.execute(
                update(Execution).where(Execution.id == run["id"]).values(updated_at=past)
            )
        done = client.wait(run["id"], timeout=60)
        assert done["status"] == "succeeded", done
        assert by_node(done)["call"]["attempts"] == 2
        assert len(service.calls("POST", "/side-effect")) == 2
    finally:
        processes.stop(parked_worker)


def test_worker_refuses_a_visibility_timeout_shorter_than_its_countdowns(settings: Settings):
    import os
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "cli", "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **settings.as_env(), "ATOM_VISIBILITY_TIMEOUT": "30"},
    )
    assert result.returncode != 0
    assert "ATOM_VISIBILITY_TIMEOUT is 30 s" in result.stderr
