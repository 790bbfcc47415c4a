"""The model store and the decision log in PostgreSQL (no LightGBM here: the API uses it).

Query functions take a Session and flush; the request or task owns the commit.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from atom.clock import now
from atom.errors import Conflict, InvalidInput, NotFound
from atom.ml import features as feats
from atom.store.models import Decision, MLModel, ModelVersion

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
NAME = re.compile(NAME_PATTERN)
"""A model name, matched whole (``fullmatch``: no trailing newline slips through)."""
MAX_ACTIONS = 50
DEFAULT_MODEL = "default"
REWARDS = ("reward", "success")


def action_names(actions: Any, where: str = "actions") -> tuple[list[str], list[str]]:
    """Action names from strings or AuraOS ``{type, ...}`` objects: (names, problems)."""
    if not isinstance(actions, list) or not actions:
        return [], [f"{where}: must be a non-empty list of action names"]
    names, problems = [], []
    for i, item in enumerate(actions):
        name = item.get("type") if isinstance(item, dict) else item
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            problems.append(f"{where}[{i}]: must be a name (a string) or an object with a type")
        elif name in names:
            problems.append(f"{where}[{i}]: {name!r} is listed twice")
        else:
            names.append(name)
    if len(actions) > MAX_ACTIONS:
        problems.append(f"{where}: at most {MAX_ACTIONS} actions")
    if len(names) < 2 and not problems:
        problems.append(f"{where}: a decision needs at least two actions to choose from")
    return names, problems


def _invalid(problems: list[str]) -> InvalidInput:
    grouped: dict[str, list[str]] = {}
    for p in problems:
        where, _, message = p.partition(": ")
        grouped.setdefault(where, []).append(message)
    return InvalidInput(grouped)


def check_name(name: str) -> None:
    """422 unless ``name`` is a model name (letters, digits, ``_.-``, at most 100)."""
    if not NAME.fullmatch(name or ""):
        raise _invalid(["model: must be 1-100 letters, digits, '_', '.' or '-'"])


def declare_model(
    db: Session, tenant_id: uuid.UUID, name: str, actions: Any, reward: str
) -> MLModel:
    """Create a model with its action set (``PUT /api/models/{name}``); 409 if it exists with
    another action set or reward kind."""
    check_name(name)
    names, problems = action_names(actions)
    if reward not in REWARDS:
        problems.append(f"reward: must be one of {', '.join(REWARDS)}")
    if problems:
        raise _invalid(problems)
    model = _get_or_create(db, tenant_id, name, names, reward)
    if model.actions != names or model.reward != reward:
        raise Conflict(
            f"model {name!r} exists with actions {model.actions} and reward {model.reward!r}; "
            "a model's action set is fixed when it is created",
            status="exists",
        )
    return model


def _get_or_create(
    db: Session, tenant_id: uuid.UUID, name: str, actions: list[str], reward: str = "reward"
) -> MLModel:
    db.execute(
        insert(MLModel)
        .values(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            name=name,
            actions=actions,
            reward=reward,
            latest_version=0,
            outcomes=0,
            outcomes_at_training=0,
        )
        .on_conflict_do_nothing(constraint="uq_ml_models_tenant_name")
    )
    return db.scalars(
        select(MLModel).where(MLModel.tenant_id == tenant_id, MLModel.name == name)
    ).one()


def get_model(db: Session, tenant_id: uuid.UUID, name: str) -> MLModel:
    """The tenant's model by name, or 404."""
    model = db.scalars(
        select(MLModel).where(MLModel.tenant_id == tenant_id, MLModel.name == name)
    ).one_or_none()
    if model is None:
        raise NotFound(f"no model named {name!r}")
    return model


def resolve(
    db: Session, tenant_id: uuid.UUID, name: str | None, context: Any, actions: Any
) -> tuple[MLModel, list[str], dict[str, Any]]:
    """Validate a decision request; the model (created by the first decision that names it),
    the offered actions and the flattened context. 422 lists every problem."""
    name = name or DEFAULT_MODEL
    problems = feats.check_context(context)
    if not NAME.fullmatch(name):
        problems.append("model: must be 1-100 letters, digits, '_', '.' or '-'")
    offered: list[str] = []
    if actions is not None:
        offered, more = action_names(actions)
        problems += more
    if problems:
        raise _invalid(problems)
    model = db.scalars(
        select(MLModel).where(MLModel.tenant_id == tenant_id, MLModel.name == name)
    ).one_or_none()
    if model is None:
        if not offered:
            raise NotFound(
                f"no model named {name!r}: name its actions to create it with this decision"
            )
        model = _get_or_create(db, tenant_id, name, offered)
    if not offered:
        offered = list(model.actions)
    unknown = [a for a in offered if a not in model.actions]
    if unknown:
        raise NotFound(
            f"model {name!r} has no action {', '.join(map(repr, unknown))}; its actions are "
            f"{model.actions} (fixed when it was created)"
        )
    return model, offered, feats.flatten(context)


def record_decision(
    db: Session,
    model: MLModel,
    decision_id: uuid.UUID,
    context: dict[str, Any],
    row: dict[str, Any],
    offered: list[str],
    result: dict[str, Any],
    execution_id: uuid.UUID | None = None,
) -> Decision:
    """Log a decision the ML pool made."""
    chosen = result["action"]
    decision = Decision(
        id=decision_id,
        tenant_id=model.tenant_id,
        model_id=model.id,
        model_version=result["version"],
        context=context,
        features=row,
        actions=offered,
        chosen=chosen,
        scores=result["scores"],
        propensity=result["propensity"],
        explored=result["explored"],
        confidence=result["scores"].get(chosen),
        execution_id=execution_id,
    )
    db.add(decision)
    db.flush()
    return decision


def get_decision(db: Session, tenant_id: uuid.UUID, decision_id: uuid.UUID) -> Decision:
    """The tenant's decision, or 404."""
    decision = db.scalars(
        select(Decision).where(Decision.id == decision_id, Decision.tenant_id == tenant_id)
    ).one_or_none()
    if decision is None:
        raise NotFound(f"no decision {decision_id}")
    return decision


def decision_view(decision: Decision, model_name: str, full: bool = False) -> dict[str, Any]:
    """A decision as the API shows it."""
    view: dict[str, Any] = {
        "id": str(decision.id),
        "model": model_name,
        "model_version": decision.model_version,
        "action": {"type": decision.chosen, "score": decision.scores.get(decision.chosen)},
        "confidence": decision.confidence,
        "alternatives": [{"type": a, "score": decision.scores.get(a)} for a in decision.actions],
        "explored": decision.explored,
        "propensity": decision.propensity,
        "created_at": decision.created_at,
    }
    if full:
        view["context"] = decision.context
        view["outcome"] = (
            None
            if decision.outcome_at is None
            else {"reward": decision.reward, "success": decision.success, "at": decision.outcome_at}
        )
    return view


def _already(decision_id: uuid.UUID) -> Conflict:
    return Conflict(f"decision {decision_id} already has an outcome", status="evaluated")


def retrain_threshold(outcomes_at_training: int, every: int) -> int:
    """New outcomes that make a retraining due: half the data last trained on, at least 10
    and at most ``every``, so a young model learns quickly and an old one every ``every``."""
    return max(1, min(every, max(10, outcomes_at_training // 2)))


def record_outcome(
    db: Session,
    tenant_id: uuid.UUID,
    decision_id: uuid.UUID,
    reward: float | None,
    success: bool | None,
    every: int,
) -> tuple[Decision, MLModel, bool]:
    """Record a decision's outcome (409 if it has one); whether a retraining is now due."""
    decision = get_decision(db, tenant_id, decision_id)
    model = db.get(MLModel, decision.model_id)
    assert model is not None
    if decision.outcome_at is not None:
        raise _already(decision_id)
    if (reward is None) == (success is None):
        raise _invalid(["reward: give exactly one of reward (a number) or success (true/false)"])
    if success is not None:
        reward = 1.0 if success else 0.0
    assert reward is not None
    if success is None and model.reward == "success" and reward not in (0, 1):
        raise _invalid([f"reward: model {model.name!r} learns success; reward must be 0 or 1"])
    done = db.execute(
        update(Decision)
        .where(Decision.id == decision.id, Decision.outcome_at.is_(None))
        .values(reward=float(reward), success=success, outcome_at=now())
        .returning(Decision.id)
    ).first()
    if done is None:  # another request recorded one in the meantime
        raise _already(decision_id)
    count, at_training = db.execute(
        update(MLModel)
        .where(MLModel.id == model.id)
        .values(outcomes=MLModel.outcomes + 1, updated_at=now())
        .returning(MLModel.outcomes, MLModel.outcomes_at_training)
    ).one()
    due = count - at_training >= retrain_threshold(at_training, every)
    if due:  # claim the trigger, so two outcomes arriving together send one training
        due = (
            db.execute(
                update(MLModel)
                .where(MLModel.id == model.id, MLModel.outcomes_at_training == at_training)
                .values(outcomes_at_training=count)
                .returning(MLModel.id)
            ).first()
            is not None
        )
    db.refresh(decision)
    return decision, model, due


def models_query(tenant_id: uuid.UUID) -> Select:
    """The tenant's models by name."""
    return select(MLModel).where(MLModel.tenant_id == tenant_id).order_by(MLModel.name)


def versions(db: Session, model: MLModel, limit: int = 20) -> list[ModelVersion]:
    """The model's latest versions, newest first."""
    return list(
        db.scalars(
            select(ModelVersion)
            .where(ModelVersion.model_id == model.id)
            .order_by(ModelVersion.version.desc())
            .limit(limit)
        )
    )


def _version_view(v: ModelVersion) -> dict[str, Any]:
    return {
        "version": v.version,
        "status": v.status,
        "trained_at": v.trained_at,
        "samples": v.samples,
        "holdout_samples": v.holdout_samples,
        "metrics": v.metrics,
        "reason": v.reason,
        "features": [
            {k: f[k] for k in ("name", "kind") if k in f} for f in v.feature_schema["features"]
        ],
    }


def model_view(db: Session, model: MLModel, detail: bool = False) -> dict[str, Any]:
    """A model as the API shows it: its active version's figures, and on its page every
    recent version with the champion/challenger verdict."""
    recent = versions(db, model) if detail else []
    active = next((v for v in recent if v.version == model.active_version), None)
    if active is None and model.active_version is not None:
        active = db.scalars(
            select(ModelVersion).where(
                ModelVersion.model_id == model.id, ModelVersion.version == model.active_version
            )
        ).one_or_none()
    view: dict[str, Any] = {
        "name": model.name,
        "actions": model.actions,
        "reward": model.reward,
        "version": model.active_version,
        "status": "active" if active else "untrained",
        "trained_at": active.trained_at if active else None,
        "samples": active.samples if active else 0,
        "metrics": active.metrics if active else {},
        "outcomes": model.outcomes,
        "last_training": model.last_training,
        "created_at": model.created_at,
    }
    if detail:
        view["versions"] = [_version_view(v) for v in recent]
    return view


def model_names(db: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Model names by id."""
    return dict(db.execute(select(MLModel.id, MLModel.name).where(MLModel.id.in_(ids))).all())
