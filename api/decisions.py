"""/api/decisions and /api/models: the decision engine (model work runs on the ML pool)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import current_app, url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate
from werkzeug.routing import BaseConverter

from api.context import audit_with, page_of, require, session, state, tenant_id
from api.guard import model_work
from atom.celery_app import ML_DECIDE, ML_EXPLAIN, ML_PREDICT_RUN, ML_PREDICT_USER, ML_TRAIN
from atom.ml import behaviour, store
from atom.ml import features as feats
from atom.ml.client import MLClient
from atom.security.auth import Role
from atom.store import workflows

blp = Blueprint(
    "decisions",
    __name__,
    url_prefix="/api",
    description="The decision engine: decide, explain, learn from outcomes; its models.",
)

ML_CLIENT = "atom.ml"


def ml() -> MLClient:
    """The app's client of the ML pool."""
    return current_app.extensions[ML_CLIENT]


MODEL_NAME = store.NAME_PATTERN


class ModelName(BaseConverter):
    """A model name in a path: letters, digits, ``_.-``, at most 100 (else no route: 404)."""

    regex = MODEL_NAME


MODEL_NAME_DOC = {"type": "string", "pattern": f"^{store.NAME_PATTERN}$", "maxLength": 100}


def _model_name(value: str) -> None:
    if not store.NAME.fullmatch(value):
        raise ValidationError("must be 1-100 letters, digits, '_', '.' or '-'")


def _context_level(depth: int) -> dict[str, Any]:
    """The JSON Schema of a context object at ``depth`` (the context itself is depth 1)."""
    values: list[dict[str, Any]] = [
        {"type": "string", "maxLength": feats.MAX_STRING},
        {"type": "number", "minimum": -feats.MAX_NUMBER, "maximum": feats.MAX_NUMBER},
        {"type": "boolean"},
        {"type": "array", "items": {}, "description": "counts as its length"},
    ]
    if depth < feats.MAX_DEPTH:
        values.append(_context_level(depth + 1))
    return {
        "type": "object",
        "maxProperties": feats.MAX_FIELDS if depth == 1 else 20,
        "additionalProperties": {"anyOf": values, "nullable": True},
    }


CONTEXT_DOC = {
    **_context_level(1),
    "description": f"any JSON object, flattened to features: nested objects (at most "
    f"{feats.MAX_DEPTH} levels) become dotted names, numbers and booleans numeric features, "
    f"strings (at most {feats.MAX_STRING} characters) categorical ones, lists their length, "
    f"null missing; at most {feats.MAX_FIELDS} fields and {feats.MAX_CONTEXT_BYTES // 1024} "
    "KiB of JSON in all",
}

ACTIONS_DOC = {
    "type": "array",
    "minItems": 2,
    "maxItems": store.MAX_ACTIONS,
    "uniqueItems": True,
    "items": {
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": 200},
            {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"type": "string", "minLength": 1, "maxLength": 200}},
                "description": "an AuraOS action object; its type names the action",
            },
        ]
    },
    "description": "action names (distinct), or AuraOS {type} objects",
}


class DecisionInSchema(Schema):
    """``{model?, context, actions?}``; AuraOS's ``makeDecision(context)`` sends the context
    alone (model ``default``)."""

    class Meta:
        unknown = EXCLUDE

    model = fields.String(
        load_default=None,
        allow_none=True,
        validate=_model_name,
        metadata={
            "description": "model name (default: default); a new name creates the model",
            "pattern": f"^{store.NAME_PATTERN}$",
            "maxLength": 100,
        },
    )
    context = fields.Raw(required=True, metadata=CONTEXT_DOC)
    actions = fields.Raw(
        load_default=None,
        metadata={
            **ACTIONS_DOC,
            "nullable": True,
            "description": ACTIONS_DOC["description"] + "; needed for a new model, else its "
            "own action set (a subset may be offered)",
        },
    )


class ScoredSchema(Schema):
    """An action with the model's expected reward (or success probability) for it."""

    type = fields.String()
    score = fields.Float(allow_none=True)


class DecisionSchema(Schema):
    """A decision (its context and outcome on ``GET``)."""

    id = fields.UUID()
    model = fields.String()
    model_version = fields.Integer(allow_none=True)
    action = fields.Nested(ScoredSchema)
    confidence = fields.Float(allow_none=True)
    alternatives = fields.List(fields.Nested(ScoredSchema))
    explored = fields.Boolean()
    propensity = fields.Float()
    created_at = fields.DateTime()
    context = fields.Raw()
    outcome = fields.Raw(allow_none=True)


class ExplanationSchema(Schema):
    """LightGBM's contributions for the chosen action."""

    decision_id = fields.UUID()
    model_version = fields.Integer(allow_none=True)
    action = fields.String()
    raw_score = fields.Float(allow_none=True)
    score = fields.Float(allow_none=True)
    base_value = fields.Float(allow_none=True)
    contributions = fields.Raw()
    note = fields.String()


class OutcomeInSchema(Schema):
    """``{reward: number}`` or ``{success: bool}`` (AuraOS ``evaluateDecision``)."""

    reward = fields.Float(load_default=None, allow_nan=False)
    success = fields.Boolean(load_default=None)


class ModelInSchema(Schema):
    """Declare a model before its first decision."""

    actions = fields.Raw(required=True, metadata=ACTIONS_DOC)
    reward = fields.String(
        load_default="reward",
        validate=validate.OneOf(store.REWARDS),
        metadata={"description": "reward: any number per outcome; success: true or false"},
    )


class ModelSchema(Schema):
    """A model: its active version's figures; on its page every recent version."""

    name = fields.String()
    actions = fields.List(fields.String())
    reward = fields.String()
    version = fields.Integer(allow_none=True)
    status = fields.String()
    trained_at = fields.DateTime(allow_none=True)
    samples = fields.Integer()
    metrics = fields.Raw()
    outcomes = fields.Integer()
    last_training = fields.Raw(allow_none=True)
    created_at = fields.DateTime()
    versions = fields.Raw()


class TrainAcceptedSchema(Schema):
    """A training queued on the ML pool."""

    model = fields.String()
    status = fields.String()
    task_id = fields.String()


@blp.route("/decisions")
class Decisions(MethodView):
    """Ask for a decision."""

    @model_work
    @require(Role.OPERATOR)
    @blp.arguments(DecisionInSchema)
    @blp.response(201, DecisionSchema)
    @blp.alt_response(413, description="Body over ATOM_ML_MAX_BODY")
    @blp.alt_response(503, description="No ML worker answered within ATOM_ML_TIMEOUT (Retry-After)")
    def post(self, body: dict[str, Any]):
        """Choose an action for a context; 503 with Retry-After if no ML worker answers."""
        db = session()
        model, offered, row = store.resolve(
            db, tenant_id(), body["model"], body["context"], body["actions"]
        )
        # One transaction: a model this decision creates is committed with the decision.
        answer = ml().call(
            ML_DECIDE,
            model_id=str(model.id),
            version=model.active_version,
            actions=offered,
            row=row,
        )
        decision = store.record_decision(
            db, model, uuid.uuid4(), body["context"], row, offered, answer
        )
        audit_with(db, 201, str(decision.id))  # one commit for the decision and its audit entry
        db.commit()
        location = url_for("decisions.DecisionItem", decision_id=decision.id)
        return store.decision_view(decision, model.name), 201, {"Location": location}


@blp.route("/decisions/<uuid:decision_id>")
class DecisionItem(MethodView):
    """One decision."""

    @require(Role.VIEWER)
    @blp.response(200, DecisionSchema)
    def get(self, decision_id: uuid.UUID):
        """The decision, its context and its outcome."""
        db = session()
        decision = store.get_decision(db, tenant_id(), decision_id)
        names = store.model_names(db, {decision.model_id})
        return store.decision_view(decision, names[decision.model_id], full=True)


@blp.route("/decisions/<uuid:decision_id>/explanation")
class DecisionExplanation(MethodView):
    """Why a decision came out as it did."""

    @require(Role.VIEWER)
    @blp.response(200, ExplanationSchema)
    @blp.alt_response(503, description="No ML worker answered within ATOM_ML_TIMEOUT (Retry-After)")
    def get(self, decision_id: uuid.UUID):
        """Contributions of each context field to the chosen action's raw score, from the
        version that decided (``base_value + sum(contributions) == raw_score``)."""
        db = session()
        decision = store.get_decision(db, tenant_id(), decision_id)
        answer = ml().call(
            ML_EXPLAIN,
            model_id=str(decision.model_id),
            version=decision.model_version,
            row=decision.features,
            action=decision.chosen,
        )
        return {**answer, "decision_id": decision.id, "model_version": decision.model_version}


@blp.route("/decisions/<uuid:decision_id>/outcome")
class DecisionOutcome(MethodView):
    """What a decision led to."""

    @require(Role.OPERATOR)
    @blp.arguments(OutcomeInSchema)
    @blp.response(200, DecisionSchema)
    @blp.alt_response(409, description="The decision already has an outcome")
    def post(self, body: dict[str, Any], decision_id: uuid.UUID):
        """Record the outcome (409 if it has one); enough new outcomes queue a retraining."""
        db = session()
        settings = state().settings
        decision, model, due = store.record_outcome(
            db, tenant_id(), decision_id, body["reward"], body["success"], settings.ml_retrain_every
        )
        db.commit()
        if due:
            ml().send(ML_TRAIN, model_id=str(model.id))
        return store.decision_view(decision, model.name, full=True)


@blp.route("/models")
class Models(MethodView):
    """The tenant's decision models."""

    @require(Role.VIEWER)
    @blp.response(200, ModelSchema(many=True))
    @blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, pagination_parameters: Any):
        """Every model with its active version, trained_at, samples and holdout metrics."""
        db = session()
        page = page_of(db, store.models_query(tenant_id()), pagination_parameters)
        return [store.model_view(db, m) for m in page]


@blp.route("/models/<model_name:name>")
class ModelItem(MethodView):
    """One model."""

    @require(Role.VIEWER)
    @blp.response(200, ModelSchema)
    def get(self, name: str):
        """The model, and its recent versions with the champion/challenger verdict."""
        db = session()
        return store.model_view(db, store.get_model(db, tenant_id(), name), detail=True)

    @model_work
    @require(Role.EDITOR)
    @blp.arguments(ModelInSchema)
    @blp.response(200, ModelSchema)
    @blp.alt_response(413, description="Body over ATOM_ML_MAX_BODY")
    @blp.alt_response(409, description="The model exists with another action set or reward")
    def put(self, body: dict[str, Any], name: str):
        """Declare a model's actions and reward kind before its first decision."""
        db = session()
        model = store.declare_model(db, tenant_id(), name, body["actions"], body["reward"])
        db.commit()
        return store.model_view(db, model, detail=True)


@blp.route("/models/<model_name:name>/train")
class ModelTraining(MethodView):
    """Retrain now."""

    @model_work
    @require(Role.OPERATOR)
    @blp.response(202, TrainAcceptedSchema)
    @blp.alt_response(413, description="Body over ATOM_ML_MAX_BODY")
    def post(self, name: str):
        """Queue a training on the ML pool (never in the API); the model page shows the verdict."""
        db = session()
        model = store.get_model(db, tenant_id(), name)
        task_id = ml().send(ML_TRAIN, model_id=str(model.id))
        return {"model": model.name, "status": "queued", "task_id": task_id}


class RunPredictionSchema(Schema):
    """A workflow's next run, predicted from its own history."""

    workflow_id = fields.UUID()
    runs = fields.Integer()
    failures = fields.Integer()
    enough_history = fields.Boolean()
    duration_ms = fields.Raw()
    failure_probability = fields.Float(allow_none=True)
    failure_model = fields.String()
    features = fields.List(fields.String())
    message = fields.String()


@blp.route("/workflows/<uuid:workflow_id>/prediction")
class RunPrediction(MethodView):
    """The next run of a workflow."""

    @require(Role.VIEWER)
    @blp.response(200, RunPredictionSchema)
    @blp.alt_response(503, description="No ML worker answered within ATOM_ML_TIMEOUT (Retry-After)")
    def get(self, workflow_id: uuid.UUID):
        """Duration p50/p95 (LightGBM quantile objective) and failure probability, from the
        workflow's finished runs; says so when there are too few."""
        db = session()
        workflows.get_workflow(db, tenant_id(), workflow_id)
        db.rollback()
        answer = ml().call(ML_PREDICT_RUN, tenant_id=str(tenant_id()), workflow_id=str(workflow_id))
        return {**answer, "workflow_id": workflow_id}


class TimeframeArgs(Schema):
    """``?timeframe=24h`` (m, h or d; at most 30d)."""

    timeframe = fields.String(
        load_default="24h",
        metadata={"pattern": behaviour.TIMEFRAME_PATTERN, "description": "1m to 30d"},
    )


class UserPredictionSchema(Schema):
    """Per event type: the probability and expected count in the timeframe."""

    user_id = fields.String()
    timeframe = fields.String()
    events_seen = fields.Integer()
    predictions = fields.Raw()
    features = fields.List(fields.String())


@blp.route("/predictions/users/<string:user_id>")
class UserPrediction(MethodView):
    """What a user is likely to do next."""

    @require(Role.VIEWER)
    @blp.arguments(TimeframeArgs, location="query")
    @blp.response(200, UserPredictionSchema)
    @blp.alt_response(503, description="No ML worker answered within ATOM_ML_TIMEOUT (Retry-After)")
    def get(self, args: dict[str, Any], user_id: str):
        """From the events ATOM received with this user id (``POST /api/events``)."""
        horizon = behaviour.parse_timeframe(args["timeframe"])
        answer = ml().call(
            ML_PREDICT_USER,
            tenant_id=str(tenant_id()),
            user_id=user_id,
            horizon=horizon.total_seconds(),
        )
        return {**answer, "timeframe": args["timeframe"]}
