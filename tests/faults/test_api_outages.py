"""The API while Redis or PostgreSQL is down (issue 10, faults 7 and 8): a run accepted
during a broker outage starts once the broker is back, exactly once; with the database
down every route answers 503 with Retry-After, never a 500."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
import requests
from werkzeug.serving import make_server

from atom.config import Settings
from cli.embedded import free_port
from tests.faults.conftest import Stack
from tests.faults.test_outages import side_effect_workflow
from tests.integration.loopback import LoopbackService

# The reconciler notices a run that was never sent within seconds, not the default 30.
FAST_RECOVERY = {"ATOM_STALL_SECONDS": "4", "ATOM_RECONCILE_INTERVAL": "2"}


def test_execute_during_a_redis_outage_is_accepted_and_runs_once_when_redis_is_back(
    stack: Stack, service: LoopbackService
):
    stack.worker(queues="atom.steps,atom.maintenance", env=FAST_RECOVERY)
    stack.beat(env=FAST_RECOVERY)
    client = stack.api()
    workflow_id = client.create_workflow(side_effect_workflow(service, 0))["id"]
    url = f"{client.base_url}/api/workflows/{workflow_id}/execute"
    key = {"Idempotency-Key": "order-1"}
    stack.stop_redis()
    try:
        asked = time.monotonic()
        response = client.session.post(url, json={"input": {"order": 1}}, headers=key, timeout=30)
        took = time.monotonic() - asked
        # The client did not trust that answer and retries with the same key.
        retried = client.session.post(url, json={"input": {"order": 1}}, headers=key, timeout=30)
    finally:
        stack.start_redis()
    assert retried.status_code == 202 and retried.json()["id"] == response.json()["id"]
    print(f"\nexecute answered {response.status_code} in {took:.2f} s with Redis down")
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["status"] == "queued"
    back = time.monotonic()
    done = client.wait(run["id"], timeout=45)
    print(f"run finished {time.monotonic() - back:.1f} s after Redis came back")
    assert done["status"] == "succeeded", done
    assert len(service.calls("POST", "/side-effect")) == 1
    runs = client.request("GET", f"/api/executions?workflow_id={workflow_id}")
    assert len(runs["items"] if isinstance(runs, dict) else runs) == 1


@pytest.fixture
def api_without_database(settings: Settings, make_key):
    """An API whose PostgreSQL is unreachable (nothing listens on its port), and a key."""
    from api.app import create_app

    key = make_key("admin")
    down = replace(
        settings, database_url=f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/atom"
    )
    server = make_server("127.0.0.1", 0, create_app(down), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", key
    server.shutdown()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/workflows"),
        ("POST", "/api/workflows/00000000-0000-0000-0000-000000000001/execute"),
        ("GET", "/api/executions"),
        ("GET", "/api/executions/00000000-0000-0000-0000-000000000001"),
        ("POST", "/api/executions/00000000-0000-0000-0000-000000000001/cancel"),
        ("GET", "/api/schedules"),
    ],
)
def test_with_postgres_down_every_route_answers_503_with_retry_after(
    api_without_database, method: str, path: str
):
    url, key = api_without_database
    response = requests.request(
        method, url + path, headers={"X-API-Key": key}, json={"input": {}}, timeout=30
    )
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    body = response.json()
    assert body["code"] == 503 and "database" in body["message"]
    assert "127.0.0.1" not in response.text  # the driver's message stays in the log


def test_with_postgres_down_health_reports_the_database_down(api_without_database):
    url, _key = api_without_database
    response = requests.get(url + "/api/workflows/monitoring/health", timeout=30)
    assert response.status_code == 503
    assert response.json()["components"]["database"] != "ok", response.json()


def test_execute_answers_429_when_the_step_queue_is_full_and_accepts_again_once_it_drains(
    stack: Stack, service: LoopbackService
):
    stack.settings = replace(stack.settings, max_queue_depth=5)
    client = stack.api()
    workflow_id = client.create_workflow(side_effect_workflow(service, 0))["id"]
    url = f"{client.base_url}/api/workflows/{workflow_id}/execute"
    answers = [
        client.session.post(url, json={"input": {"order": i}}, timeout=30) for i in range(12)
    ]
    codes = [a.status_code for a in answers]
    print(f"\nwith no worker: {codes}")
    assert codes[:5] == [202] * 5, codes
    assert set(codes[5:]) == {429}, codes
    refused = answers[-1]
    assert int(refused.headers["Retry-After"]) > 0
    assert "ATOM_MAX_QUEUE_DEPTH" in refused.json()["message"]
    assert stack.broker().llen("atom.steps") == 5, "Redis must hold a bounded number"

    stack.worker()
    for run in (a.json()["id"] for a in answers[:5]):
        assert client.wait(run, timeout=30)["status"] == "succeeded"
    again = client.session.post(url, json={"input": {"order": 99}}, timeout=30)
    assert again.status_code == 202, again.text
    assert client.wait(again.json()["id"], timeout=30)["status"] == "succeeded"
    assert len(service.calls("POST", "/side-effect")) == 6  # nothing refused ran


def test_the_same_idempotency_key_never_starts_a_second_run(stack: Stack, service: LoopbackService):
    stack.worker()
    client = stack.api()
    workflow_id = client.create_workflow(side_effect_workflow(service, 0))["id"]
    other_id = client.create_workflow(side_effect_workflow(service, 0))["id"]
    url = f"{client.base_url}/api/workflows/{{}}/execute"

    def post(workflow: str, key: str):
        return client.session.post(
            url.format(workflow),
            json={"input": {"order": 1}},
            headers={"Idempotency-Key": key},
            timeout=30,
        )

    first, again = post(workflow_id, "k-1"), post(workflow_id, "k-1")
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert client.wait(first.json()["id"], timeout=30)["status"] == "succeeded"
    assert post(workflow_id, "k-1").json()["id"] == first.json()["id"]  # after it ended too
    assert post(other_id, "k-1").status_code == 409
    bad = post(workflow_id, "")
    assert bad.status_code == 422 and "Idempotency-Key" in bad.json()["errors"], bad.text
    assert post(workflow_id, "k-2").json()["id"] != first.json()["id"]
    time.sleep(1)
    assert len(service.calls("POST", "/side-effect")) == 2


def test_with_rate_limits_on_execute_during_a_redis_outage_still_answers_202(
    stack: Stack, service: LoopbackService
):
    """Rate limits count in Redis; with Redis down they fail open (a limit protects, it does
    not decide), so execute takes the run as it does with limits off, never a 500."""
    stack.settings = replace(stack.settings, rate_limit_enabled=True)
    client = stack.api()
    workflow_id = client.create_workflow(side_effect_workflow(service, 0))["id"]
    url = f"{client.base_url}/api/workflows/{workflow_id}/execute"
    stack.stop_redis()
    try:
        answers = [
            client.session.post(url, json={"input": {"order": i}}, timeout=30) for i in range(3)
        ]
    finally:
        stack.start_redis()
    assert [a.status_code for a in answers] == [202] * 3, [a.text for a in answers]
    assert all(a.json()["status"] == "queued" for a in answers)
    limited = client.session.post(url, json={"input": {"order": 9}}, timeout=30)
    assert limited.status_code == 202 and "RateLimit-Limit" in limited.headers, limited.headers
