"""Start executions: record them in PostgreSQL first, then send their canvas.

If the process dies between the commit and the send, the execution stays ``queued`` in the
database and the reconciler re-drives it; nothing is lost.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from atom.runs import admission, dispatch, engine
from atom.store import workflows
from atom.store.db import transaction
from atom.store.models import Execution
from atom.workflow.definition import parse_definition


def start_execution(
    factory: sessionmaker[Session],
    app: Celery,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    input_: Any,
    trigger: dict[str, Any] | None = None,
) -> Execution:
    """Create an execution of the workflow's current version and send it to the workers (or,
    over the tenant's MAX_PARALLEL_EXECUTIONS, leave it queued: ``atom.runs.admission``)."""
    with transaction(factory) as session:
        workflow = workflows.get_workflow(session, tenant_id, workflow_id)
        version = workflows.get_version(session, workflow)
        waits = admission.must_wait(session, tenant_id, admission.limit_of(app))
        execution = engine.create_execution(
            session, workflow, version, input_, trigger or {"kind": "api"}
        )
        if waits:
            execution.epoch = admission.WAITING_EPOCH
        plan, definition_doc = version.plan, version.definition
    if not waits:
        definition = parse_definition(definition_doc)
        dispatch.send(app, plan, definition, str(execution.id), execution.epoch)
    return execution
