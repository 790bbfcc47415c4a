"""``decision``: ask the decision engine (on the ML pool) which action to take.

Its output ``{decision_id, action, confidence, propensity, explored, model_version}`` feeds
conditions (``steps.route.output.action == "escalate"``); a later step, or anyone holding
the id, reports the outcome at ``POST /api/decisions/{id}/outcome``. No ML worker answering
within ``ATOM_ML_TIMEOUT`` is a retryable step error, so the step's retry policy applies.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from atom.celery_app import ML_DECIDE
from atom.config import Settings
from atom.errors import AtomError, InvalidInput, PermanentError, RetryableError
from atom.ml import store
from atom.ml.client import MLClient, MLUnavailable
from atom.runs import events
from atom.store.db import make_engine, make_sessionmaker
from atom.store.models import Execution
from workers.actions import ActionContext

_process: dict[str, Any] = {}


def _resources(settings: Settings) -> tuple[sessionmaker[Session], MLClient]:
    """This process's sessions and ML client (made after the prefork fork)."""
    if _process.get("pid") != os.getpid():
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
    factory, client = _resources(ctx.settings)
    execution_id = uuid.UUID(ctx.execution_id)
    with factory() as db:
        tenant = db.scalar(select(Execution.tenant_id).where(Execution.id == execution_id))
        if tenant is None:
            raise PermanentError(f"decision: execution {execution_id} is gone")
        try:
            model, offered, row = store.resolve(
                db, tenant, config.get("model"), config.get("context", {}), config.get("actions")
            )
            db.commit()
            answer = client.call(
                ML_DECIDE,
                model_id=str(model.id),
                version=model.active_version,
                actions=offered,
                row=row,
            )
        except MLUnavailable as e:
            raise RetryableError(f"decision: {e}") from e
        except InvalidInput as e:
            raise PermanentError(f"decision: {e}") from e
        except AtomError as e:
            raise PermanentError(f"decision: {e}") from e
        decision = store.record_decision(
            db, model, uuid.uuid4(), config.get("context", {}), row, offered, answer, execution_id
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
