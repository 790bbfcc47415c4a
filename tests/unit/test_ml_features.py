"""Contexts to features, and the bandit's pieces that need no worker."""

from __future__ import annotations

import math
import random
import uuid

from atom.ml import features as feats
from atom.ml.store import action_names, retrain_threshold


def test_check_context_names_every_problem():
    assert feats.check_context([1]) == ["context: must be a JSON object, not list"]
    deep = {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}
    problems = feats.check_context({**deep, "x": math.nan, "s": "y" * 600})
    assert any("nested deeper" in p for p in problems)
    assert "context.x: must be a finite number, not nan" in problems
    assert any(p.startswith("context.s: strings are at most") for p in problems)
    assert feats.check_context({f"k{i}": i for i in range(201)}) == [
        "context: has 201 fields; at most 200 allowed"
    ]
    assert "bytes of JSON" in feats.check_context({"x": "y" * 70_000})[0]
    assert feats.check_context({"userId": "u1", "currentState": {"page": "cart"}}) == []
    # An integer no float can hold was a 500 (OverflowError in flatten); empty names are fine.
    assert feats.check_context({"big": 10**400, "ok": 10**300, "": {"": 1}}) == [
        "context.big: numbers are at most 1e+300 in magnitude"
    ]
    assert feats.flatten({"": {"": 1}}) == {".": 1.0}


def test_flatten_keeps_numbers_strings_and_missing():
    row = feats.flatten(
        {"user": {"plan": "pro", "age": 41}, "vip": True, "tags": ["a", "b"], "note": None}
    )
    assert row == {"user.plan": "pro", "user.age": 41.0, "vip": 1.0, "tags": 2.0, "note": None}


def test_schema_and_encoding_handle_unseen_categories_and_missing_fields():
    rows = [{"plan": "pro", "age": 30.0}, {"plan": "free", "age": 50.0}, {"plan": 3.0}]
    schema = feats.infer_schema(rows)
    assert schema["features"] == [
        {"name": "age", "kind": "numeric"},
        {"name": "plan", "kind": "categorical", "categories": ["3", "free", "pro"]},
    ]
    assert feats.encode({"plan": "pro", "age": 1.0}, schema) == [1.0, 2.0]
    unseen = feats.encode({"plan": "enterprise", "other": 4.0}, schema)
    assert all(math.isnan(v) for v in unseen)
    assert feats.categorical_indices(schema) == [1]
    assert "_codes" not in str(feats.public_schema(schema))


def test_action_names_accept_auraos_objects_and_list_problems():
    assert action_names([{"type": "notify", "priority": 1}, "wait"]) == (["notify", "wait"], [])
    _, problems = action_names(["a", "a", 3])
    assert problems == [
        "actions[1]: 'a' is listed twice",
        "actions[2]: must be a name (a string) or an object with a type",
    ]
    assert action_names("a")[1] == ["actions: must be a non-empty list of action names"]


def test_retraining_is_quick_while_young_then_every_n():
    assert [retrain_threshold(n, 50) for n in (0, 10, 30, 100, 1000)] == [10, 10, 15, 50, 50]


def test_the_bandit_learns_and_its_explanations_add_up():
    from atom.ml import bandit
    from atom.ml.simulation import ACTIONS, World

    world, rng = World(seed=5), random.Random(5)
    log: list[tuple[uuid.UUID, bandit.Sample]] = []
    policy = None
    for t in range(400):
        context = world.context()
        row = feats.flatten(context)
        choice = bandit.choose(policy, ACTIONS, row, rng)
        assert math.isclose(sum(choice.probabilities.values()), 1.0)
        assert choice.propensity == choice.probabilities[choice.action]
        reward = world.reward(context, choice.action)
        decision_id = uuid.UUID(int=rng.getrandbits(128))
        log.append((decision_id, bandit.Sample(row, choice.action, reward, choice.propensity)))
        if t in (30, 100, 200, 300):
            train = [s for i, s in log if not bandit.is_holdout(i)]
            boosters, schema = bandit.train(train, ACTIONS, "reward", seed=t)
            import json

            policy = bandit.Policy.load(t, "reward", json.dumps(boosters), schema, len(train))
    assert policy is not None
    hits = 0
    for _ in range(200):
        context = world.context()
        scores = bandit.choose(policy, ACTIONS, feats.flatten(context), rng).scores
        hits += max(scores, key=lambda a: scores[a] or 0) == world.best(context)
    assert hits >= 170  # the greedy action is the best one at least 85 % of the time
    weight: dict[str, float] = {}
    for _ in range(30):
        row = feats.flatten(world.context())
        action = bandit.choose(policy, ACTIONS, row, rng).action
        why = bandit.explain(policy, row, action)
        total = why["base_value"] + sum(c["contribution"] for c in why["contributions"])
        assert math.isclose(total, why["raw_score"], abs_tol=1e-9)
        for c in why["contributions"]:
            weight[c["feature"]] = weight.get(c["feature"], 0.0) + abs(c["contribution"])
    top = sorted(weight, key=lambda name: -weight[name])[:2]
    assert set(top) == {"customer.tier", "amount"}, weight
    holdout = [s for i, s in log if bandit.is_holdout(i)]
    metrics = bandit.evaluate(policy, holdout, ACTIONS)
    assert metrics["holdout"] == len(holdout) > 0 and metrics["rmse"] < 0.5
    assert metrics["policy_value"] > metrics["logged_value"]


def test_a_challenger_is_published_on_its_off_policy_value():
    """The gate: each version's reward per decision estimated from the logged propensities
    (SNIPS) on the holdout; a challenger worse by more than a standard error stays a
    candidate, whatever its prediction error."""
    import json

    from atom.ml import bandit
    from atom.ml.simulation import ACTIONS, World
    from atom.ml.training import judge

    world, rng = World(seed=9), random.Random(9)
    log = []
    for _ in range(900):  # logged by a uniform policy
        context = world.context()
        action = rng.choice(ACTIONS)
        sample = bandit.Sample(feats.flatten(context), action, world.reward(context, action), 1 / 3)
        log.append((uuid.UUID(int=rng.getrandbits(128)), sample))
    train = [s for i, s in log if not bandit.is_holdout(i)]
    holdout = [s for i, s in log if bandit.is_holdout(i)]

    def version(samples: list[bandit.Sample], v: int) -> bandit.Policy:
        boosters, schema = bandit.train(samples, ACTIONS, "reward", seed=v)
        return bandit.Policy.load(v, "reward", json.dumps(boosters), schema, len(samples))

    good = version(train, 1)
    # The same data with the rewards turned upside down: it prefers the worst action.
    bad = version([bandit.Sample(s.row, s.action, 1 - s.reward, s.propensity) for s in train], 2)
    publish, reason, metrics = judge(good, bad, holdout, ACTIONS)
    assert publish and "not worse" in reason, reason
    assert metrics["policy_value"] > 0.75 > 0.35 > metrics["champion"]["policy_value"]
    assert metrics["versus_champion"]["difference"] > 5 * metrics["versus_champion"]["se"]
    assert abs(metrics["logged_value"] - sum(s.reward for s in holdout) / len(holdout)) < 1e-12
    publish, reason, _ = judge(bad, good, holdout, ACTIONS)
    assert not publish and reason.endswith(": worse"), reason
    # A challenger no different from the champion is published (not worse).
    assert judge(version(train, 1), good, holdout, ACTIONS)[0]
