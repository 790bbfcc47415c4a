"""The decision engine on a real ML worker process (``atom worker --pool ml``): it learns
from outcomes alone, explains itself with LightGBM's contributions, validates its input and
keeps tenants apart."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from atom.ml.simulation import ACTIONS, World
from tests.conftest import Processes, start_api

pytestmark = pytest.mark.integration


class Api:
    """A small JSON client that returns (status, body, headers)."""

    def __init__(self, base: str, key: str):
        self.base, self.session = base, requests.Session()
        self.session.headers["X-API-Key"] = key

    def __call__(self, method: str, path: str, **kwargs) -> tuple[int, dict, dict]:
        r = self.session.request(method, self.base + path, timeout=30, **kwargs)
        try:
            body = r.json()
        except ValueError:
            body = {"text": r.text}
        return r.status_code, body, r.headers


@pytest.fixture
def api(api_url: str, make_key: Callable[..., str], ml_worker) -> Api:
    """An admin of a tenant of its own, with an ML worker running."""
    return Api(api_url, make_key("admin"))


@pytest.fixture(scope="module")
def served_api(processes: Processes) -> Iterator[str]:
    """``atom api`` (gunicorn) in its own process, as deployed: a loop of 2,000 requests does
    not share the test process's interpreter lock with the server."""
    proc, base = start_api(processes, name="api-ml")
    yield base
    processes.stop(proc)


@pytest.mark.timeout(900)  # 2,000 requests and ~25 trainings on a shared 2-core machine
def test_the_engine_learns_which_action_pays_from_outcomes_alone(
    served_api: str, make_key: Callable[..., str], ml_worker
):
    key = make_key("admin")
    world = World(seed=11)
    picks, explored, engine_value, fixed_value = [], [], [], {a: [] for a in ACTIONS}
    scores_seen = set()
    lock = threading.Lock()
    rounds = iter(range(1000))

    def play() -> None:
        # Callers at once, as a service's would be: at most four decisions wait for their
        # outcome at any moment (retraining counts outcomes, not rounds).
        api = Api(served_api, key)
        while True:
            with lock:
                if next(rounds, None) is None:
                    return
                context = world.context()
            status, decision, _ = api(
                "POST",
                "/api/decisions",
                json={"model": "triage", "context": context, "actions": ACTIONS},
            )
            assert status == 201, decision
            chosen = decision["action"]["type"]
            assert 0 < decision["propensity"] <= 1
            assert {a["type"] for a in decision["alternatives"]} == set(ACTIONS)
            with lock:
                picks.append(chosen == world.best(context))
                explored.append(bool(decision["explored"]))
                engine_value.append(world.expected(context, chosen))
                for a in ACTIONS:
                    fixed_value[a].append(world.expected(context, a))
                if decision["confidence"] is not None:
                    scores_seen.add(round(decision["confidence"], 6))
                reward = world.reward(context, chosen)
            status, _, _ = api(
                "POST", f"/api/decisions/{decision['id']}/outcome", json={"reward": reward}
            )
            assert status == 200

    with ThreadPoolExecutor(4) as pool:
        for player in [pool.submit(play) for _ in range(4)]:
            player.result()
    assert len(picks) == 1000
    api = Api(served_api, key)
    last = slice(-200, None)
    best_rate = sum(picks[last]) / 200
    greedy = [p for p, e in zip(picks[last], explored[last], strict=True) if not e]
    greedy_rate = sum(greedy) / len(greedy)
    mean_engine = sum(engine_value[last]) / 200
    best_fixed = max(sum(v[last]) / 200 for v in fixed_value.values())
    print(
        f"best action {best_rate:.1%} ({greedy_rate:.1%} of {len(greedy)} not explored), "
        f"engine {mean_engine:.3f}, best fixed {best_fixed:.3f}"
    )
    # The bar, on the policy's own choices: at least 90 % of the decisions it did not
    # draw for exploration pick the best action (random play picks it about 33 % of the time).
    # Counting the exploration draws too (1/sqrt(n), about 3 % here, two thirds of them wrong)
    # the rate was 89 % in one CI-like run of this unseeded loop and 96 % in others: the
    # exploration and the retraining moments depend on the real pool's timing, so
    # bench/bandit.py checks the same loop seeded in-process on ten seeds (lowest 93 % with
    # exploration counted, docs/benchmarks.md).
    assert greedy_rate >= 0.9
    assert best_rate >= 0.85
    assert mean_engine > best_fixed + 0.2
    assert len(scores_seen) > 10  # confidence comes from the model, not a constant

    status, model, _ = api("GET", "/api/models/triage")
    assert status == 200 and model["status"] == "active" and model["version"] >= 2
    assert model["outcomes"] == 1000 and model["samples"] > 0
    active = next(v for v in model["versions"] if v["version"] == model["version"])
    assert active["metrics"]["metric"] == "rmse" and active["metrics"]["holdout"] > 0
    # The off-policy value decides publishing and is shown beside the holdout error.
    assert 0 < active["metrics"]["policy_value"] <= 1 and active["metrics"]["policy_value_se"] > 0
    judged = [v for v in model["versions"] if v["metrics"].get("champion")]
    assert judged and all("versus_champion" in v["metrics"] for v in judged)
    assert any(v["reason"].startswith("off-policy value") for v in judged), judged
    assert active["reason"]
    assert {"customer.tier", "amount", "region", "noise"} <= {f["name"] for f in active["features"]}

    # Explanations of fresh decisions: the top feature is one the rule uses, and those fields
    # carry most of the attribution. (Per action only some of the rule matters: approving
    # depends on the tier alone, so a top-two check would be wrong for gold customers.)
    weight: dict[str, float] = {}
    tops = []
    for _ in range(30):
        context = world.context()
        status, decision, _ = api(
            "POST", "/api/decisions", json={"model": "triage", "context": context}
        )
        assert status == 201 and decision["model_version"] is not None
        status, why, _ = api("GET", f"/api/decisions/{decision['id']}/explanation")
        assert status == 200, why
        assert why["action"] == decision["action"]["type"]
        total = why["base_value"] + sum(c["contribution"] for c in why["contributions"])
        assert math.isclose(total, why["raw_score"], abs_tol=1e-6)
        assert math.isclose(why["raw_score"], decision["confidence"], abs_tol=1e-6)
        values = {c["feature"]: c["value"] for c in why["contributions"]}
        assert values["customer.tier"] == context["customer"]["tier"]
        tops.append(why["contributions"][0]["feature"])
        for c in why["contributions"]:
            weight[c["feature"]] = weight.get(c["feature"], 0.0) + abs(c["contribution"])
    rule = weight["customer.tier"] + weight["amount"]
    assert rule > 1.5 * (weight["noise"] + weight["region"]), weight
    assert sum(top in ("customer.tier", "amount") for top in tops) >= 24, tops


def test_bad_input_is_422_or_404_never_500(api: Api, api_url: str, make_key):
    cases = [
        ({"context": [1, 2], "actions": ["a", "b"]}, "context"),
        (
            {"context": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}, "actions": ["a", "b"]},
            "context",
        ),
        ({"context": {"x": "y" * 70000}, "actions": ["a", "b"]}, "context"),
        ({"context": {f"f{i}": i for i in range(300)}, "actions": ["a", "b"]}, "context"),
        ({"model": 5, "context": {"x": 1}, "actions": ["a", "b"]}, "model"),
        ({"context": {"x": {"y": 10**400}}, "actions": ["a", "b"]}, "context.x.y"),
        ({"context": {"x": 1}, "actions": ["a", {"kind": "b"}]}, "actions[1]"),
        ({"context": {"x": 1}, "actions": ["a"]}, "actions"),
        ({"context": {"x": 1}, "actions": ["a", "a"]}, "actions[1]"),
        ({"model": "no spaces allowed", "context": {"x": 1}, "actions": ["a", "b"]}, "model"),
        ({"actions": ["a", "b"]}, "context"),
    ]
    for body, field in cases:
        status, answer, _ = api("POST", "/api/decisions", json=body)
        assert status == 422, (body, answer)
        assert field in json.dumps(answer["errors"]), (field, answer)
    status, answer, _ = api(
        "POST",
        "/api/decisions",
        data='{"context": {"x": NaN}, "actions": ["a", "b"]}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 422, answer
    # A model's action set is fixed by its first decision.
    status, first, _ = api(
        "POST", "/api/decisions", json={"context": {"x": 1}, "actions": ["a", "b"]}
    )
    assert status == 201 and first["model"] == "default"
    # Audited in the decision's own transaction; refused requests are audited too.
    status, entries, _ = api(
        "GET", "/api/audit", params={"target_type": "decision", "page_size": 100}
    )
    assert status == 200, entries
    seen = [(e["action"], e["target_id"], e["status"]) for e in entries]
    assert ("decision.create", first["id"], 201) in seen
    assert ("decision.create", None, 422) in seen
    status, answer, _ = api(
        "POST", "/api/decisions", json={"context": {"x": 1}, "actions": ["a", "z"]}
    )
    assert status == 404 and "'z'" in answer["message"], answer
    # An unknown model needs its actions named (it is created by this decision).
    status, answer, _ = api("POST", "/api/decisions", json={"model": "fresh", "context": {}})
    assert status == 404 and "name its actions" in answer["message"], answer
    assert api("GET", "/api/models/fresh")[0] == 404
    assert api("GET", "/api/models/no%20spaces")[0] == 404
    # makeDecision(context): the actions are known now.
    status, again, _ = api("POST", "/api/decisions", json={"context": {"userId": "u1"}})
    assert status == 201 and again["action"]["type"] in {"a", "b"}
    assert again["explored"] is True and again["propensity"] == pytest.approx(0.5)
    # Outcomes: exactly one, of the right kind.
    path = f"/api/decisions/{first['id']}/outcome"
    assert api("POST", path, json={})[0] == 422
    assert api("POST", path, json={"reward": 1, "success": True})[0] == 422
    assert api("POST", path, json={"reward": "lots"})[0] == 422
    status, done, _ = api("POST", path, json={"success": True})
    assert status == 200 and done["outcome"]["reward"] == 1.0
    status, answer, _ = api("POST", path, json={"reward": 0.5})
    assert status == 409, answer
    # Another tenant sees none of it.
    other = type(api)(api_url, make_key("admin"))
    assert other("GET", f"/api/decisions/{first['id']}")[0] == 404
    assert other("GET", f"/api/decisions/{first['id']}/explanation")[0] == 404
    assert other("POST", path, json={"reward": 1})[0] == 404
    assert other("GET", "/api/models/default")[0] == 404
    assert other("GET", "/api/models")[1] == []
    status, mine, _ = api("GET", "/api/models")
    assert status == 200 and [m["name"] for m in mine] == ["default"]
    assert api("GET", "/api/models/nope")[0] == 404
    assert api("POST", "/api/models/nope/train")[0] == 404
    # Roles: a viewer reads but does not decide.
    viewer = type(api)(api_url, make_key("viewer"))
    assert viewer("POST", "/api/decisions", json={"context": {}, "actions": ["a", "b"]})[0] == 403


def test_declared_success_model_trains_on_the_pool_and_shows_its_versions(api: Api):
    status, model, _ = api(
        "PUT", "/api/models/signup", json={"actions": ["email", "call"], "reward": "success"}
    )
    assert status == 200 and model["status"] == "untrained" and model["reward"] == "success"
    assert api("PUT", "/api/models/signup", json={"actions": ["email"], "reward": "x"})[0] == 422
    assert api("PUT", "/api/models/signup", json={"actions": ["sms", "call"]})[0] == 409
    world_rng = World(seed=3).rng
    for _ in range(60):
        context = {"age": world_rng.randint(18, 80), "plan": world_rng.choice(["free", "pro"])}
        status, decision, _ = api(
            "POST", "/api/decisions", json={"model": "signup", "context": context}
        )
        assert status == 201
        won = (decision["action"]["type"] == "call") == (context["age"] > 50)
        assert (
            api("POST", f"/api/decisions/{decision['id']}/outcome", json={"success": won})[0] == 200
        )
    assert (
        api("POST", "/api/decisions/" + decision["id"] + "/outcome", json={"reward": 0.5})[0] == 409
    )
    status, queued, _ = api("POST", "/api/models/signup/train")
    assert status == 202 and queued["status"] == "queued"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        model = api("GET", "/api/models/signup")[1]
        if model["last_training"] and model["last_training"]["outcomes"] == 60:
            break
        time.sleep(0.3)
    assert model["status"] == "active", model
    assert model["metrics"]["metric"] == "log_loss"
    statuses = [v["status"] for v in model["versions"]]
    assert statuses.count("active") == 1 and set(statuses) <= {"active", "candidate", "retired"}
    status, decision, _ = api(
        "POST", "/api/decisions", json={"model": "signup", "context": {"age": 70}}
    )
    assert status == 201 and 0 <= decision["confidence"] <= 1
    why = api("GET", f"/api/decisions/{decision['id']}/explanation")[1]
    assert math.isclose(
        why["base_value"] + sum(c["contribution"] for c in why["contributions"]),
        why["raw_score"],
        abs_tol=1e-6,
    )
    assert math.isclose(1 / (1 + math.exp(-why["raw_score"])), decision["confidence"], abs_tol=1e-6)


def test_a_workflow_branches_on_a_decision_step(api: Api, client):
    from tests.integration.helpers import action, by_node, trigger, workflow

    doc = workflow(
        "route-ticket",
        [
            trigger(),
            action(
                "route",
                "decision",
                model="tickets",
                context={"tier": "{{ input.tier }}", "amount": "{{ input.amount }}"},
                actions=["escalate", "close"],
            ),
            {
                "id": "check",
                "type": "condition",
                "config": {"expression": 'steps.route.output.action == "escalate"'},
            },
            action(
                "escalate", "transform", output="escalated {{ steps.route.output.decision_id }}"
            ),
            action("close", "transform", output="closed"),
        ],
        [("start", "route"), ("route", "check")],
    )
    doc["connections"] += [
        {"source": "check", "target": "escalate", "when": "true"},
        {"source": "check", "target": "close", "when": "false"},
    ]
    created = client.create_workflow(doc)
    taken: set[str] = set()
    for amount in [10, 900, 50, 700, 300, 20, 60, 80, 90, 99, 5, 6, 7, 8, 9, 11, 12, 13]:
        if taken == {"escalate", "close"}:
            break
        done = client.wait(client.execute(created["id"], {"tier": "gold", "amount": amount})["id"])
        assert done["status"] == "succeeded", done
        steps = by_node(done)
        out = steps["route"]["output"]
        assert out["action"] in {"escalate", "close"} and 0 < out["propensity"] <= 1
        ran = "escalate" if out["action"] == "escalate" else "close"
        other = "close" if ran == "escalate" else "escalate"
        assert steps[ran]["status"] == "succeeded" and steps[other]["status"] == "skipped"
        taken.add(ran)
        # The decision is logged with the rendered context, under the workflow's tenant.
        decision = client.request("GET", f"/api/decisions/{out['decision_id']}")
        assert decision["context"] == {"tier": "gold", "amount": amount}
        assert decision["model"] == "tickets"
        reported = client.request(
            "POST", f"/api/decisions/{out['decision_id']}/outcome", json={"success": True}
        )
        assert reported["outcome"]["reward"] == 1.0
    assert taken == {"escalate", "close"}  # cold start explores both branches
    # A bad decision step is refused when the workflow is created.
    bad = workflow("bad", [trigger(), action("d", "decision", actions="x")], [("start", "d")])
    status, answer, _ = api("POST", "/api/workflows", json=bad)
    assert status == 422 and "nodes[d].config.context" in json.dumps(answer)


def test_run_prediction_comes_from_the_workflows_history_and_says_when_it_is_too_short(
    api: Api, worker
):
    from atom.client import Client
    from tests.integration.helpers import action, trigger, workflow

    client = Client(api.base, api.session.headers["X-API-Key"])  # the same tenant as api

    doc = workflow(
        "divide",
        [trigger(), action("div", "transform", output="{{ 10 / input.x }}")],
        [("start", "div")],
    )
    created = client.create_workflow(doc)
    path = f"/api/workflows/{created['id']}/prediction"

    def run(x: int) -> str:
        return client.wait(client.execute(created["id"], {"x": x})["id"])["status"]

    assert [run(x) for x in (1, 0, 2)] == ["succeeded", "failed", "succeeded"]
    status, early, _ = api("GET", path)
    assert status == 200, early
    assert early["enough_history"] is False and early["runs"] == 3
    assert early["duration_ms"] == {"p50": None, "p95": None}
    assert "too little history" in early["message"]
    statuses = [run(0 if i % 4 == 0 else 1) for i in range(18)]
    assert statuses.count("failed") == 5
    status, ready, _ = api("GET", path)
    assert status == 200 and ready["enough_history"] is True and ready["runs"] == 21
    assert ready["failures"] == 6
    assert 0 < ready["duration_ms"]["p50"] <= ready["duration_ms"]["p95"] < 60_000
    assert 0 < ready["failure_probability"] < 1
    assert ready["failure_model"] == "lightgbm binary"
    assert api("GET", "/api/workflows/00000000-0000-0000-0000-000000000000/prediction")[0] == 404


def test_user_predictions_come_from_the_events_received(api: Api):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    first = now - timedelta(days=14)

    def post(user: str, type_: str, at: datetime, spelling: str = "user_id") -> None:
        body = {"type": type_, "payload": {}, spelling: user, "timestamp": at.isoformat()}
        status, answer, _ = api("POST", "/api/events", json=body)
        assert status == 202, answer

    post("u0", "export", first)  # the earliest event: no window after it ever saw one
    for day in range(14):
        base = first + timedelta(days=day, hours=1)
        for n in range(8):
            user = f"u{n}"
            if n < 5:  # five users log in every day
                post(user, "login", base + timedelta(hours=n), "userId" if n % 2 else "user_id")
            elif day % 5 == 0:  # three log in every fifth day
                post(user, "login", base + timedelta(hours=n))
            if day % 7 == n % 7:
                post(user, "purchase", base + timedelta(hours=2))
    status, answer, _ = api(
        "POST",
        "/api/events",
        json={"type": "login", "user_id": "u0", "timestamp": (now + timedelta(days=1)).isoformat()},
    )
    assert status == 422 and "timestamp" in json.dumps(answer)

    status, body, _ = api("GET", "/api/predictions/users/u0?timeframe=24h")
    assert status == 200, body
    found = {p["event_type"]: p for p in body["predictions"]}
    assert set(found) == {"login", "purchase", "export"}
    login, purchase = found["login"], found["purchase"]
    assert login["enough_history"] and purchase["enough_history"]
    assert login["probability"] > 0.8 and login["expected_count"] > 0.5
    assert purchase["probability"] < login["probability"]
    assert found["export"]["enough_history"] is False
    assert "too little history" in found["export"]["message"]
    rare = {p["event_type"]: p for p in api("GET", "/api/predictions/users/u6")[1]["predictions"]}
    assert rare["login"]["probability"] < login["probability"]
    nobody = api("GET", "/api/predictions/users/ghost?timeframe=7d")[1]
    assert nobody["events_seen"] == 0 and nobody["predictions"] == []
    assert api("GET", "/api/predictions/users/u0?timeframe=soon")[0] == 422
    assert api("GET", "/api/predictions/users/u0?timeframe=90d")[0] == 422


def test_a_decision_step_announces_decision_made_on_the_run_s_event_stream(api: Api, client):
    from tests.integration.helpers import action, by_node, trigger, workflow
    from tests.integration.test_events import follow_in_background

    doc = workflow(
        "announce",
        [
            trigger(),
            action("pause", "delay", seconds=1),  # the follower subscribes meanwhile
            action("route", "decision", model="announce", context={"n": 1}, actions=["x", "y"]),
        ],
        [("start", "pause"), ("pause", "route")],
    )
    run = client.execute(client.create_workflow(doc)["id"])
    seen, thread = follow_in_background(client, run["id"])
    thread.join(60)
    assert not thread.is_alive()
    done = by_node(seen[-1][1])
    assert done["route"]["status"] == "succeeded", seen[-1]
    made = [data for name, data in seen if name == "decision:made"]
    assert len(made) == 1, [name for name, _ in seen]
    assert made[0]["decision_id"] == done["route"]["output"]["decision_id"]
    assert made[0]["node_id"] == "route" and made[0]["action"] in {"x", "y"}
