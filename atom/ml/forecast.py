"""Run predictions on the ML pool: a workflow's next run duration (p50/p95, LightGBM quantile
objective) and failure probability (binary objective), from the workflow's own history.

Only the ML pool imports this module. Features of a run: hour of day and day of week it was
created, the workflow version, the previous run's duration and the failure share of the
previous ten runs. With fewer than ``MIN_RUNS`` finished runs the answer says so, and gives
no figures.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from atom.store.models import Execution

MIN_RUNS = 20
HISTORY = 2000
FEATURES = ["hour", "weekday", "version", "previous_ms", "recent_failure_share"]


def history(db: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> list[dict[str, Any]]:
    """The workflow's latest finished runs (succeeded or failed), oldest first."""
    rows = db.execute(
        select(
            Execution.created_at,
            Execution.started_at,
            Execution.finished_at,
            Execution.status,
            Execution.workflow_version,
        )
        .where(
            Execution.tenant_id == tenant_id,
            Execution.workflow_id == workflow_id,
            Execution.status.in_(("succeeded", "failed")),
            Execution.finished_at.is_not(None),
        )
        .order_by(Execution.created_at.desc())
        .limit(HISTORY)
    ).all()
    runs = [
        {
            "created_at": r.created_at,
            "duration_ms": (r.finished_at - (r.started_at or r.created_at)).total_seconds() * 1000,
            "failed": r.status == "failed",
            "version": r.workflow_version,
        }
        for r in reversed(rows)
    ]
    return runs


def _features(runs: list[dict[str, Any]], i: int, at: datetime, version: int) -> list[float]:
    before = runs[max(0, i - 10) : i]
    return [
        float(at.hour),
        float(at.weekday()),
        float(version),
        runs[i - 1]["duration_ms"] if i > 0 else math.nan,
        float(np.mean([r["failed"] for r in before])) if before else math.nan,
    ]


def _params(objective: str, **extra: Any) -> dict[str, Any]:
    return {
        "objective": objective,
        "learning_rate": 0.1,
        "num_leaves": 7,
        "min_data_in_leaf": 5,
        "min_data_in_bin": 3,
        "max_bin": 63,
        "num_threads": 1,
        "deterministic": True,
        "verbose": -1,
        **extra,
    }


def predict(runs: list[dict[str, Any]], now: datetime | None = None) -> dict[str, Any]:
    """The next run's duration p50/p95 and failure probability, or why there are none."""
    now = now or datetime.now(UTC)
    failures = sum(r["failed"] for r in runs)
    answer: dict[str, Any] = {
        "runs": len(runs),
        "failures": failures,
        "enough_history": len(runs) >= MIN_RUNS,
        "duration_ms": {"p50": None, "p95": None},
        "failure_probability": None,
    }
    if len(runs) < MIN_RUNS:
        answer["message"] = (
            f"too little history: {len(runs)} finished run(s), at least {MIN_RUNS} are needed "
            "for a prediction"
        )
        return answer
    x = np.array(
        [_features(runs, i, r["created_at"], r["version"]) for i, r in enumerate(runs)],
        dtype=np.float64,
    )
    y = np.array([r["duration_ms"] for r in runs], dtype=np.float64)
    nxt = np.array([_features(runs, len(runs), now, runs[-1]["version"])], dtype=np.float64)
    quantiles = {}
    for name, alpha in (("p50", 0.5), ("p95", 0.95)):
        booster = lgb.train(
            _params("quantile", alpha=alpha), lgb.Dataset(x, label=y), num_boost_round=50
        )
        quantiles[name] = max(0.0, float(booster.predict(nxt)[0]))
    quantiles["p95"] = max(quantiles["p95"], quantiles["p50"])
    answer["duration_ms"] = {k: round(v, 1) for k, v in quantiles.items()}
    labels = np.array([float(r["failed"]) for r in runs])
    if 0 < failures < len(runs):
        booster = lgb.train(_params("binary"), lgb.Dataset(x, label=labels), num_boost_round=50)
        answer["failure_probability"] = round(float(booster.predict(nxt)[0]), 4)
        answer["failure_model"] = "lightgbm binary"
    else:  # one class only: a model has nothing to separate; Laplace's rule of succession
        answer["failure_probability"] = round((failures + 1) / (len(runs) + 2), 4)
        answer["failure_model"] = "rule of succession (every run so far ended the same way)"
    answer["features"] = FEATURES
    answer["message"] = f"from the workflow's last {len(runs)} finished runs"
    return answer


MIN_EXAMPLES = 30
USER_FEATURES = [
    "hours_since_last",
    "count_7d",
    "count_30d",
    "all_events_7d",
    "hour_of_day",
    "share_in_window_hours",
]
HOUR = 3600.0


def _user_features(
    own: list[float], everything: list[float], at: float, horizon: float
) -> list[float]:
    """Recency, frequency and time-of-day features of one user and event type at ``at``."""
    past = [t for t in own if t <= at]
    last = past[-1] if past else None
    hour = datetime.fromtimestamp(at, UTC).hour
    span_hours = max(1, round(horizon / HOUR))
    hours = {(hour + k) % 24 for k in range(min(span_hours, 24))}
    in_window = [t for t in past if datetime.fromtimestamp(t, UTC).hour in hours]
    return [
        (at - last) / HOUR if last is not None else math.nan,
        float(sum(1 for t in past if t > at - 7 * 24 * HOUR)),
        float(sum(1 for t in past if t > at - 30 * 24 * HOUR)),
        float(sum(1 for t in everything if at - 7 * 24 * HOUR < t <= at)),
        float(hour),
        len(in_window) / len(past) if past else math.nan,
    ]


def predict_user(
    events: list[tuple[str, str, float]], user_id: str, horizon: float, now: float
) -> dict[str, Any]:
    """Per event type the user has done: the probability of at least one in the next
    ``horizon`` seconds and the expected count, from LightGBM models trained on every user
    of the tenant at past cut-off times (binary and Poisson objectives)."""
    by_user: dict[str, dict[str, list[float]]] = {}
    all_by_user: dict[str, list[float]] = {}
    for user, type_, at in events:
        by_user.setdefault(user, {}).setdefault(type_, []).append(at)
        all_by_user.setdefault(user, []).append(at)
    mine = by_user.get(user_id, {})
    start = min((at for _, _, at in events), default=now)
    step = max(horizon / 2, HOUR)
    cutoffs: list[float] = []
    cut = now - horizon
    while cut > start + horizon and len(cutoffs) < 60:
        cutoffs.append(cut)
        cut -= step
    predictions = []
    for type_ in sorted(mine, key=lambda t: -len(mine[t]))[:20]:
        x, seen, counts = [], [], []
        for cut in cutoffs:
            for user, types in by_user.items():
                own = types.get(type_, [])
                if not any(t <= cut for t in all_by_user[user]):
                    continue
                x.append(_user_features(own, all_by_user[user], cut, horizon))
                n = sum(1 for t in own if cut < t <= cut + horizon)
                seen.append(1.0 if n else 0.0)
                counts.append(float(n))
        entry: dict[str, Any] = {"event_type": type_, "events_seen": len(mine[type_])}
        positives = sum(seen)
        if len(x) < MIN_EXAMPLES or positives == 0 or positives == len(seen):
            entry.update(
                probability=None,
                expected_count=None,
                enough_history=False,
                message=f"too little history: {len(x)} past windows to learn from "
                f"({int(positives)} with this event); at least {MIN_EXAMPLES} with both "
                "outcomes are needed",
            )
            predictions.append(entry)
            continue
        features = np.array(x, dtype=np.float64)
        target = np.array([_user_features(mine[type_], all_by_user[user_id], now, horizon)])
        classifier = lgb.train(
            _params("binary"), lgb.Dataset(features, label=np.array(seen)), num_boost_round=50
        )
        regressor = lgb.train(
            _params("poisson"), lgb.Dataset(features, label=np.array(counts)), num_boost_round=50
        )
        entry.update(
            probability=round(float(classifier.predict(target)[0]), 4),
            expected_count=round(float(regressor.predict(target)[0]), 3),
            enough_history=True,
            training_windows=len(x),
        )
        predictions.append(entry)
    return {
        "user_id": user_id,
        "events_seen": sum(len(v) for v in mine.values()),
        "predictions": predictions,
        "features": USER_FEATURES,
    }
