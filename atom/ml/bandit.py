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
- **Perturbed labels.** A bootstrap of identical rewards is identical: an action tried a few
  times with no reward would have every head agree it is worthless and never be tried
  again (seen in the synthetic world: 66 % best action on one seed). Each regression head
  therefore also sees every reward plus zero-mean noise (``LABEL_NOISE`` times the rewards'
  standard deviation; perturbed-history exploration, Kveton et al. 2019), which averages out
  where an action has many outcomes and keeps the heads apart where it has few.
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
EPSILON_SCALE = 1.0
HOLDOUT_SHARE = 5
LABEL_NOISE = 0.5
"""Scale of the perturbation added to each regression head's labels, in reward std units."""
"""One decision in this many (by id) is held out of every training, for champion/challenger."""


def params(reward: str, seed: int, rows: int = 1000) -> dict[str, Any]:
    """LightGBM parameters for small, growing, tabular data on a shared 2-core machine.

    Regularised for the size of the data (``rows`` outcomes of one action): few leaves and
    large leaves while data are thin, so a continuous field with no bearing on the reward
    cannot be split on until it has earned it (min_gain_to_split, L2), and each head sees
    a random 80 % of the features per tree, which decorrelates the bootstrap heads.
    """
    return {
        "objective": "binary" if reward == "success" else "regression",
        "learning_rate": 0.1,
        "num_leaves": int(min(15, max(4, rows // 40))),
        "min_data_in_leaf": int(min(50, max(10, rows // 20))),
        "min_sum_hessian_in_leaf": 1.0,
        "min_gain_to_split": 0.3 if reward != "success" else 0.0,
        "min_data_in_bin": 3,
        "min_data_per_group": 10,
        "cat_smooth": 5.0,
        "max_bin": 63,
        "lambda_l2": 5.0,
        "feature_fraction": 0.8,
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
    # Perturbed labels (regression heads): each head sees every reward plus zero-mean noise
    # of the rewards' own spread. Where an action has many outcomes the noise averages out;
    # where it has few (or all alike, where bootstrap weights alone give every head the same
    # answer) the heads disagree, so Thompson sampling keeps trying it.
    spread = float(np.std([s.reward for s in samples])) * LABEL_NOISE
    for action in actions:
        mine = [s for s in samples if s.action == action]
        x = np.array([feats.encode(s.row, schema) for s in mine], dtype=np.float64)
        y = np.array([s.reward for s in mine], dtype=np.float64)
        data = lgb.Dataset(
            x,
            label=y,
            categorical_feature=categorical,
            feature_name=[f"f{i}" for i in range(x.shape[1])],
            params=params(reward, seed, len(mine)),
            free_raw_data=False,
        ).construct()  # binned once; each head only reweights the rows
        heads = []
        for k in range(HEADS):
            weight = rng.poisson(1.0, size=len(mine)).astype(np.float64)
            if weight.sum() == 0:
                weight[:] = 1.0
            data.set_weight(weight)
            if reward != "success" and spread > 0:
                data.set_label(y + spread * rng.choice([-1.0, 1.0], size=len(mine)))
            booster = lgb.train(
                params(reward, seed * 31 + k, len(mine)), data, num_boost_round=ROUNDS
            )
            heads.append(booster.model_to_string())
        boosters[action] = heads
    return boosters, schema


def _holdout_scores(policy: Policy, holdout: list[Sample], actions: list[str]) -> np.ndarray:
    """Raw scores of every head for every holdout row and action: (heads, rows, actions)."""
    x = np.array([feats.encode(s.row, policy.schema) for s in holdout], dtype=np.float64)
    return np.stack(
        [
            np.array([h.predict(x, raw_score=True, num_threads=1) for h in policy.heads[a]])
            for a in actions
        ],
        axis=-1,
    )


def action_probabilities(policy: Policy, raw: np.ndarray) -> np.ndarray:
    """The policy's probability of each action for each row, as ``choose`` plays it:
    ``(1 - eps) * share of heads whose best action it is + eps / n``. ``raw`` is
    (heads, rows, actions); the answer is (rows, actions)."""
    heads, _, n = raw.shape
    best = raw.argmax(axis=2)  # (heads, rows)
    share = np.stack([(best == i).mean(axis=0) for i in range(n)], axis=1)
    eps = exploration_rate(policy.samples)
    return (1 - eps) * share + eps / n


def _snips(pi: np.ndarray, holdout: list[Sample], actions: list[str]) -> tuple[np.ndarray, ...]:
    """Per-row importance weights pi(logged action)/logged propensity, and rewards."""
    logged = np.array([actions.index(s.action) for s in holdout])
    propensity = np.array([max(s.propensity, 1e-6) for s in holdout])
    weights = pi[np.arange(len(holdout)), logged] / propensity
    rewards = np.array([s.reward for s in holdout])
    return weights, rewards


def evaluate(policy: Policy, holdout: list[Sample], actions: list[str]) -> dict[str, Any]:
    """Holdout metrics of a version, on decisions no version trains on:

    - the error of its reward model on the logged action (RMSE, or log loss for success
      models; lower is better);
    - ``policy_value``: the off-policy estimate of the reward per decision the version would
      earn as it plays (Thompson sampling plus its exploration floor), from the logged
      propensities: self-normalised inverse propensity scoring (SNIPS), with its standard
      error (delta method); ``logged_value`` is what the logging policy earned.
    """
    holdout = [s for s in holdout if s.action in actions]
    if not holdout:
        return {"holdout": 0}
    raw = _holdout_scores(policy, holdout, actions)
    mean = raw.mean(axis=0)  # (rows, actions)
    logged = np.array([actions.index(s.action) for s in holdout])
    predicted = mean[np.arange(len(holdout)), logged]
    rewards = np.array([s.reward for s in holdout])
    if policy.reward == "success":
        p = np.clip(1.0 / (1.0 + np.exp(-predicted)), 1e-6, 1 - 1e-6)
        name, error = (
            "log_loss",
            float(-np.mean(rewards * np.log(p) + (1 - rewards) * np.log(1 - p))),
        )
    else:
        name, error = "rmse", float(np.sqrt(np.mean((predicted - rewards) ** 2)))
    weights, _ = _snips(action_probabilities(policy, raw), holdout, actions)
    value, se = _snips_value(weights, rewards)
    return {
        "holdout": len(holdout),
        "metric": name,
        name: error,
        "policy_value": value,
        "policy_value_se": se,
        "logged_value": float(np.mean(rewards)),
    }


def _snips_value(weights: np.ndarray, rewards: np.ndarray) -> tuple[float | None, float | None]:
    total = float(weights.sum())
    if total <= 0:
        return None, None
    value = float((weights * rewards).sum() / total)
    n = len(weights)
    # Delta-method standard error of a ratio estimator.
    se = float(np.sqrt(np.sum((weights * (rewards - value)) ** 2)) / total) if n > 1 else None
    return value, se


def compare(
    challenger: Policy, champion: Policy, holdout: list[Sample], actions: list[str]
) -> dict[str, Any]:
    """The challenger's off-policy value minus the champion's on the same holdout rows, with
    the standard error of that difference (the two estimates share their rows, so the
    difference is far less noisy than either value)."""
    holdout = [s for s in holdout if s.action in actions]
    if len(holdout) < 2:
        return {"difference": None, "se": None}
    w_new, rewards = _snips(
        action_probabilities(challenger, _holdout_scores(challenger, holdout, actions)),
        holdout,
        actions,
    )
    w_old, _ = _snips(
        action_probabilities(champion, _holdout_scores(champion, holdout, actions)),
        holdout,
        actions,
    )
    new, _ = _snips_value(w_new, rewards)
    old, _ = _snips_value(w_old, rewards)
    if new is None or old is None:
        return {"difference": None, "se": None}
    # Linearised per-row influence of each ratio estimate; the difference's variance is
    # that of the difference of influences.
    influence = w_new * (rewards - new) / w_new.mean() - w_old * (rewards - old) / w_old.mean()
    se = float(np.std(influence, ddof=1) / np.sqrt(len(holdout)))
    return {"difference": new - old, "se": se}
