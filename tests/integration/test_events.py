"""Live events: every transition on Redis pub/sub, streamed as Server-Sent Events, followed by
``atom submit --wait``; and the JSON log lines that name the run they are about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from atom.client import ApiError, Client
from atom.config import Settings
from tests.conftest import ROOT
from tests.integration.helpers import action, trigger, workflow
from tests.integration.loopback import LoopbackService

CHAIN = workflow(
    "chain",
    [trigger()] + [action(f"s{i}", "delay", seconds=0.3) for i in range(1, 4)],
    [("start", "s1"), ("s1", "s2"), ("s2", "s3")],
)


def follow_in_background(client: Client, execution_id: str) -> tuple[list, threading.Thread]:
    seen: list[tuple[str, dict]] = []

    def run() -> None:
        for item in client.events(execution_id):
            seen.append(item)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return seen, thread


def test_a_follower_sees_each_step_in_order_and_the_final_status(client: Client):
    workflow_id = client.create_workflow(CHAIN)["id"]
    run = client.execute(workflow_id)
    seen, thread = follow_in_background(client, run["id"])
    thread.join(60)
    assert not thread.is_alive(), "the stream did not close after the run ended"

    names = [name for name, _ in seen]
    assert names[0] == "snapshot" and names[-1] == "end", names
    expected = [
        (node, status) for node in ("s1", "s2", "s3") for status in ("running", "succeeded")
    ]
    live = [(d["node_id"], d["status"]) for n, d in seen if n == "step"]
    assert live == sorted(live, key=expected.index), live  # in order, each once
    # A transition not seen live had happened before the snapshot was taken.
    snapshot = {s["node_id"]: s["status"] for s in seen[0][1]["steps"]}
    for node, status in expected:
        if (node, status) not in live:
            assert (
                snapshot[node]
                in {"running": ("running", "succeeded"), "succeeded": ("succeeded",)}[status]
            ), (node, seen)
    assert {("s2", "running"), ("s3", "running"), ("s3", "succeeded")} <= set(live)
    assert [d["status"] for n, d in seen if n == "execution"][-1] == "succeeded"
    end = seen[-1][1]
    assert end["status"] == "succeeded" and end["id"] == run["id"]
    assert [s["status"] for s in end["steps"] if s["node_id"] != "start"] == ["succeeded"] * 3


def test_a_late_follower_gets_the_snapshot_and_the_end_at_once(client: Client):
    run = client.execute(client.create_workflow(CHAIN)["id"])
    client.wait(run["id"])
    started = time.monotonic()
    seen = list(client.events(run["id"]))
    assert time.monotonic() - started < 5
    assert [n for n, _ in seen] == ["snapshot", "end"]
    assert seen[-1][1]["status"] == "succeeded"


def test_events_of_a_failing_retried_step_and_the_failed_end(client: Client):
    doc = workflow(
        "flaky",
        [
            trigger(),
            {
                **action("boom", "python", function="missing_fn"),
                "retry": {"max_retries": 1, "retry_delay": 0.2},
            },
        ],
        [("start", "boom")],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    seen = list(client.events(run["id"]))
    assert seen[-1][0] == "end" and seen[-1][1]["status"] == "failed"
    # A follower sees what happened after it subscribed: the snapshot covers what came
    # before. Whatever it joined, the step's last known state is the failure.
    snapshot_steps = {st["node_id"]: st["status"] for st in seen[0][1]["steps"]}
    statuses = [snapshot_steps["boom"]] + [
        d["status"] for n, d in seen if n == "step" and d["node_id"] == "boom"
    ]
    assert statuses[-1] == "failed", seen
    assert [d["status"] for n, d in seen if n == "execution"][-1] == "failed"


def test_events_are_tenant_scoped_and_need_a_key(api_url: str, make_key, worker):
    owner = Client(api_url, make_key("admin", tenant="events-owner"))
    run = owner.execute(owner.create_workflow(CHAIN)["id"])
    viewer = Client(api_url, make_key("viewer", tenant="events-owner"))
    assert [n for n, _ in viewer.events(run["id"])][-1] == "end"
    stranger = Client(api_url, make_key("admin", tenant="events-stranger"))
    with pytest.raises(ApiError) as caught:
        list(stranger.events(run["id"]))
    assert caught.value.status == 404
    anonymous = requests.get(f"{api_url}/api/executions/{run['id']}/events", timeout=10)
    assert anonymous.status_code == 401


def _atom(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_submit_wait_shows_live_steps_with_a_progress_bar(
    settings: Settings, api_url: str, make_key, worker, tmp_path: Path
):
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(CHAIN))
    env = {**settings.as_env(), "ATOM_API_URL": api_url, "ATOM_API_KEY": make_key("editor")}
    done = _atom("submit", str(path), "--wait", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    order = [
        next(i for i, line in enumerate(lines) if f" {node} " in line and "succeeded" in line)
        for node in ("s1", "s2", "s3")
    ]
    assert order == sorted(order)
    assert "[" + "#" * 20 + "] 3/3" in done.stdout
    assert "execution succeeded" in done.stdout
    assert "polling instead" not in done.stderr
    final = json.loads(done.stdout[done.stdout.index("{") :])
    assert final["status"] == "succeeded"


def test_watch_falls_back_to_polling_when_the_stream_fails():
    """An API (here a stand-in) whose event stream fails: the client polls instead."""
    service = LoopbackService().start()
    try:
        execution = {
            "id": "e1",
            "status": "succeeded",
            "steps": [{"node_id": "a", "status": "succeeded", "attempts": 1}],
        }
        service.route(r"GET /api/executions/e1/events", lambda req, m: (502, {"message": "x"}))
        service.route(r"GET /api/executions/e1", lambda req, m: (200, execution))
        seen = list(Client(service.url, "key").watch("e1"))
    finally:
        service.stop()
    assert [name for name, _ in seen] == ["snapshot", "end"]
    assert seen[-1][1]["status"] == "succeeded"
    assert service.calls("GET", "/api/executions/e1/events")


def test_worker_logs_are_json_lines_naming_execution_node_attempt_and_tenant(
    client: Client, worker
):
    doc = workflow(
        "logged", [trigger(), action("say", "log", message="hello from a step")], [("start", "say")]
    )
    run = client.execute(client.create_workflow(doc)["id"])
    assert client.wait(run["id"])["status"] == "succeeded"
    deadline = time.monotonic() + 10
    while True:
        lines = Path(worker.log_path).read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        about = [r for r in records if r.get("execution_id") == run["id"]]
        said = [r for r in about if r["message"] == "hello from a step"]
        if said or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert said, about
    (record,) = said
    assert record["node_id"] == "say" and record["attempt"] == 1
    assert record["tenant"] and record["level"] == "INFO" and record["logger"] == "atom.workflow"
    assert any(r["logger"] == "atom.worker" and "finished" in r["message"] for r in about)
    # Every line the worker wrote is one JSON object.
    assert all(line.startswith("{") for line in lines if line.strip()), [
        line for line in lines if line.strip() and not line.startswith("{")
    ][:5]
