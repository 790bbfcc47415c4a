"""Rules and alerts as the API shows them (channel URLs redacted: they often hold tokens).

Values stay Python values (UUIDs, datetimes): ``api/schemas.py`` dumps them."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from atom.alerts.rules import rule_doc
from atom.security import permissions
from atom.security.netguard import redact_url
from atom.statuses import AlertStatus
from atom.store.models import Alert, AlertRule


def rule_view(rule: AlertRule) -> dict[str, Any]:
    """A rule as the API shows it."""
    channels = [
        {**c, "url": redact_url(c["url"])} if "url" in c else dict(c) for c in rule.channels or []
    ]
    return {
        "id": rule.id,
        **rule_doc(rule),
        "channels": channels,
        "builtin": rule.builtin,
        "created_at": rule.created_at,
        "updated_at": rule.updated_at,
        "last_evaluated_at": rule.last_evaluated_at,
    }


def alert_view(alert: Alert, rule: AlertRule | None = None) -> dict[str, Any]:
    """An alert as the API shows it (notification targets are stored redacted)."""
    view: dict[str, Any] = {
        "id": alert.id,
        "rule_id": alert.rule_id,
        "status": alert.status,
        "severity": alert.severity,
        "subject": alert.subject,
        "workflow_id": alert.workflow_id,
        "value": alert.value,
        "last_value": alert.last_value,
        "threshold": alert.threshold,
        "message": alert.message,
        "notified": alert.notify,
        "notifications": alert.notifications or [],
        "fired_at": alert.fired_at,
        "resolved_at": alert.resolved_at,
        "anomaly": alert.details,
    }
    if rule is not None:
        view.update(
            rule=rule.name, metric=rule.metric, comparison=rule.comparison, window=rule.window
        )
    return view


def overview(
    session: Session,
    tenant_id: uuid.UUID,
    who: permissions.Principal | None = None,
    recent: int = 50,
) -> dict[str, Any]:
    """The tenant's firing alerts, its most recent resolved ones, and its rules (only those
    about workflows ``who`` may view, when given)."""
    rules = {
        r.id: r
        for r in session.scalars(
            permissions.restrict(
                select(AlertRule).where(AlertRule.tenant_id == tenant_id),
                AlertRule.workflow_id,
                tenant_id,
                who,
            ).order_by(AlertRule.created_at, AlertRule.id)
        )
    }
    active = session.scalars(
        permissions.restrict(
            select(Alert).where(Alert.tenant_id == tenant_id, Alert.status == AlertStatus.FIRING),
            Alert.workflow_id,
            tenant_id,
            who,
        ).order_by(Alert.fired_at.desc())
    )
    resolved = session.scalars(
        permissions.restrict(
            select(Alert).where(Alert.tenant_id == tenant_id, Alert.status == AlertStatus.RESOLVED),
            Alert.workflow_id,
            tenant_id,
            who,
        )
        .order_by(Alert.resolved_at.desc())
        .limit(recent)
    )
    return {
        "active": [alert_view(a, rules.get(a.rule_id)) for a in active],
        "recent": [alert_view(a, rules.get(a.rule_id)) for a in resolved],
        "rules": [rule_view(r) for r in rules.values()],
    }
