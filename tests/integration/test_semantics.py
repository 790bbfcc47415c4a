"""Execution semantics on a real worker: conditions, trigger rules, retries, timeouts,
failure policy, the python action, and pause/resume/cancel/retry."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from atom.client import ApiError, Client
from tests.integration.helpers import action, by_node, trigger, when, workflow
from tests.integration.loopback import LoopbackService


def node(base: dict, **extra) -> dict:
    return {**base, **extra}


def if_else(threshold: int = 100) -> dict:
    doc = workflow(
        "if-else",
        [
            trigger(),
            {
                "id": "check",
                "type": "condition",
                "config": {"expression": f"input.amount > {threshold}"},
            },
            action("big", "transform", output="big {{ input.amount }}"),
            action("small", "transform", output="small {{ input.amount }}"),
            action("after_small", "log", message="only after small"),
            node(
                action(
                    "join",
                    "transform",
                    output={"big": "{{ steps.big.status }}", "small": "{{ steps.small.status }}"},
                ),
                trigger_rule="none_failed",
            ),
        ],
        [("start", "check"), ("big", "join"), ("small", "after_small"), ("after_small", "join")],
    )
    doc["connections"] += [
        {"source": "check", "target": "big", "when": "true"},
        {"source": "check", "target": "small", "when": "false"},
    ]
    return doc


def test_if_else_takes_one_branch_skips_the_other_and_the_join_runs(client: Client):
    created = client.create_workflow(if_else())
    big = client.wait(client.execute(created["id"], {"amount": 150})["id"])
    small = client.wait(client.execute(created["id"], {"amount": 5})["id"])

    assert big["status"] == "succeeded", big
    steps = by_node(big)
    assert steps["check"]["output"] == {"result": True, "value": True}
    assert steps["big"]["status"] == "succeeded" and steps["big"]["output"] == "big 150"
    assert steps["small"]["status"] == "skipped"
    assert steps["after_small"]["status"] == "skipped"  # skipping propagates
    assert steps["small"]["error"]["message"] == "branch not taken (`check` was true)"
    assert steps["after_small"]["error"]["message"] == "upstream skipped: small"
    assert steps["join"]["output"] == {"big": "succeeded", "small": "skipped"}
    assert big["metrics"]["steps_skipped"] == 2

    steps = by_node(small)
    assert small["status"] == "succeeded"
    assert steps["big"]["status"] == "skipped" and steps["small"]["status"] == "succeeded"
    assert steps["after_small"]["status"] == "succeeded"
    assert steps["join"]["status"] == "succeeded"


def test_all_success_join_after_if_else_is_skipped(client: Client):
    doc = if_else()
    doc["nodes"][-1].pop("trigger_rule")
    done = client.wait(client.execute(client.create_workflow(doc)["id"], {"amount": 150})["id"])
    assert done["status"] == "succeeded"
    assert by_node(done)["join"]["status"] == "skipped"
    assert "trigger rule all_success not met" in by_node(done)["join"]["error"]["message"]


def _flaky(service: LoopbackService, failures: list[int]) -> None:
    answers = list(failures)
    service.routes.clear()
    service.route(
        r"GET /flaky",
        lambda req, m: (answers.pop(0), {"try": "again"}) if answers else (200, {"ok": True}),
    )


def _gaps(service: LoopbackService, path: str) -> list[float]:
    stamps = [r.received_at for r in service.calls("GET", path)]
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def test_transient_failures_retry_with_growing_gaps(client: Client, service: LoopbackService):
    _flaky(service, [503, 503])
    doc = workflow(
        "retries",
        [
            trigger(),
            node(
                action("call", "http_request", url=service.url + "/flaky"),
                retry={"max_retries": 3, "retry_delay": 0.5, "backoff_multiplier": 3},
            ),
        ],
        [("start", "call")],
    )
    done = client.wait(client.execute(client.create_workflow(doc)["id"])["id"], timeout=60)

    assert done["status"] == "succeeded", done
    step = by_node(done)["call"]
    assert step["attempts"] == 3 and step["output"]["body"] == {"ok": True}
    gaps = _gaps(service, "/flaky")
    assert len(gaps) == 2 and gaps[0] >= 0.45 and gaps[1] >= 1.4 and gaps[1] > gaps[0], gaps


def test_a_404_fails_at_once_unless_retry_on_names_it(client: Client, service: LoopbackService):
    _flaky(service, [404])
    once = workflow(
        "no-retry",
        [
            trigger(),
            node(
                action("call", "http_request", url=service.url + "/flaky"),
                retry={"max_retries": 3, "retry_delay": 0.1},
            ),
        ],
        [("start", "call")],
    )
    done = client.wait(client.execute(client.create_workflow(once)["id"])["id"])
    assert done["status"] == "failed"
    assert by_node(done)["call"]["attempts"] == 1
    assert len(service.calls("GET", "/flaky")) == 1

    _flaky(service, [404])
    once["nodes"][1]["retry"]["retry_on"] = [404]
    done = client.wait(client.execute(client.create_workflow(once)["id"])["id"])
    assert done["status"] == "succeeded"
    assert by_node(done)["call"]["attempts"] == 2


def test_retry_policy_in_auraos_spelling(client: Client, service: LoopbackService):
    _flaky(service, [500])
    doc = workflow(
        "aura-retry",
        [
            trigger(),
            node(
                action("call", "http_request", url=service.url + "/flaky"),
                retryPolicy={"maxRetries": 2, "retryDelay": 200, "backoffMultiplier": 2},
            ),
        ],
        [("start", "call")],
    )
    done = client.wait(client.execute(client.create_workflow(doc)["id"])["id"])
    assert done["status"] == "succeeded" and by_node(done)["call"]["attempts"] == 2


def test_step_over_its_timeout_fails_saying_so(client: Client):
    doc = workflow(
        "slow", [trigger(), node(action("nap", "delay", seconds=20), timeout=1)], [("start", "nap")]
    )
    started = time.monotonic()
    done = client.wait(client.execute(client.create_workflow(doc)["id"])["id"], timeout=30)
    assert time.monotonic() - started < 10
    assert done["status"] == "failed"
    assert done["error"] == {
        "node_id": "nap",
        "type": "TimeoutError",
        "message": "step 'nap' timed out after 1 s",
    }


def test_continue_policy_lets_independent_branches_finish(client: Client):
    doc = workflow(
        "continue",
        [
            trigger(),
            action("bad", "transform", output="{{ input.nothing.here }}"),
            action("after_bad", "log", message="x"),
            node(action("good", "delay", seconds=0.3)),
            action("after_good", "transform", output="done"),
        ],
        [("start", "bad"), ("bad", "after_bad"), ("start", "good"), ("good", "after_good")],
        on_failure="continue",
    )
    done = client.wait(client.execute(client.create_workflow(doc)["id"])["id"])
    assert done["status"] == "failed"
    assert done["error"]["node_id"] == "bad"
    steps = by_node(done)
    assert steps["after_good"]["status"] == "succeeded"
    assert steps["after_bad"]["status"] == "skipped"
    assert "upstream failed: bad" in steps["after_bad"]["error"]["message"]


def test_python_action_calls_registered_functions_only(client: Client):
    doc = workflow(
        "python",
        [
            trigger(),
            action("sum", "python", function="add", kwargs={"a": "{{ input.a }}", "b": 2}),
            action("missing", "python", function="rm_rf"),
        ],
        [("start", "sum"), ("sum", "missing")],
    )
    done = client.wait(client.execute(client.create_workflow(doc)["id"], {"a": 40})["id"])
    steps = by_node(done)
    assert steps["sum"]["output"] == {"sum": 42}
    assert steps["missing"]["status"] == "failed"
    assert "no function registered as 'rm_rf'" in steps["missing"]["error"]["message"]
    assert "add" in steps["missing"]["error"]["message"]


def _wait_for(client: Client, execution_id: str, predicate, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = client.execution(execution_id)
        if predicate(current):
            return current
        time.sleep(0.05)
    raise AssertionError(f"condition not met: {client.execution(execution_id)}")


def test_pause_lets_the_running_step_finish_and_resume_runs_the_rest(client: Client):
    doc = workflow(
        "pausable",
        [
            trigger(),
            action("a", "delay", seconds=1.5),
            action("b", "transform", output="b"),
            action("c", "transform", output="c"),
        ],
        [("start", "a"), ("a", "b"), ("b", "c")],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    _wait_for(client, run["id"], lambda e: by_node(e)["a"]["status"] == "running")
    paused = client.request("POST", f"/api/executions/{run['id']}/pause")
    assert paused["status"] == "paused"
    held = _wait_for(client, run["id"], lambda e: by_node(e)["a"]["status"] == "succeeded")
    time.sleep(1.0)
    held = client.execution(run["id"])
    assert held["status"] == "paused"
    assert by_node(held)["b"]["status"] == "pending" and by_node(held)["b"]["attempts"] == 0

    with pytest.raises(ApiError) as conflict:
        client.request("POST", f"/api/executions/{run['id']}/pause")
    assert conflict.value.status == 409
    assert conflict.value.body["current_status"] == "paused"
    assert conflict.value.body["allowed_actions"] == ["resume", "cancel"]

    resumed = client.request("POST", f"/api/executions/{run['id']}/resume")
    assert resumed["status"] == "running"
    done = client.wait(run["id"])
    assert done["status"] == "succeeded", done
    steps = by_node(done)
    assert [steps[n]["attempts"] for n in "abc"] == [1, 1, 1]
    assert when(steps["b"], "started_at") > when(held["steps"][1], "finished_at")


def test_cancel_interrupts_a_long_delay_within_seconds(client: Client):
    doc = workflow(
        "long",
        [trigger(), action("nap", "delay", seconds=30), action("never", "log", message="x")],
        [("start", "nap"), ("nap", "never")],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    _wait_for(client, run["id"], lambda e: by_node(e)["nap"]["status"] == "running")
    asked = time.monotonic()
    cancelled = client.request("POST", f"/api/executions/{run['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    done = _wait_for(
        client, run["id"], lambda e: by_node(e)["nap"]["status"] == "cancelled", timeout=10
    )
    assert time.monotonic() - asked < 5
    steps = by_node(done)
    assert steps["never"]["status"] == "cancelled" and steps["never"]["attempts"] == 0
    assert datetime.fromisoformat(done["finished_at"])
    with pytest.raises(ApiError) as conflict:
        client.request("POST", f"/api/executions/{run['id']}/resume")
    assert conflict.value.status == 409 and conflict.value.body["allowed_actions"] == []


def test_retry_reruns_only_what_failed_and_what_came_after(
    client: Client, service: LoopbackService
):
    _flaky(service, [400])
    doc = workflow(
        "retry-from-failure",
        [
            trigger(),
            action("first", "transform", output="{{ input.n + 1 }}"),
            action("call", "http_request", url=service.url + "/flaky"),
            action(
                "last",
                "transform",
                output="{{ steps.first.output }} then {{ steps.call.output.status_code }}",
            ),
        ],
        [("start", "first"), ("first", "call"), ("call", "last")],
    )
    run = client.execute(client.create_workflow(doc)["id"], {"n": 1})
    failed = client.wait(run["id"])
    assert failed["status"] == "failed"
    assert by_node(failed)["last"]["status"] == "cancelled"
    with pytest.raises(ApiError) as conflict:
        client.request("POST", f"/api/executions/{run['id']}/resume")
    assert conflict.value.status == 409 and conflict.value.body["allowed_actions"] == ["retry"]

    client.request("POST", f"/api/executions/{run['id']}/retry")
    done = client.wait(run["id"])
    assert done["status"] == "succeeded", done
    before, after = by_node(failed), by_node(done)
    assert after["first"]["attempts"] == 1
    assert after["first"]["finished_at"] == before["first"]["finished_at"]
    assert after["call"]["attempts"] == 2
    assert after["last"]["output"] == "2 then 200"
    assert done["error"] is None
