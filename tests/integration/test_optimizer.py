"""The optimizer on real runs: a loopback service with delays and failures, the real worker,
the API; predictions checked by running the applied version (API.md "Optimizer")."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from werkzeug.serving import make_server

from atom.client import ApiError, Client
from atom.config import Settings, with_redis_db
from tests.conftest import Processes, wait_for_worker
from tests.integration.helpers import action, trigger, workflow

ANALYZE = "/api/workflows/optimization/analyze"
RESULTS = "/api/workflows/optimization/results"


RUNS = 5
"""Runs before and after applying: the median of five rides out one or two slow runs on a
loaded machine."""
SLOTS = 6
"""Worker processes of this module's platform: six independent calls fit in one wave."""


@pytest.fixture(scope="module")
def platform(settings: Settings, processes: Processes) -> Iterator[Settings]:
    """A worker with six slots and an API, on a broker of their own (the session worker has
    four: six parallel calls would take two waves there)."""
    assert settings.redis_url
    own = replace(
        settings,
        broker_url=with_redis_db(settings.redis_url, 11),
        result_backend=with_redis_db(settings.redis_url, 12),
        worker_concurrency=SLOTS,
        # the worker's half of the periodic optimizer; beat (started by the one test that
        # wants it) sends the passes
        optimization_enabled=True,
        optimization_interval=1.0,
    )
    proc = processes.start(
        "worker",
        f"--concurrency={SLOTS}",
        f"--hostname=optimizer@{socket.gethostname()}",
        env=own.as_env(),
        name="optimizer-worker",
    )
    wait_for_worker(own, proc)
    yield own
    processes.stop(proc)


@pytest.fixture(scope="module")
def api(platform: Settings) -> Iterator[str]:
    """The API of that platform, on a loopback port."""
    from api.app import create_app

    server = make_server("127.0.0.1", 0, create_app(platform), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def client(api: str, make_key: Callable[..., str]) -> Client:
    """An admin of a tenant of its own."""
    return Client(api, make_key("admin"))


def _six_calls(base: str) -> dict[str, Any]:
    """Six independent ~200 ms reads chained one after another, and a step collecting them."""
    calls = [action(f"c{i}", "http_request", url=f"{base}/slow/{i}") for i in range(1, 7)]
    collect = action(
        "result",
        "transform",
        output={f"c{i}": "{{ steps.c" + str(i) + ".output.body }}" for i in range(1, 7)},
    )
    ids = ["start", *(f"c{i}" for i in range(1, 7)), "result"]
    return workflow(
        "six calls", [trigger(), *calls, collect], list(zip(ids, ids[1:], strict=False))
    )


def _runs(client: Client, workflow_id: str, count: int) -> list[dict[str, Any]]:
    """Run the workflow ``count`` times, one after another (no slot contention between runs)."""
    return [client.wait(client.execute(workflow_id)["id"], timeout=60) for _ in range(count)]


def _read_then_use(name: str, read: str, url: str) -> dict[str, Any]:
    """A GET of ``url`` (step ``read``) and a step using its body."""
    return workflow(
        name,
        [
            trigger(),
            action(read, "http_request", url=url),
            action("use", "transform", output={"got": "{{ steps." + read + ".output.body }}"}),
        ],
        [("start", read), (read, "use")],
    )


def _analyze(client: Client, **body: Any) -> dict[str, Any]:
    return client.request("POST", ANALYZE, json=body)


def test_independent_calls_run_in_parallel_with_the_same_outputs_and_half_the_time(client, service):
    def slow(request, match):
        time.sleep(0.2)
        return 200, {"n": int(match.group(1))}

    service.route(r"GET /slow/(\d)", slow)
    created = client.create_workflow(_six_calls(service.url))
    before = _runs(client, created["id"], RUNS)
    assert all(r["status"] == "succeeded" for r in before)

    result = _analyze(client, workflow_id=created["id"], strategy="performance")
    assert result["baseline"]["source"] == "history" and result["baseline"]["runs"] == RUNS
    parallel = [s for s in result["suggestions"] if s["kind"] == "parallelize"]
    assert parallel and parallel[0]["applied"] and not parallel[0]["changes_behaviour"]
    assert {f"c{i}" for i in range(1, 7)} <= set(parallel[0]["nodes"])
    edges = {(c["source"], c["target"]) for c in result["optimized"]["connections"]}
    assert {("start", f"c{i}") for i in range(1, 7)} | {
        (f"c{i}", "result") for i in range(1, 7)
    } == edges
    predicted = result["predicted"]
    assert predicted["after"]["duration_p50_ms"] < 0.6 * predicted["before"]["duration_p50_ms"]
    assert client.request("GET", f"{RESULTS}/{result['id']}")["measured"] is None

    applied = client.request("POST", f"{RESULTS}/{result['id']}/apply")
    assert applied == {"workflow_id": created["id"], "version": 2}
    after = _runs(client, created["id"], RUNS)
    assert all(r["status"] == "succeeded" for r in after)
    assert all(r["output"] == before[0]["output"] for r in before + after)  # same outputs

    measured = client.request("GET", f"{RESULTS}/{result['id']}")["measured"]
    assert measured["runs_after"] == RUNS and measured["before"]["runs"] == RUNS
    timings = [
        {s["node_id"]: (s["started_at"][17:23], s["finished_at"][17:23]) for s in r["steps"]}
        for r in after
    ]
    assert measured["after"]["duration_p50_ms"] < 0.5 * measured["before"]["duration_p50_ms"], (
        measured,
        timings,
    )
    assert measured["after"]["calls"] == measured["before"]["calls"] == 6
    # applying went through the normal update path: a second apply is refused
    with pytest.raises(ApiError) as again:
        client.request("POST", f"{RESULTS}/{result['id']}/apply")
    assert again.value.status == 409


def test_a_real_data_dependency_is_left_alone(client):
    dependent = workflow(
        "dependent",
        [
            trigger(),
            action("a", "http_request", url="http://127.0.0.1:9/users"),
            action(
                "b", "http_request", url="http://127.0.0.1:9/users/{{ steps.a.output.body.id }}"
            ),
            action(
                "c",
                "http_request",
                url="http://127.0.0.1:9/orders",
                json={"user": "{{ steps.b.output.body }}"},
            ),
        ],
        [("start", "a"), ("a", "b"), ("b", "c")],
    )
    result = _analyze(client, workflow=dependent, strategy="performance")
    assert result["baseline"]["source"] == "estimate"
    assert result["baseline"]["estimates"]["http_request"]["p50_ms"] > 0
    assert not [s for s in result["suggestions"] if s["kind"] == "parallelize"]
    assert [(c["source"], c["target"]) for c in result["optimized"]["connections"]] == [
        ("start", "a"),
        ("a", "b"),
        ("b", "c"),
    ]
    assert result["predicted"]["after"] == result["predicted"]["before"]


def test_a_transient_failure_gets_a_retry_and_the_runs_succeed(client, service):
    hits = {"n": 0}
    lock = threading.Lock()

    def flaky(request, match):
        with lock:
            hits["n"] += 1
            third = hits["n"] % 3 == 0
        return (503, {"error": "busy"}) if third else (200, {"ok": True})

    service.route("GET /flaky", flaky)
    created = client.create_workflow(_read_then_use("flaky relay", "fetch", f"{service.url}/flaky"))
    before = _runs(client, created["id"], 6)
    assert sum(r["status"] == "failed" for r in before) == 2

    result = _analyze(client, workflow_id=created["id"], strategy="reliability")
    retry = [s for s in result["suggestions"] if s["kind"] == "retry"]
    assert retry and retry[0]["nodes"] == ["fetch"] and retry[0]["applied"]
    assert "upstream_5xx" in retry[0]["rationale"]
    fetch = next(n for n in result["optimized"]["nodes"] if n["id"] == "fetch")
    assert fetch["retry"]["max_retries"] >= 1 and fetch["retry"]["backoff_multiplier"] > 1
    assert result["predicted"]["after"]["success_rate"] >= 0.95
    assert result["baseline"]["success_rate"] == pytest.approx(4 / 6, abs=0.01)

    client.request("POST", f"{RESULTS}/{result['id']}/apply")
    _runs(client, created["id"], 6)
    measured = client.request("GET", f"{RESULTS}/{result['id']}")["measured"]
    assert measured["runs_after"] == 6
    assert measured["after"]["success_rate"] >= 0.95
    assert measured["before"]["success_rate"] < 0.7


def test_a_cache_is_made_only_when_accepted_and_then_calls_once(client, service):
    def rates(request, match):
        time.sleep(0.15)
        return 200, {"EUR": 1.0, "USD": 1.08}

    service.route("GET /fx/rates", rates)
    created = client.create_workflow(_read_then_use("quote", "rates", f"{service.url}/fx/rates"))
    before = _runs(client, created["id"], 3)
    result = _analyze(client, workflow_id=created["id"], strategy="performance")
    index, cache = next((i, s) for i, s in enumerate(result["suggestions"]) if s["kind"] == "cache")
    assert cache["changes_behaviour"] and not cache["applied"] and cache["nodes"] == ["rates"]
    assert "same in all 3 runs" in cache["rationale"]
    assert cache["patch"][0]["path"] == "config.cache_ttl"
    rates_node = next(n for n in result["optimized"]["nodes"] if n["id"] == "rates")
    assert "cache_ttl" not in rates_node["config"]  # never applied on its own

    def refused(accept: list[Any]) -> dict[str, Any]:
        with pytest.raises(ApiError) as error:
            client.request("POST", f"{RESULTS}/{result['id']}/apply", json={"accept": accept})
        assert error.value.status == 422, error.value.body
        return error.value.body

    applied_index = next((i for i, s in enumerate(result["suggestions"]) if s["applied"]), None)
    body = refused(
        [len(result["suggestions"]) + 3, *([applied_index] if applied_index is not None else [])]
    )
    assert "there is no suggestion" in str(body) and "accept[0]" in str(body)
    if applied_index is not None:
        assert "applied already" in str(body["errors"]["accept[1]"])
    assert client.request("GET", f"/api/workflows/{created['id']}")["version"] == 1

    calls_before = len(service.calls("GET", "/fx/rates"))
    applied = client.request("POST", f"{RESULTS}/{result['id']}/apply", json={"accept": [index]})
    assert applied["version"] == 2
    saved = client.request("GET", f"/api/workflows/{created['id']}")["definition"]
    assert next(n for n in saved["nodes"] if n["id"] == "rates")["config"]["cache_ttl"] > 0
    after = _runs(client, created["id"], 4)
    assert len(service.calls("GET", "/fx/rates")) == calls_before + 1  # one miss, three hits
    assert all(r["output"] == before[0]["output"] for r in before + after)
    row = client.request("GET", f"{RESULTS}/{result['id']}")
    assert row["suggestions"][index]["accepted"] is True
    assert row["predicted"]["applied"]["calls"] < row["predicted"]["before"]["calls"]
    assert row["measured"]["before"]["calls"] == 1
    assert row["measured"]["after"]["calls"] == pytest.approx(0.25)  # 1 call in 4 runs


def test_errors_roles_and_tenants(api, make_key, client):
    tenant = f"opt-{time.monotonic_ns()}"
    editor = Client(api, make_key("editor", tenant))
    operator = Client(api, make_key("operator", tenant))
    viewer = Client(api, make_key("viewer", tenant))
    definition = workflow(
        "small",
        [trigger(), action("a", "transform", output={"x": 1})],
        [("start", "a")],
    )
    created = editor.create_workflow(definition)

    def status(call: Callable[[], Any]) -> tuple[int, Any]:
        try:
            call()
        except ApiError as e:
            return e.status, e.body
        return 200, None

    unknown = "00000000-0000-4000-8000-000000000000"
    assert status(lambda: _analyze(operator, workflow_id=unknown, strategy="cost"))[0] == 404
    code, body = status(lambda: _analyze(operator, workflow_id=created["id"], strategy="fastest"))
    assert code == 422 and "strategy" in str(body["errors"])
    code, body = status(lambda: _analyze(operator, strategy="cost"))
    assert code == 422 and "workflow_id" in str(body["errors"])
    both = {"workflow_id": created["id"], "workflow": definition, "strategy": "cost"}
    assert status(lambda: operator.request("POST", ANALYZE, json=both))[0] == 422
    bad = {
        "name": "bad",
        "nodes": [{"id": "a", "type": "action", "config": {"action_type": "nope"}}],
    }
    code, body = status(lambda: _analyze(operator, workflow=bad, strategy="cost"))
    _, same = status(lambda: editor.create_workflow(bad))
    assert code == 422 and body["errors"] == same["errors"]
    assert status(lambda: _analyze(viewer, workflow_id=created["id"], strategy="cost"))[0] == 403

    result = _analyze(operator, workflow_id=created["id"], strategy="hybrid")
    assert "trade_offs" in result
    assert status(lambda: operator.request("POST", f"{RESULTS}/{result['id']}/apply"))[0] == 403
    # another tenant sees none of it
    assert status(lambda: client.request("GET", f"{RESULTS}/{result['id']}"))[0] == 404
    assert status(lambda: client.request("POST", f"{RESULTS}/{result['id']}/apply"))[0] == 404
    assert status(lambda: _analyze(client, workflow_id=created["id"], strategy="cost"))[0] == 404
    assert client.request("GET", RESULTS, params={"workflow_id": created["id"]}) == []
    listed = viewer.request("GET", RESULTS, params={"workflow_id": created["id"]})
    assert [r["id"] for r in listed] == [result["id"]]

    # the workflow changed since the analysis: 409, nothing saved
    editor.request("PUT", f"/api/workflows/{created['id']}", json=definition)
    code, body = status(lambda: editor.request("POST", f"{RESULTS}/{result['id']}/apply"))
    assert code == 409 and "changed" in body["message"]
    assert editor.request("GET", f"/api/workflows/{created['id']}")["version"] == 2
    # an inline analysis has no workflow to save to: 409
    inline = _analyze(operator, workflow=definition, strategy="cost")
    assert inline["workflow_id"] is None
    code, body = status(lambda: editor.request("POST", f"{RESULTS}/{inline['id']}/apply"))
    assert code == 409 and "POST /api/workflows" in body["message"]
    fresh = _analyze(operator, workflow_id=created["id"], strategy="cost")
    assert editor.request("POST", f"{RESULTS}/{fresh['id']}/apply")["version"] == 3
    newest = viewer.request("GET", RESULTS)
    assert [r["id"] for r in newest][:3] == [fresh["id"], inline["id"], result["id"]]


def test_workflow_permissions_apply(api, make_key):
    tenant = f"optperm-{time.monotonic_ns()}"
    admin = Client(api, make_key("admin", tenant))
    editor = Client(api, make_key("editor", tenant))
    operator = Client(api, make_key("operator", tenant))
    definition = workflow(
        "guarded",
        [trigger(), action("a", "transform", output={"x": 1})],
        [("start", "a")],
        metadata={"permissions": {"view": ["editor"], "edit": ["admin"]}},
    )
    created = admin.create_workflow(definition)
    with pytest.raises(ApiError) as hidden:
        _analyze(operator, workflow_id=created["id"], strategy="cost")
    assert hidden.value.status == 404
    result = _analyze(editor, workflow_id=created["id"], strategy="cost")
    with pytest.raises(ApiError) as not_editable:
        editor.request("POST", f"{RESULTS}/{result['id']}/apply")
    assert not_editable.value.status == 403
    with pytest.raises(ApiError) as unseen:
        operator.request("GET", f"{RESULTS}/{result['id']}")
    assert unseen.value.status == 404
    assert operator.request("GET", RESULTS) == []
    assert admin.request("POST", f"{RESULTS}/{result['id']}/apply")["version"] == 2


def test_beat_stores_recommendations_and_applies_nothing(client, platform, processes):
    definition = workflow(
        "nightly",
        [
            trigger(),
            action("a", "transform", output={"x": 1}),
            action("b", "transform", output={"y": 2}),
        ],
        [("start", "a"), ("a", "b")],
    )
    created = client.create_workflow(definition)
    _runs(client, created["id"], 1)
    # beat with the periodic optimizer on, every second (started here: while it runs it
    # analyses every workflow with a new run, which the other tests' lists would see)
    beat = processes.start("beat", env=platform.as_env(), name="optimizer-beat")
    try:
        found = _recommendations(client, created["id"])
        assert found[0]["origin"] == "beat" and found[0]["strategy"] == "hybrid"
        assert found[0]["applied_version"] is None
        assert client.request("GET", f"/api/workflows/{created['id']}")["version"] == 1
        time.sleep(2.5)  # more passes: nothing new to analyse (no new run), nothing applied
        again = client.request("GET", RESULTS, params={"workflow_id": created["id"]})
        assert len(again) == 1
        assert client.request("GET", f"/api/workflows/{created['id']}")["version"] == 1
    finally:
        processes.stop(beat)


def _recommendations(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not found:
        found = client.request("GET", RESULTS, params={"workflow_id": workflow_id})
        time.sleep(0.5)
    assert found, "the periodic optimizer stored nothing within 60 s"
    return found
