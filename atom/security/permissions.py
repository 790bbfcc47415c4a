"""Per-workflow permissions: ``metadata.permissions`` in a definition says which roles may
``view``, ``run`` and ``edit`` that workflow, on top of the role each endpoint needs.

A key whose role is not listed gets 403, or 404 where it may not even view the workflow (so
its existence does not leak). A kind that is not listed is open to every role the endpoint
admits; ``admin`` is always allowed, so a workflow can never be locked away from its tenant.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from atom.errors import Forbidden, NotFound
from atom.store.models import Execution, Workflow, WorkflowVersion


def allowed(definition: dict[str, Any] | None, kind: str, role: str) -> bool:
    """True if ``role`` may ``kind`` (view, run, edit) the workflow of this definition."""
    if role == "admin":
        return True
    permissions = ((definition or {}).get("metadata") or {}).get("permissions") or {}
    roles = permissions.get(kind)
    return roles is None or role in roles


def _definition(session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> Any:
    return session.scalar(
        select(WorkflowVersion.definition)
        .join(Workflow, Workflow.id == WorkflowVersion.workflow_id)
        .where(
            Workflow.id == workflow_id,
            Workflow.tenant_id == tenant_id,
            WorkflowVersion.version == Workflow.version,
        )
    )


def workflow_of_execution(
    session: Session, tenant_id: uuid.UUID, execution_id: uuid.UUID
) -> uuid.UUID | None:
    """The workflow an execution of the tenant's belongs to."""
    return session.scalar(
        select(Execution.workflow_id).where(
            Execution.id == execution_id, Execution.tenant_id == tenant_id
        )
    )


def check(
    session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID, kind: str, role: str
) -> None:
    """NotFound if ``role`` may not view the workflow, Forbidden if it may not ``kind`` it."""
    if role == "admin":
        return
    definition = _definition(session, tenant_id, workflow_id)
    if definition is None:
        return  # no such workflow: the view answers 404 itself
    if not allowed(definition, "view", role):
        raise NotFound(f"workflow {workflow_id} not found")
    if kind != "view" and not allowed(definition, kind, role):
        raise Forbidden(f"This workflow's permissions do not let the {role} role {kind} it.")
