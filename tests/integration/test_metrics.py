"""Prometheus ``/metrics`` and the monitoring ``metrics`` endpoint agree with the runs made."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from werkzeug.serving import make_server

from atom.client import Client
from atom.config import Settings
from tests.conftest import Processes, wait_for_worker
from tests.integration.helpers import action, trigger, workflow


def scrape(api_url: str, **headers: str) -> dict[str, list]:
    response = requests.get(api_url + "/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families: dict[str, list] = {}
    for family in text_string_to_metric_families(response.text):
        families.setdefault(family.name, []).extend(family.samples)
    return families


def total(families: dict[str, list], sample: str, **labels: str) -> float:
    """The sum of a sample over every series whose labels include ``labels``."""
    name = sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    return sum(
        s.value
        for s in families.get(name, [])
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


ADDER = workflow(
    "adder",
    [
        trigger(),
        action("add", "python", function="add", kwargs={"a": 1, "b": 2}),
        action("wait", "delay", seconds=0.2),
    ],
    [("start", "add"), ("add", "wait")],
)


def test_metrics_show_the_runs_just_made_across_worker_children(
    client: Client, api_url: str, worker, settings: Settings
):
    before = scrape(api_url)
    workflow_id = client.create_workflow(ADDER)["id"]
    runs = [client.execute(workflow_id) for _ in range(8)]  # 4 prefork children share them
    for run in runs:
        assert client.wait(run["id"])["status"] == "succeeded"
    after = scrape(api_url)

    step = "atom_step_duration_seconds_count"
    assert (
        total(after, step, action_type="python", status="succeeded")
        - total(before, step, action_type="python", status="succeeded")
        == 8
    )
    assert (
        total(after, step, action_type="delay", status="succeeded")
        - total(before, step, action_type="delay", status="succeeded")
        >= 8
    )
    delay_sum = total(after, "atom_step_duration_seconds_sum", action_type="delay") - total(
        before, "atom_step_duration_seconds_sum", action_type="delay"
    )
    assert delay_sum >= 8 * 0.2
    # Those came from the worker's folder, written by more than one prefork child.
    processes = {
        s.labels["process"]
        for s in after["atom_step_duration_seconds"]
        if s.labels.get("action_type") == "python"
    }
    assert f"worker-{worker.pid}" in processes
    children = list((settings.metrics_root / f"worker-{worker.pid}").glob("histogram_*.db"))
    assert len(children) >= 2, children

    execute = "/api/workflows/<uuid:workflow_id>/execute"
    assert (
        total(after, "atom_http_requests_total", endpoint=execute, method="POST", status="202")
        - total(before, "atom_http_requests_total", endpoint=execute, method="POST", status="202")
        == 8
    )
    assert total(after, "atom_http_request_duration_seconds_count", endpoint=execute) >= 8
    assert (
        total(after, "atom_executions", status="succeeded")
        - total(before, "atom_executions", status="succeeded")
        >= 8
    )
    assert total(after, "atom_step_runs", status="succeeded") >= 24
    assert total(after, "atom_up", component="database") == 1
    assert total(after, "atom_up", component="broker") == 1
    assert total(after, "atom_workers") >= 1
    assert {s.labels["queue"] for s in after["atom_queue_depth"]} >= {
        "atom.steps",
        "atom.maintenance",
    }
    for name, samples in after.items():
        assert name.startswith("atom_"), name
        for sample in samples:  # labelled by URL rule, never by a raw path with an id in it
            assert "-4" not in sample.labels.get("endpoint", ""), sample


@pytest.fixture
def token_api(settings_with) -> Iterator[str]:
    from api.app import create_app

    server = make_server(
        "127.0.0.1", 0, create_app(settings_with(metrics_token="t0ken")), threaded=True
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_metrics_token_when_configured(token_api: str, api_url: str):
    assert requests.get(token_api + "/metrics", timeout=30).status_code == 401
    wrong = requests.get(
        token_api + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=30
    )
    assert wrong.status_code == 401
    assert scrape(token_api, Authorization="Bearer t0ken")["atom_up"]
    assert requests.get(api_url + "/metrics", timeout=30).status_code == 200  # none set


def percentile_cont(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_monitoring_metrics_agree_with_the_runs(client: Client, api_url: str, make_key):
    ok = client.create_workflow(
        workflow("ok", [trigger(), action("w", "delay", seconds="{{ input.s }}")], [("start", "w")])
    )
    bad = client.create_workflow(
        workflow(
            "bad",
            [trigger(), action("boom", "transform", output="{{ input.missing.value }}")],
            [("start", "boom")],
        )
    )
    runs = [client.execute(ok["id"], {"s": s}) for s in (0.1, 0.3, 0.5)]
    runs += [client.execute(bad["id"]) for _ in range(2)]
    done = [client.wait(r["id"]) for r in runs]
    assert [d["status"] for d in done] == ["succeeded"] * 3 + ["failed"] * 2

    report = client.request("GET", "/api/workflows/monitoring/metrics?window=1h")
    assert report["window"] == "1h" and report["window_seconds"] == 3600
    assert report["executions"]["total"] == 5
    assert report["executions"]["by_status"] == {
        "queued": 0,
        "running": 0,
        "paused": 0,
        "succeeded": 3,
        "failed": 2,
        "cancelled": 0,
    }
    assert report["finished"] == {"succeeded": 3, "failed": 2, "cancelled": 0}
    assert report["success_rate"] == pytest.approx(0.6)
    durations = [
        (
            datetime.fromisoformat(d["finished_at"]) - datetime.fromisoformat(d["started_at"])
        ).total_seconds()
        * 1000
        for d in done
    ]
    for key, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert report["duration_ms"][key] == pytest.approx(
            percentile_cont(durations, fraction), abs=0.1
        ), key
    rows = {row["name"]: row for row in report["workflows"]}
    assert set(rows) == {"ok", "bad"}
    assert rows["ok"]["executions"]["by_status"]["succeeded"] == 3
    assert rows["ok"]["success_rate"] == 1.0 and rows["bad"]["success_rate"] == 0.0
    assert rows["ok"]["duration_ms"]["p50"] == pytest.approx(
        percentile_cont(durations[:3], 0.5), abs=0.1
    )
    # Every run has finished and the worker takes messages as they come: nothing waits.
    assert report["queues"]["atom.steps"] == 0 and report["workers"]["count"] >= 1

    # Tenant-scoped: another tenant sees none of it; a viewer may read; bad input is a 422.
    other = Client(api_url, make_key("viewer"))
    assert other.request("GET", "/api/workflows/monitoring/metrics")["executions"]["total"] == 0
    bad_window = requests.get(
        api_url + "/api/workflows/monitoring/metrics?window=soon",
        headers={"X-API-Key": make_key("viewer")},
        timeout=30,
    )
    assert bad_window.status_code == 422 and "window" in bad_window.json()["errors"]["query"]
    assert (
        requests.get(api_url + "/api/workflows/monitoring/metrics", timeout=30).status_code == 401
    )


def test_worker_metrics_port_serves_its_own_registry(
    processes: Processes, settings: Settings, client: Client
):
    from cli.embedded import free_port

    port = free_port()
    name = f"metrics-port@{socket.gethostname()}"
    proc = processes.start(
        "worker",
        "--queues=metrics-port",
        "--concurrency=2",
        f"--hostname={name}",
        f"--metrics-port={port}",
        name="metrics-port",
    )
    try:
        wait_for_worker(settings, proc, hostname=name)
        doc = workflow(
            "on-its-queue",
            [trigger(), {**action("t", "transform", output=1), "queue": "metrics-port"}],
            [("start", "t")],
        )
        run = client.execute(client.create_workflow(doc)["id"])
        assert client.wait(run["id"])["status"] == "succeeded"
        deadline = time.monotonic() + 10
        while True:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            families = {f.name: f.samples for f in text_string_to_metric_families(text)}
            if "atom_step_duration_seconds" in families or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        samples = [
            s
            for s in families["atom_step_duration_seconds"]
            if s.name == "atom_step_duration_seconds_count"
        ]
        assert [(s.labels["action_type"], s.labels["process"], s.value) for s in samples] == [
            ("transform", f"worker-{proc.pid}", 1.0)
        ]
        assert "atom_http_requests" not in families  # only this worker's own folder
    finally:
        processes.stop(proc)
