"""A synthetic world for the decision engine: the best action depends on two context fields
through a rule the engine is not told (used by the tests and ``bench/ml.py``)."""

from __future__ import annotations

import random
from typing import Any

ACTIONS = ["approve", "review", "escalate"]
TIERS = ["gold", "silver", "bronze"]
REGIONS = ["north", "south", "east", "west"]


class World:
    """Contexts with two informative fields (``tier``, ``amount``) and two noise fields."""

    def __init__(self, seed: int = 7, p_best: float = 0.9, p_other: float = 0.2):
        self.rng = random.Random(seed)
        self.p_best, self.p_other = p_best, p_other

    def context(self) -> dict[str, Any]:
        """A new customer request."""
        return {
            "customer": {"tier": self.rng.choice(TIERS)},
            "amount": round(self.rng.uniform(0, 1000), 2),
            "region": self.rng.choice(REGIONS),
            "noise": round(self.rng.random(), 4),
        }

    @staticmethod
    def best(context: dict[str, Any]) -> str:
        """The hidden rule."""
        if context["customer"]["tier"] == "gold":
            return "approve"
        return "escalate" if context["amount"] > 500 else "review"

    def reward(self, context: dict[str, Any], action: str) -> float:
        """A Bernoulli reward: likely for the best action, unlikely for the others."""
        p = self.p_best if action == self.best(context) else self.p_other
        return 1.0 if self.rng.random() < p else 0.0

    def expected(self, context: dict[str, Any], action: str) -> float:
        """The mean reward of ``action`` in ``context``."""
        return self.p_best if action == self.best(context) else self.p_other
