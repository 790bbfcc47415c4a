"""Training on the ML pool: a challenger from every logged outcome, published only when its
off-policy value is not worse than the champion's on the same holdout (champion/challenger)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker

from atom.clock import now
from atom.ml import bandit
from atom.store.models import Decision, MLModel, ModelVersion

logger = logging.getLogger("atom.ml.training")


def _samples(db: Session, model: MLModel) -> list[tuple[uuid.UUID, bandit.Sample]]:
    rows = db.execute(
        select(
            Decision.id, Decision.features, Decision.chosen, Decision.reward, Decision.propensity
        )
        .where(Decision.model_id == model.id, Decision.outcome_at.is_not(None))
        .order_by(Decision.outcome_at)
    ).all()
    return [
        (r.id, bandit.Sample(r.features, r.chosen, float(r.reward), float(r.propensity)))
        for r in rows
        if r.chosen in model.actions
    ]


def _champion(db: Session, model: MLModel) -> bandit.Policy | None:
    if model.active_version is None:
        return None
    stored = db.scalars(
        select(ModelVersion).where(
            ModelVersion.model_id == model.id, ModelVersion.version == model.active_version
        )
    ).one()
    return bandit.Policy.load(
        stored.version, model.reward, stored.boosters, stored.feature_schema, stored.samples
    )


VALUE_TOLERANCE_SE = 1.0
"""A challenger whose off-policy value is below the champion's by more than this many
standard errors of the difference is not published."""


def _verdict(
    new: dict[str, Any], old: dict[str, Any] | None, versus: dict[str, Any] | None
) -> tuple[bool, str]:
    if old is None:
        return True, "first trained version"
    diff, se = (versus or {}).get("difference"), (versus or {}).get("se")
    if diff is not None and se is not None:
        values = (
            f"off-policy value {new['policy_value']:.4f} vs the active {old['policy_value']:.4f} "
            f"(difference {diff:+.4f}, standard error {se:.4f}, {new['holdout']} holdout decisions)"
        )
        if diff >= -VALUE_TOLERANCE_SE * se:
            return True, f"{values}: not worse"
        return False, f"{values}: worse"
    # No estimate (no holdout decision either version could have made): prediction error.
    name = new.get("metric")
    if not name or not new.get("holdout"):
        return False, "no holdout outcomes to compare with the active version yet"
    if new[name] <= old[name] + 1e-12:
        return True, f"holdout {name} {new[name]:.4f} is not worse than the active {old[name]:.4f}"
    return False, f"holdout {name} {new[name]:.4f} is worse than the active {old[name]:.4f}"


def judge(
    challenger: bandit.Policy,
    champion: bandit.Policy | None,
    holdout: list[bandit.Sample],
    actions: list[str],
) -> tuple[bool, str, dict[str, Any]]:
    """Champion/challenger on the holdout: (publish?, why, the metrics the model page shows).

    The gate is the off-policy estimate of each version's reward per decision (SNIPS over
    the logged propensities): that is what a decision engine is for. The challenger is
    published unless its value is worse than the champion's by more than one standard error
    of the (paired) difference. Holdout prediction error is shown beside it and decides only
    when no off-policy estimate exists.
    """
    metrics = bandit.evaluate(challenger, holdout, actions)
    if champion is None:
        return True, "first trained version", {**metrics, "champion": None}
    old = bandit.evaluate(champion, holdout, actions)
    versus = bandit.compare(challenger, champion, holdout, actions)
    publish, reason = _verdict(metrics, old, versus)
    return publish, reason, {**metrics, "champion": old, "versus_champion": versus}


def train(factory: sessionmaker[Session], model_id: uuid.UUID) -> dict[str, Any]:
    """Train a new version of a model and decide whether it becomes active.

    One training per model at a time (a PostgreSQL advisory lock held for the run); a second
    request while one runs is skipped, since the running one sees the same outcomes.
    """
    started = time.perf_counter()
    with factory() as db, db.begin():
        locked = db.scalar(
            text("SELECT pg_try_advisory_xact_lock(hashtext(:key))"), {"key": f"ml:{model_id}"}
        )
        if not locked:
            return {"trained": False, "reason": "another training of this model is running"}
        model = db.get(MLModel, model_id, with_for_update=False)
        if model is None:
            return {"trained": False, "reason": "no such model"}
        samples = _samples(db, model)
        outcomes = len(samples)
        train_set = [s for i, s in samples if not bandit.is_holdout(i)]
        holdout = [s for i, s in samples if bandit.is_holdout(i)]
        version = model.latest_version + 1
        try:
            boosters, schema = bandit.train(train_set, model.actions, model.reward, seed=version)
        except ValueError as e:
            summary = {"trained": False, "reason": str(e), "outcomes": outcomes, "at": now()}
            _finish(db, model, summary)
            return summary
        text_boosters = json.dumps(boosters)
        challenger = bandit.Policy.load(
            version, model.reward, text_boosters, schema, len(train_set)
        )
        publish, reason, metrics = judge(
            challenger, _champion(db, model), holdout, list(model.actions)
        )
        if publish:  # the champion retires before its challenger is stored
            db.execute(
                update(ModelVersion)
                .where(ModelVersion.model_id == model.id, ModelVersion.status == "active")
                .values(status="retired")
            )
        db.add(
            ModelVersion(
                model_id=model.id,
                tenant_id=model.tenant_id,
                version=version,
                status="active" if publish else "candidate",
                boosters=text_boosters,
                feature_schema=schema,
                samples=len(train_set),
                holdout_samples=len(holdout),
                metrics=metrics,
                reason=reason,
            )
        )
        db.flush()
        model.latest_version = version
        if publish:
            model.active_version = version
        seconds = round(time.perf_counter() - started, 3)
        summary = {
            "trained": True,
            "version": version,
            "published": publish,
            "reason": reason,
            "outcomes": outcomes,
            "seconds": seconds,
            "at": now(),
        }
        _finish(db, model, summary)
    logger.info("trained %s v%s in %.2f s: %s", model_id, version, seconds, reason)
    return summary


def _finish(db: Session, model: MLModel, summary: dict[str, Any]) -> None:
    model.last_training = {**summary, "at": summary["at"].isoformat()}
    model.updated_at = now()
    db.flush()


def due(factory: sessionmaker[Session]) -> list[uuid.UUID]:
    """Models with outcomes their last training did not see."""
    with factory() as db:
        models = db.scalars(select(MLModel).where(MLModel.outcomes > 0)).all()
        return [
            m.id for m in models if m.outcomes > int((m.last_training or {}).get("outcomes") or 0)
        ]
