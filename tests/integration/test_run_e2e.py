"""Workflows submitted over HTTP run on a real worker process, on PostgreSQL and Redis."""

from __future__ import annotations

import random
from datetime import datetime

from atom.client import Client
from tests.integration.helpers import action, by_node, trigger, when, workflow
from tests.integration.loopback import LoopbackService


def test_linear_workflow_passes_data_between_steps(client: Client, service: LoopbackService):
    service.route(
        r"GET /users/(\d+)",
        lambda req, m: (200, {"id": int(m.group(1)), "name": "Ada", "vip": True}),
    )
    service.route(r"POST /welcome", lambda req, m: (201, {"sent_to": req.body["name"]}))
    doc = workflow(
        "onboarding",
        [
            trigger(eventType="user_registered"),
            action("fetch", "http_request", url=service.url + "/users/{{ input.user_id }}"),
            action(
                "profile",
                "transform",
                output={
                    "name": "{{ steps.fetch.output.body.name }}",
                    "vip": "{{ steps.fetch.output.body.vip }}",
                    "greeting": "Welcome, {{ steps.fetch.output.body.name }}!",
                },
            ),
            action(
                "welcome",
                "http_request",
                method="POST",
                url=service.url + "/welcome",
                json={"name": "{{ steps.profile.output.name }}", "user_id": "{{ input.user_id }}"},
            ),
        ],
        [("start", "fetch"), ("fetch", "profile"), ("profile", "welcome")],
    )
    created = client.create_workflow(doc)
    assert created["version"] == 1 and created["trigger_kind"] == "event"

    started = client.execute(created["id"], {"user_id": 42})
    assert started["status"] == "queued"
    done = client.wait(started["id"])

    assert done["status"] == "succeeded", done
    steps = by_node(done)
    for node in ("fetch", "profile", "welcome"):
        assert steps[node]["status"] == "succeeded"
        assert steps[node]["attempts"] == 1
        started_at = datetime.fromisoformat(steps[node]["started_at"])
        finished_at = datetime.fromisoformat(steps[node]["finished_at"])
        assert started_at <= finished_at  # the duration is the one its timestamps give
        assert steps[node]["duration_ms"] == int((finished_at - started_at).total_seconds() * 1000)
    assert steps["profile"]["output"] == {"name": "Ada", "vip": True, "greeting": "Welcome, Ada!"}
    (posted,) = service.calls("POST", "/welcome")
    assert posted.body == {"name": "Ada", "user_id": 42}  # the number stayed a number
    assert posted.headers["Idempotency-Key"] == f"{done['id']}:welcome"
    assert done["output"] == {"welcome": steps["welcome"]["output"]}
    assert done["metrics"]["steps_total"] == 3 and done["metrics"]["steps_succeeded"] == 3


def test_fan_out_branches_run_at_the_same_time_and_join_waits(client: Client):
    branches = ["north", "south", "east"]
    doc = workflow(
        "fan-out",
        [
            trigger(),
            *[action(b, "delay", seconds=1) for b in branches],
            action(
                "report",
                "transform",
                output={"waited": [f"{{{{ steps.{b}.output.waited_seconds }}}}" for b in branches]},
            ),
        ],
        [("start", b) for b in branches] + [(b, "report") for b in branches],
    )
    plan = client.request("GET", f"/api/workflows/{client.create_workflow(doc)['id']}/plan")
    assert plan["series_parallel"] is True and plan["barriers_added"] == []
    assert plan["canvas"]["tasks"][0]["type"] == "chord"

    done = client.wait(client.execute(plan["workflow_id"])["id"])

    assert done["status"] == "succeeded", done
    steps = by_node(done)
    latest_start = max(when(steps[b], "started_at") for b in branches)
    earliest_end = min(when(steps[b], "finished_at") for b in branches)
    assert latest_start < earliest_end, "the three branches did not overlap"
    assert when(steps["report"], "started_at") >= max(
        when(steps[b], "finished_at") for b in branches
    )
    assert all(w >= 1.0 for w in steps["report"]["output"]["waited"])


def _assert_order_respected(doc: dict, done: dict) -> None:
    steps = by_node(done)
    for edge in doc["connections"]:
        source, target = steps[edge["source"]], steps[edge["target"]]
        if edge["source"] == "start":
            continue
        assert when(target, "started_at") >= when(source, "finished_at"), (edge, done)


def test_dag_that_is_not_series_parallel_runs_in_order(client: Client):
    # a -> c, b -> c, b -> d  (the "N"), fed by the trigger, then both into e
    nodes = [trigger()] + [action(n, "delay", seconds=0.2) for n in "abcde"]
    edges = [
        ("start", "a"),
        ("start", "b"),
        ("a", "c"),
        ("b", "c"),
        ("b", "d"),
        ("c", "e"),
        ("d", "e"),
    ]
    doc = workflow("n-shape", nodes, edges)
    created = client.create_workflow(doc)
    plan = client.request("GET", f"/api/workflows/{created['id']}/plan")
    assert plan["series_parallel"] is False
    assert plan["barriers_added"][0]["orderings_added"] == [["a", "d"]]

    done = client.wait(client.execute(created["id"])["id"])

    assert done["status"] == "succeeded", done
    _assert_order_respected(doc, done)


def test_random_dags_respect_every_edge_on_the_real_broker(client: Client):
    rng = random.Random(20261122)
    for shape in range(3):
        size = rng.randint(5, 9)
        names = [f"n{i}" for i in range(size)]
        edges = [
            (names[i], names[j])
            for i in range(size)
            for j in range(i + 1, size)
            if rng.random() < 0.3
        ]
        roots = [n for n in names if not any(b == n for _, b in edges)]
        edges += [("start", r) for r in roots]
        doc = workflow(
            f"random-{shape}",
            [trigger()] + [action(n, "transform", output={"me": n}) for n in names],
            edges,
        )
        done = client.wait(client.execute(client.create_workflow(doc)["id"])["id"])
        assert done["status"] == "succeeded", done
        assert done["metrics"]["steps_succeeded"] == size
        _assert_order_respected(doc, done)


def test_failed_step_fails_the_execution_and_names_the_node(
    client: Client, service: LoopbackService
):
    service.route(r"GET /missing", lambda req, m: (404, {"error": "not here"}))
    doc = workflow(
        "fails",
        [
            trigger(),
            action("fetch", "http_request", url=service.url + "/missing"),
            action("after", "log", message="never"),
        ],
        [("start", "fetch"), ("fetch", "after")],
    )
    done = client.wait(client.execute(client.create_workflow(doc)["id"])["id"])

    assert done["status"] == "failed"
    assert done["error"]["node_id"] == "fetch"
    assert done["error"]["type"] == "PermanentError"
    assert "404" in done["error"]["message"]
    steps = by_node(done)
    assert steps["fetch"]["status"] == "failed" and steps["fetch"]["attempts"] == 1
    assert steps["fetch"]["output"]["status_code"] == 404
    assert steps["after"]["status"] in {"cancelled", "skipped"}
    assert len(service.calls("GET", "/missing")) == 1


def test_template_error_fails_the_step_with_its_location(client: Client):
    doc = workflow(
        "bad-template",
        [trigger(), action("t", "transform", output="{{ input.nope.deeper }}")],
        [("start", "t")],
    )
    done = client.wait(client.execute(client.create_workflow(doc)["id"])["id"])
    assert done["status"] == "failed"
    assert "nodes[t].config.output" in done["error"]["message"]


def test_new_version_leaves_a_running_execution_on_its_version(client: Client):
    doc = workflow(
        "versioned", [trigger(), action("wait", "delay", seconds=1)], [("start", "wait")]
    )
    created = client.create_workflow(doc)
    first = client.execute(created["id"])
    doc["nodes"][1]["config"]["seconds"] = 0
    updated = client.request("PUT", f"/api/workflows/{created['id']}", json=doc)
    assert updated["version"] == 2
    second = client.execute(created["id"])
    done_first, done_second = client.wait(first["id"]), client.wait(second["id"])
    assert (done_first["workflow_version"], done_second["workflow_version"]) == (1, 2)
    assert by_node(done_first)["wait"]["output"]["waited_seconds"] >= 1.0
    assert by_node(done_second)["wait"]["output"]["waited_seconds"] < 1.0


def test_nested_canvas_shapes_complete_on_the_real_broker(client: Client):
    # Two "N" shapes side by side compile to chords in a chord header whose bodies are
    # groups; nested diamonds in parallel branches give chords inside chord headers.
    edges = [
        ("start", "a1"),
        ("start", "b1"),
        ("a1", "c1"),
        ("b1", "c1"),
        ("b1", "d1"),
        ("start", "a2"),
        ("start", "b2"),
        ("a2", "c2"),
        ("b2", "c2"),
        ("b2", "d2"),
        ("start", "p"),
        ("p", "q1"),
        ("p", "q2"),
        ("q1", "r"),
        ("q2", "r"),
        ("r", "s1"),
        ("r", "s2"),
    ]
    names = sorted({n for e in edges for n in e} - {"start"})
    doc = workflow("nested", [trigger()] + [action(n, "delay", seconds=0.1) for n in names], edges)
    created = client.create_workflow(doc)
    plan = client.request("GET", f"/api/workflows/{created['id']}/plan")
    assert len(plan["barriers_added"]) == 2
    for _ in range(2):
        done = client.wait(client.execute(created["id"])["id"], timeout=60)
        assert done["status"] == "succeeded", done
        assert done["metrics"]["steps_succeeded"] == len(names)
        _assert_order_respected(doc, done)


def test_redirect_to_another_origin_drops_credentials_and_errors_hide_urls(
    client: Client, service: LoopbackService
):
    other = LoopbackService().start()
    try:
        other.route(r"GET /landing", lambda req, m: (200, {"landed": True}))
        service.route(
            r"GET /moved.*", lambda req, m: (302, {}, {"Location": other.url + "/landing"})
        )
        service.route(r"GET /secret.*", lambda req, m: (404, {}))
        doc = workflow(
            "redirected",
            [
                trigger(),
                action(
                    "call",
                    "http_request",
                    url=service.url + "/moved",
                    headers={"Authorization": "Bearer s3cret", "X-Trace": "kept"},
                ),
                action("leak", "http_request", url=service.url + "/secret?api_key=s3cret"),
            ],
            [("start", "call"), ("call", "leak")],
        )
        done = client.wait(client.execute(client.create_workflow(doc)["id"])["id"])
        steps = by_node(done)
        assert steps["call"]["output"]["body"] == {"landed": True}
        (landed,) = other.calls("GET", "/landing")
        assert "Authorization" not in landed.headers and landed.headers["X-Trace"] == "kept"
        (moved,) = service.calls("GET", "/moved")
        assert moved.headers["Authorization"] == "Bearer s3cret"  # the same origin got it
        assert steps["leak"]["status"] == "failed"
        assert "404" in steps["leak"]["error"]["message"]
        assert "s3cret" not in steps["leak"]["error"]["message"]
    finally:
        other.stop()
