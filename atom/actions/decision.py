"""``decision``: ask the decision engine (on the ML pool) which action to take.

Its output ``{decision_id, action, confidence, propensity, explored, model, model_version}``
feeds conditions (``steps.route.output.action == "escalate"``); a later step, or anyone
holding the id, reports the outcome at ``POST /api/decisions/{id}/outcome``. No ML worker
answering within ``ATOM_ML_TIMEOUT`` is a retryable step error, so the step's retry policy
applies. The handler's imports (SQLAlchemy, Celery) stay inside it: validating a definition
loads none of them.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from atom.actions.base import Action, ActionContext, ActionSpec
from atom.errors import PermanentError, RetryableError

_process: dict[str, Any] = {}


def _resources(ctx: ActionContext) -> tuple[Any, Any]:
    """This process's session factory and ML client (made after the prefork fork)."""
    if _process.get("pid") != os.getpid():
        from atom.ml.client import MLClient
        from atom.runs import events
        from atom.store.db import make_engine, make_sessionmaker

        settings = ctx.settings
        assert settings.database_url
        _process.update(
            pid=os.getpid(),
            factory=make_sessionmaker(
                make_engine(settings.database_url, pool_size=1),
                **{events.PUBLISHER: events.Publisher(settings.events_redis)},
            ),
            client=MLClient(settings),
        )
    return _process["factory"], _process["client"]


def run(config: dict[str, Any], ctx: ActionContext) -> Any:
    """Decide among ``config.actions`` (or the model's) for the rendered ``config.context``."""
    from sqlalchemy import select

    from atom.celery_app import ML_DECIDE
    from atom.errors import AtomError
    from atom.ml import store
    from atom.ml.client import MLUnavailable
    from atom.runs import events
    from atom.store.models import Execution

    factory, client = _resources(ctx)
    execution_id = uuid.UUID(ctx.execution_id)
    context = config.get("context", {})
    with factory() as db:
        tenant = db.scalar(select(Execution.tenant_id).where(Execution.id == execution_id))
        if tenant is None:
            raise PermanentError(f"decision: execution {execution_id} is gone")
        try:
            model, offered, row = store.resolve(
                db, tenant, config.get("model"), context, config.get("actions")
            )
            answer = client.call(
                ML_DECIDE,
                model_id=str(model.id),
                version=model.active_version,
                actions=offered,
                row=row,
            )
        except MLUnavailable as e:
            raise RetryableError(f"decision: {e}") from e
        except AtomError as e:
            raise PermanentError(f"decision: {e}") from e
        decision = store.record_decision(
            db, model, uuid.uuid4(), context, row, offered, answer, execution_id
        )
        output = {
            "decision_id": str(decision.id),
            "action": decision.chosen,
            "confidence": decision.confidence,
            "propensity": decision.propensity,
            "explored": decision.explored,
            "model": model.name,
            "model_version": decision.model_version,
        }
        events.emit(
            db,
            {
                "type": "decision:made",
                "execution_id": str(execution_id),
                "node_id": ctx.node_id,
                **output,
                "at": time.time(),
            },
        )
        db.commit()
    return output


ACTION = Action(
    name="decision",
    spec=ActionSpec(required={"context": dict}, optional={"model": str, "actions": list}),
    run=run,
    examples=(
        {"context": {"tier": "{{ input.tier }}"}, "actions": ["escalate", "close"]},
        {"model": "tickets", "context": {"n": 1}},
    ),
    bad=(
        ({"actions": ["a", "b"]}, "is required"),
        ({"context": "x" * 3, "actions": ["a", "b"]}, "must be an object"),
        ({"context": {}, "prompt": "hi"}, "is not a setting"),
    ),
)
