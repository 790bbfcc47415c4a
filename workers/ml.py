"""The ML pool's task bodies (``atom worker --pool ml``): decide, explain, train, score.

Only this process type imports LightGBM. Answers are JSON; a request the pool cannot serve
comes back as ``{"error": {status, message}}`` for the caller to raise.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

from celery import Celery

from atom.celery_app import (
    ML_ANOMALY_SCORE,
    ML_DECIDE,
    ML_EXPLAIN,
    ML_PING,
    ML_PREDICT_RUN,
    ML_PREDICT_USER,
    ML_RETRAIN_DUE,
    ML_TRAIN,
)
from atom.config import Settings
from atom.errors import AtomError
from atom.ml import anomaly, behaviour, forecast, serving, training
from atom.store.db import make_engine, make_sessionmaker

logger = logging.getLogger("atom.ml")


class MLContext:
    """Per-process resources of an ML worker, made after the prefork fork."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._models: serving.Models | None = None
        self._pid = 0

    @property
    def models(self) -> serving.Models:
        """This process's model cache (and its database sessions)."""
        if self._models is None or self._pid != os.getpid():
            assert self.settings.database_url
            factory = make_sessionmaker(make_engine(self.settings.database_url, pool_size=2))
            self._models = serving.Models(factory)
            self._pid = os.getpid()
        return self._models


def _error(e: AtomError) -> dict[str, Any]:
    return {"error": {"status": e.http_status, "message": str(e)}}


def _anomaly_scores(
    timestamps: list[float | None], values: list[float | None], sensitivity: float
) -> dict[str, Any]:
    try:
        return anomaly.score_series(timestamps, values, sensitivity)
    except (TypeError, ValueError) as e:  # the API checks first; another caller may not
        return {"error": {"status": 422, "message": str(e), "errors": {"series": [str(e)]}}}


def register(app: Celery, settings: Settings) -> MLContext:
    """Register the ML tasks on ``app``."""
    ctx = MLContext(settings)
    app.conf.worker_prefetch_multiplier = 1
    # Callers wait at most ATOM_ML_TIMEOUT and never read an answer later, so the pool's
    # stored results expire soon instead of each caller deleting its own (a round trip).
    app.conf.result_expires = max(60, int(settings.ml_timeout * 4))

    @app.task(name=ML_PING, acks_late=False)
    def ping() -> str:
        """A no-op round trip: the floor under every ML call (bench/ml.py)."""
        return "pong"

    @app.task(name=ML_DECIDE, acks_late=False, soft_time_limit=30)
    def decide(model_id: str, version: int | None, actions: list[str], row: dict) -> Any:
        """Choose one of ``actions`` for a flattened context."""
        try:
            return ctx.models.decide(model_id, version, actions, row)
        except AtomError as e:
            return _error(e)

    @app.task(name=ML_EXPLAIN, acks_late=False, soft_time_limit=30)
    def explain(model_id: str, version: int | None, row: dict, action: str) -> Any:
        """The contributions behind a logged decision."""
        try:
            return ctx.models.explain(model_id, version, row, action)
        except AtomError as e:
            return _error(e)

    @app.task(name=ML_PREDICT_RUN, acks_late=False, soft_time_limit=30)
    def predict_run(tenant_id: str, workflow_id: str) -> Any:
        """A workflow's next run: duration p50/p95 and failure probability."""
        with ctx.models.factory() as db:
            runs = forecast.history(db, uuid.UUID(tenant_id), uuid.UUID(workflow_id))
        return forecast.predict(runs)

    @app.task(name=ML_PREDICT_USER, acks_late=False, soft_time_limit=30)
    def predict_user(tenant_id: str, user_id: str, horizon: float) -> Any:
        """A user's next events: per type, probability and expected count in the horizon."""
        with ctx.models.factory() as db:
            events = behaviour.tenant_events(db, uuid.UUID(tenant_id))
        return forecast.predict_user(events, user_id, horizon, time.time())

    @app.task(name=ML_ANOMALY_SCORE, acks_late=False, soft_time_limit=30)
    def anomaly_score(
        timestamps: list[float | None], values: list[float | None], sensitivity: float = 0.5
    ) -> Any:
        """Streaming anomaly scores of one series (``atom.ml.anomaly.score_series``)."""
        return _anomaly_scores(timestamps, values, sensitivity)

    @app.task(name=ML_TRAIN, acks_late=True, soft_time_limit=900, time_limit=960)
    def train(model_id: str) -> Any:
        """Train a new version of a model (champion/challenger)."""
        return training.train(ctx.models.factory, uuid.UUID(model_id))

    @app.task(name=ML_RETRAIN_DUE, acks_late=True, soft_time_limit=3000, time_limit=3300)
    def retrain_due() -> Any:
        """The periodic retraining: every model with outcomes its last training did not see."""
        done = []
        for model_id in training.due(ctx.models.factory):
            done.append(training.train(ctx.models.factory, model_id))
        return {"trained": len(done)}

    return ctx
