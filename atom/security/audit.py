"""The audit log: every change and command a key makes, with who, what, when, from where.

The API records one entry per authenticated request that changes something (POST, PUT,
PATCH, DELETE: workflows, schedules, webhooks, alert rules, keys, credentials, settings,
and every execute, cancel, retry, pause and resume), refused ones included (their status
says so). Entries are tenant-scoped and read by admins at ``GET /api/audit``.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, false, select
from sqlalchemy.orm import Session

from atom.store.models import AuditEntry

_SINGULAR = {
    "workflows": "workflow",
    "executions": "execution",
    "schedules": "schedule",
    "hooks": "webhook",
    "events": "event",
    "credentials": "credential",
    "keys": "key",
    "settings": "settings",
    "alerts": "alert_rule",
    "decisions": "decision",
    "models": "model",
    "anomaly": "anomaly",
}
_VERB = {"POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}


def describe(
    method: str, rule: str, view_args: dict[str, Any], created_id: str | None
) -> tuple[str, str, str | None]:
    """``(action, target_type, target_id)`` of a request, from its URL rule.

    ``POST /api/workflows/<id>/execute`` is ``workflow.execute`` on that workflow;
    ``POST /api/workflows`` is ``workflow.create`` on the workflow it created.
    """
    parts = [p for p in rule.split("/") if p and p != "api"]
    statics = [p for p in parts if not p.startswith("<")]
    target_type = "unknown"
    for part in statics:
        if part in _SINGULAR:
            target_type = _SINGULAR[part]
    if "monitoring" in statics and "alerts" in statics:
        target_type = "alert_rule"
    if parts and parts[-1] == "webhook":
        target_type = "webhook"
    verb = _VERB.get(method, method.lower())
    last = parts[-1] if parts else ""
    if not last.startswith("<") and last not in _SINGULAR and last not in ("webhook",):
        verb = re.sub(r"[^a-z_]", "_", last.lower())
    args = [str(v) for v in view_args.values() if "token" not in str(v)]
    target_id = args[0] if args else created_id
    if "name" in view_args:
        target_id = str(view_args["name"])
    return f"{target_type}.{verb}", target_type, target_id


def record(
    session: Session,
    *,
    tenant_id: uuid.UUID,
    key_id: uuid.UUID | None,
    action: str,
    target_type: str,
    target_id: str | None,
    client: str | None,
    status: int,
) -> None:
    """Add one entry (the caller commits)."""
    session.add(
        AuditEntry(
            tenant_id=tenant_id,
            key_id=key_id,
            action=action[:64],
            target_type=target_type[:32],
            target_id=(target_id or None) and target_id[:200],
            client=(client or None) and client[:64],
            status=status,
        )
    )


def query(tenant_id: uuid.UUID, filters: dict[str, Any]) -> Select:
    """The tenant's entries matching ``filters`` (action, target_type, target_id, since,
    key_id), newest first."""
    q = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id)
    if filters.get("action"):
        q = q.where(AuditEntry.action == filters["action"])
    if filters.get("target_type"):
        q = q.where(AuditEntry.target_type == filters["target_type"])
    if filters.get("target_id"):
        q = q.where(AuditEntry.target_id == str(filters["target_id"]))
    if filters.get("key_id"):
        q = q.where(AuditEntry.key_id == filters["key_id"])
    if isinstance(filters.get("since"), datetime):
        # In UTC: PostgreSQL refuses offsets past +-15:59 that Python (and ISO 8601) accept.
        try:
            q = q.where(AuditEntry.at >= filters["since"].astimezone(UTC))
        except OverflowError:  # after year 9999 in UTC: nothing is that recent
            q = q.where(false())
    return q.order_by(AuditEntry.at.desc(), AuditEntry.id.desc())


def view(entry: AuditEntry) -> dict[str, Any]:
    """An entry as the API shows it."""
    return {
        "id": entry.id,
        "at": entry.at.isoformat() if entry.at else None,
        "key_id": str(entry.key_id) if entry.key_id else None,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "client": entry.client,
        "status": entry.status,
    }
