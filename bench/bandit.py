"""The decision engine's learning, in-process and seeded: how often it picks the best action
after 1,000 rounds of the synthetic world, on several seeds, and what its explanations
attribute to the fields the hidden rule uses.

    .venv/bin/python bench/bandit.py                      # seeds 1..10, 1,000 rounds each
    .venv/bin/python bench/bandit.py --seeds 1-20 --rounds 1000 --lag 10

The loop is the engine's own code (``atom.ml.bandit``: ``choose``, ``train``, ``evaluate``,
``explain``; ``atom.ml.store.retrain_threshold``; the champion/challenger verdict of
``atom.ml.training``) without HTTP, PostgreSQL or Celery, so a run is a pure function of its
seed: the world, the decision ids (hence the holdout), the exploration and the bootstrap are
all seeded. ``--lag`` decisions are still made with the old version after a retraining is
due, as on the real pool where training runs while decisions go on. The integration test
(``tests/integration/test_ml.py``) checks the same bar through the API on real processes.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atom.ml import bandit  # noqa: E402
from atom.ml import features as feats  # noqa: E402
from atom.ml.simulation import ACTIONS, World  # noqa: E402
from atom.ml.store import retrain_threshold  # noqa: E402
from atom.ml.training import judge  # noqa: E402

RULE_FIELDS = ("customer.tier", "amount")
NOISE_FIELDS = ("region", "noise")


def run(seed: int, rounds: int, lag: int, every: int = 50) -> dict:
    """One seeded run of ``rounds`` decisions with outcomes."""
    world = World(seed=seed)
    rng = random.Random(seed * 7919 + 1)
    policy: bandit.Policy | None = None
    champion_metrics: dict | None = None
    samples: list[tuple[uuid.UUID, bandit.Sample]] = []
    at_training, version, due_at = 0, 0, None
    picks, engine, fixed = [], [], {a: [] for a in ACTIONS}
    trainings, published, train_seconds = 0, 0, 0.0
    for i in range(rounds):
        context = world.context()
        row = feats.flatten(context)
        choice = bandit.choose(policy, ACTIONS, row, rng)
        reward = world.reward(context, choice.action)
        picks.append(choice.action == world.best(context))
        engine.append(world.expected(context, choice.action))
        for a in ACTIONS:
            fixed[a].append(world.expected(context, a))
        decision_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        samples.append((decision_id, bandit.Sample(row, choice.action, reward, choice.propensity)))
        n = len(samples)
        if due_at is None and n - at_training >= retrain_threshold(at_training, every):
            at_training, due_at = n, i + lag
        if due_at is not None and i >= due_at:
            due_at = None
            train_set = [s for d, s in samples[:at_training] if not bandit.is_holdout(d)]
            holdout = [s for d, s in samples[:at_training] if bandit.is_holdout(d)]
            try:
                t0 = time.perf_counter()
                boosters, schema = bandit.train(train_set, ACTIONS, "reward", seed=version + 1)
                train_seconds += time.perf_counter() - t0
            except ValueError:
                continue
            version += 1
            trainings += 1
            challenger = bandit.Policy.load(
                version, "reward", json.dumps(boosters), schema, len(train_set)
            )
            publish, _, metrics = judge(challenger, policy, holdout, ACTIONS)
            if publish:
                policy, champion_metrics, published = challenger, metrics, published + 1
    last = slice(-200, None)
    best_fixed = max(statistics.mean(v[last]) for v in fixed.values())
    weight = dict.fromkeys(RULE_FIELDS + NOISE_FIELDS, 0.0)
    top_two_rule = top_one_rule = 0
    explained = World(seed=seed + 10_000)
    for _ in range(30):
        context = explained.context()
        row = feats.flatten(context)
        choice = bandit.choose(policy, ACTIONS, row, rng)
        why = bandit.explain(policy, row, choice.action) if policy else {"contributions": []}
        for c in why["contributions"]:
            weight[c["feature"]] = weight.get(c["feature"], 0.0) + abs(c["contribution"])
        top = [c["feature"] for c in why["contributions"][:2]]
        top_two_rule += set(top) == set(RULE_FIELDS)
        top_one_rule += bool(top) and top[0] in RULE_FIELDS
    total = sum(weight.values()) or 1.0
    return {
        "seed": seed,
        "best_action_last_200": statistics.mean(picks[last]),
        "engine_value_last_200": round(statistics.mean(engine[last]), 3),
        "best_fixed_last_200": round(best_fixed, 3),
        "rule_share_of_attribution": round(sum(weight[f] for f in RULE_FIELDS) / total, 3),
        "noise_share": round(weight["noise"] / total, 3),
        "top_is_a_rule_field": f"{top_one_rule}/30",
        "top_two_are_rule_fields": f"{top_two_rule}/30",
        "trainings": trainings,
        "published": published,
        "training_seconds": round(train_seconds, 2),
        "holdout": champion_metrics,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", default="1-10", help="a range a-b, or a comma list")
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--lag", type=int, default=5)
    parser.add_argument("--label-noise", type=float, default=bandit.LABEL_NOISE)
    parser.add_argument("--epsilon-scale", type=float, default=bandit.EPSILON_SCALE)
    parser.add_argument("--heads", type=int, default=bandit.HEADS)
    args = parser.parse_args()
    # Variants of the method's constants, for comparison (the defaults are the engine's).
    bandit.LABEL_NOISE, bandit.EPSILON_SCALE = args.label_noise, args.epsilon_scale
    bandit.HEADS = args.heads
    if "-" in args.seeds:
        lo, hi = map(int, args.seeds.split("-"))
        seeds = list(range(lo, hi + 1))
    else:
        seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    for seed in seeds:
        r = run(seed, args.rounds, args.lag)
        results.append(r)
        print(
            f"seed {seed:3d}: best action {r['best_action_last_200']:.1%}, engine "
            f"{r['engine_value_last_200']:.3f} vs best fixed {r['best_fixed_last_200']:.3f}, "
            f"rule share {r['rule_share_of_attribution']:.2f} (noise "
            f"{r['noise_share']:.2f}), top {r['top_is_a_rule_field']}, top two "
            f"{r['top_two_are_rule_fields']}, "
            f"{r['published']}/{r['trainings']} published, {r['training_seconds']} s training",
            flush=True,
        )
    rates = [r["best_action_last_200"] for r in results]
    shares = [r["rule_share_of_attribution"] for r in results]
    print(
        json.dumps(
            {
                "seeds": seeds,
                "rounds": args.rounds,
                "lag": args.lag,
                "label_noise": args.label_noise,
                "epsilon_scale": args.epsilon_scale,
                "heads": args.heads,
                "best_action_min_median_max": [
                    min(rates),
                    statistics.median(rates),
                    max(rates),
                ],
                "seeds_below_90_percent": [
                    r["seed"] for r in results if r["best_action_last_200"] < 0.9
                ],
                "beats_best_fixed_by_0.2_everywhere": all(
                    r["engine_value_last_200"] > r["best_fixed_last_200"] + 0.2 for r in results
                ),
                "rule_share_min_median": [min(shares), statistics.median(shares)],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
