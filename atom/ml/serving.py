"""Serving decisions on the ML pool: boosters cached per process by (model, version).

The caller names the version it read as active, so a newly published version is loaded on
its first use and an explanation always uses the version that made the decision.
"""

from __future__ import annotations

import random
import uuid
from collections import OrderedDict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atom.errors import NotFound
from atom.ml import bandit
from atom.store.models import MLModel, ModelVersion

CACHE_SIZE = 64


class Models:
    """Loaded model versions of one ML process (least recently used ones are dropped)."""

    def __init__(self, factory: sessionmaker[Session]):
        self.factory = factory
        self._cache: OrderedDict[tuple[str, int], bandit.Policy] = OrderedDict()
        self.rng = random.Random()
        self.loads = 0

    def policy(self, model_id: str, version: int | None) -> bandit.Policy | None:
        """The loaded version (None for an untrained model); loads it on first use."""
        if version is None:
            return None
        key = (str(model_id), int(version))
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        with self.factory() as db:
            row = db.execute(
                select(ModelVersion, MLModel.reward)
                .join(MLModel, MLModel.id == ModelVersion.model_id)
                .where(ModelVersion.model_id == uuid.UUID(key[0]), ModelVersion.version == key[1])
            ).one_or_none()
        if row is None:
            raise NotFound(f"model version {version} does not exist")
        stored, reward = row
        loaded = bandit.Policy.load(
            stored.version, reward, stored.boosters, stored.feature_schema, stored.samples
        )
        self.loads += 1
        self._cache[key] = loaded
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return loaded

    def decide(
        self, model_id: str, version: int | None, actions: list[str], row: dict[str, Any]
    ) -> dict[str, Any]:
        """Choose an action; the answer the decision log records."""
        policy = self.policy(model_id, version)
        choice = bandit.choose(policy, actions, row, self.rng)
        return {
            "version": policy.version if policy else None,
            "action": choice.action,
            "propensity": choice.propensity,
            "explored": choice.explored,
            "scores": choice.scores,
            "probabilities": choice.probabilities,
        }

    def explain(
        self, model_id: str, version: int | None, row: dict[str, Any], action: str
    ) -> dict[str, Any]:
        """The contributions behind a decision, from the version that made it."""
        policy = self.policy(model_id, version)
        if policy is None:
            return {
                "action": action,
                "raw_score": None,
                "score": None,
                "base_value": None,
                "contributions": [],
                "note": "chosen uniformly at random before the model had any training: "
                "no feature contributed",
            }
        return bandit.explain(policy, row, action)
