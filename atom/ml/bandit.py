"""The contextual bandit: LightGBM reward models per action, bootstrapped Thompson sampling.

Only the ML pool imports this module (it loads NumPy and LightGBM).

Exploration, and why this method (README "Decision engine"):
- **Cold start.** With no trained version every offered action is equally likely
  (propensity ``1/n``): there is nothing to exploit yet, and uniform logging gives the first
  training set every action.
- **Uncertainty.** Each action's expected reward is modelled by ``HEADS`` LightGBM boosters,
  each trained on a Poisson(1) bootstrap of that action's outcomes (online bootstrap, as in
  Osband & Van Roy 2015, "Bootstrapped Thompson Sampling and Deep Exploration"). A decision
  samples one head and plays its best action: where the data are thin the heads disagree
  and the engine tries the alternatives; where they agree it exploits. That is Thompson
  sampling without a closed-form posterior, which gradient-boosted trees do not have.
- **Decaying floor.** The Thompson choice is mixed with a uniform draw of weight
  ``epsilon = max(EPSILON_MIN, EPSILON_SCALE / sqrt(samples))``. Boosted trees can be
  confidently wrong on little data (every head shares the same blind spot), and the floor
  keeps every action's propensity above zero, which off-policy evaluation (inverse
  propensity) needs.
- **Exact propensities.** Because a head is drawn uniformly from a finite set, the
  probability of each action is computed exactly, not estimated:
  ``p(a) = (1 - epsilon) * share of heads whose best action is a + epsilon / n``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np

from atom.ml import features as feats

HEADS = 4
ROUNDS = 40
EPSILON_MIN = 0.01
EPSILON_SCALE = 0.5
HOLDOUT_SHARE = 5
"""One decision in this many (by id) is held out of every training, for champion/challenger."""


def params(reward: str, seed: int) -> dict[str, Any]:
    """LightGBM parameters for small, growing, tabular data on a shared 2-core machine."""
    return {
        "objective": "binary" if reward == "success" else "regression",
        "learning_rate": 0.1,
        "num_leaves": 15,
        "min_data_in_leaf": 5,
        "min_data_in_bin": 3,
        "min_data_per_group": 5,
        "cat_smooth": 5.0,
        "max_bin": 63,
        "lambda_l2": 1.0,
        "num_threads": 1,
        "deterministic": True,
        "force_row_wise": True,
        "seed": seed,
        "verbose": -1,
    }


def exploration_rate(samples: int) -> float:
    """Weight of the uniform draw: 1 with no data, then ``1/sqrt(samples)``, down to a floor."""
    if samples <= 0:
        return 1.0
    return max(EPSILON_MIN, min(1.0, EPSILON_SCALE / math.sqrt(samples)))


def is_holdout(decision_id: Any) -> bool:
    """Whether a decision belongs to the fixed holdout (stable across trainings)."""
    return int(str(decision_id).replace("-", ""), 16) % HOLDOUT_SHARE == 0


@dataclass
class Policy:
    """One loaded model version: its schema and each action's bootstrap heads."""

    version: int
    reward: str
    schema: dict[str, Any]
    heads: dict[str, list[lgb.Booster]]
    samples: int

    @classmethod
    def load(cls, version: int, reward: str, boosters: str, schema: dict, samples: int) -> Policy:
        """Rebuild a stored version (boosters as ``model_to_string`` text)."""
        texts = json.loads(boosters)
        heads = {a: [lgb.Booster(model_str=t) for t in ts] for a, ts in texts.items()}
        return cls(version, reward, schema, heads, samples)

    def link(self, raw: float) -> float:
        """The score from a raw margin: a probability for success models, else the value."""
        if self.reward == "success":
            return 1.0 / (1.0 + math.exp(-raw))
        return raw

    def raw(self, vector: np.ndarray, actions: list[str]) -> np.ndarray:
        """Raw scores, shape (heads, actions)."""
        return np.array(
            [
                [float(h.predict(vector, raw_score=True, num_threads=1)[0]) for h in self.heads[a]]
                for a in actions
            ]
        ).T


@dataclass(frozen=True)
class Choice:
    """What the policy chose, with the odds it chose with."""

    action: str
    propensity: float
    explored: bool
    scores: dict[str, float | None]
    probabilities: dict[str, float]


def choose(
    policy: Policy | None, actions: list[str], row: dict[str, Any], rng: random.Random
) -> Choice:
    """Pick one of ``actions`` for a flattened context."""
    n = len(actions)
    if policy is None or any(a not in policy.heads for a in actions):
        action = rng.choice(actions)
        probs = dict.fromkeys(actions, 1.0 / n)
        return Choice(action, 1.0 / n, True, dict.fromkeys(actions), probs)
    vector = np.array([feats.encode(row, policy.schema)], dtype=np.float64)
    raw = policy.raw(vector, actions)  # (heads, actions)
    mean = raw.mean(axis=0)
    greedy = actions[int(np.argmax(mean))]
    best_per_head = raw.argmax(axis=1)
    eps = exploration_rate(policy.samples)
    probs = {
        a: (1 - eps) * float(np.mean(best_per_head == i)) + eps / n for i, a in enumerate(actions)
    }
    if rng.random() < eps:
        action = rng.choice(actions)
    else:
        action = actions[int(best_per_head[rng.randrange(len(best_per_head))])]
    scores: dict[str, float | None] = {
        a: policy.link(float(mean[i])) for i, a in enumerate(actions)
    }
    return Choice(action, probs[action], action != greedy, scores, probs)


def explain(policy: Policy, row: dict[str, Any], action: str) -> dict[str, Any]:
    """LightGBM's own contributions (``pred_contrib``) for ``action``, averaged over heads.

    TreeSHAP contributions add up exactly to each head's raw score, so their mean adds up to
    the mean raw score, which is the score the decision reported (before the link).
    """
    vector = np.array([feats.encode(row, policy.schema)], dtype=np.float64)
    contrib = np.mean(
        [h.predict(vector, pred_contrib=True, num_threads=1)[0] for h in policy.heads[action]],
        axis=0,
    )
    raw = float(np.mean([h.predict(vector, raw_score=True)[0] for h in policy.heads[action]]))
    names = [f["name"] for f in policy.schema["features"]]
    return {
        "action": action,
        "raw_score": raw,
        "score": policy.link(raw),
        "base_value": float(contrib[-1]),
        "contributions": sorted(
            (
                {"feature": name, "value": row.get(name), "contribution": float(c)}
                for name, c in zip(names, contrib[:-1], strict=True)
            ),
            key=lambda item: -abs(item["contribution"]),
        ),
    }


@dataclass(frozen=True)
class Sample:
    """One logged decision with its outcome."""

    row: dict[str, Any]
    action: str
    reward: float
    propensity: float


def train(
    samples: list[Sample], actions: list[str], reward: str, seed: int
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Train every action's heads; returns (``{action: [model text]}``, feature schema).

    Raises ValueError when an action has no outcome yet.
    """
    schema = feats.infer_schema([s.row for s in samples])
    if not schema["features"]:
        schema = {"features": [{"name": "_bias", "kind": "numeric"}]}
    categorical = feats.categorical_indices(schema)
    rng = np.random.default_rng(seed)
    boosters: dict[str, list[str]] = {}
    missing = [a for a in actions if not any(s.action == a for s in samples)]
    if missing:
        raise ValueError(f"no outcome yet for action(s) {', '.join(missing)}")
    for action in actions:
        mine = [s for s in samples if s.action == action]
        x = np.array([feats.encode(s.row, schema) for s in mine], dtype=np.float64)
        y = np.array([s.reward for s in mine], dtype=np.float64)
        data = lgb.Dataset(
            x,
            label=y,
            categorical_feature=categorical,
            feature_name=[f"f{i}" for i in range(x.shape[1])],
            params=params(reward, seed),
            free_raw_data=False,
        ).construct()  # binned once; each head only reweights the rows
        heads = []
        for k in range(HEADS):
            weight = rng.poisson(1.0, size=len(mine)).astype(np.float64)
            if weight.sum() == 0:
                weight[:] = 1.0
            data.set_weight(weight)
            booster = lgb.train(params(reward, seed * 31 + k), data, num_boost_round=ROUNDS)
            heads.append(booster.model_to_string())
        boosters[action] = heads
    return boosters, schema


def evaluate(policy: Policy, holdout: list[Sample], actions: list[str]) -> dict[str, Any]:
    """Holdout metrics: the error of the reward model on the logged action (RMSE, or log loss
    for success models; lower is better) and the self-normalised inverse-propensity estimate
    of the greedy policy's reward per decision (off-policy value)."""
    if not holdout:
        return {"holdout": 0}
    errors, weights, weighted = [], 0.0, 0.0
    for s in holdout:
        vector = np.array([feats.encode(s.row, policy.schema)], dtype=np.float64)
        raw = policy.raw(vector, actions).mean(axis=0)
        pred = policy.link(float(raw[actions.index(s.action)]))
        if policy.reward == "success":
            p = min(max(pred, 1e-6), 1 - 1e-6)
            errors.append(-(s.reward * math.log(p) + (1 - s.reward) * math.log(1 - p)))
        else:
            errors.append((pred - s.reward) ** 2)
        if actions[int(np.argmax(raw))] == s.action and s.propensity > 0:
            weights += 1.0 / s.propensity
            weighted += s.reward / s.propensity
    name = "log_loss" if policy.reward == "success" else "rmse"
    error = float(np.mean(errors))
    return {
        "holdout": len(holdout),
        "metric": name,
        name: error if name == "log_loss" else math.sqrt(error),
        "policy_value": weighted / weights if weights else None,
        "logged_value": float(np.mean([s.reward for s in holdout])),
    }
