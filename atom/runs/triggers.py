"""Webhook and event triggers. Webhook tokens are random; only their hash is stored."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from atom.clock import now
from atom.errors import NotFound
from atom.security import permissions
from atom.store import workflows
from atom.store.models import Webhook, Workflow

TOKEN_PREFIX = "whk_"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def set_webhook(
    session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID
) -> tuple[uuid.UUID, str]:
    """Create the workflow's webhook token, or rotate it (the old one stops working now):
    ``(webhook id, token)``; the id stays across rotations (the audit log names it)."""
    workflows.get_workflow(session, tenant_id, workflow_id)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    hook = session.scalar(
        select(Webhook)
        .where(Webhook.workflow_id == workflow_id, Webhook.tenant_id == tenant_id)
        .with_for_update()
    )
    if hook is None:
        hook = Webhook(
            id=uuid.uuid4(), tenant_id=tenant_id, workflow_id=workflow_id, token_hash=_hash(token)
        )
        session.add(hook)
    else:
        hook.token_hash = _hash(token)
        hook.created_at = now()
    session.flush()
    return hook.id, token


def delete_webhook(session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> None:
    """Remove the workflow's webhook; NotFound when it has none."""
    workflows.get_workflow(session, tenant_id, workflow_id)
    hook = session.scalar(
        select(Webhook).where(Webhook.workflow_id == workflow_id, Webhook.tenant_id == tenant_id)
    )
    if hook is None:
        raise NotFound(f"workflow {workflow_id} has no webhook")
    session.delete(hook)
    session.flush()


def webhook_for_token(session: Session, token: str) -> Webhook | None:
    """The webhook of a live workflow this token opens, or None."""
    return session.scalar(
        select(Webhook)
        .join(Workflow, Webhook.workflow_id == Workflow.id)
        .where(Webhook.token_hash == _hash(token), Workflow.deleted_at.is_(None))
    )


def workflow_for_token(session: Session, token: str) -> Workflow:
    """The live workflow a webhook token starts, or NotFound."""
    workflow = session.scalar(
        select(Workflow)
        .join(Webhook, Webhook.workflow_id == Workflow.id)
        .where(Webhook.token_hash == _hash(token), Workflow.deleted_at.is_(None))
    )
    if workflow is None:
        raise NotFound("no webhook with this token")
    return workflow


def workflows_for_event(
    session: Session, tenant_id: uuid.UUID, event_type: str, who: permissions.Principal
) -> list[Workflow]:
    """The tenant's live workflows whose trigger is ``kind: event`` with this event type and
    that ``who`` may run (``metadata.permissions``; the others are left alone, silently)."""
    return list(
        session.scalars(
            select(Workflow)
            .where(
                Workflow.tenant_id == tenant_id,
                Workflow.deleted_at.is_(None),
                Workflow.trigger_kind == "event",
                Workflow.event_type == event_type,
                permissions.runnable(tenant_id, who),
            )
            .order_by(Workflow.created_at)
        )
    )


def event_trigger(event_type: str, event_id: str) -> dict[str, Any]:
    """The ``trigger`` record of an execution an event started."""
    return {"kind": "event", "event_type": event_type, "event_id": event_id}
