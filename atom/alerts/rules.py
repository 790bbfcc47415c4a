"""Alert rules and alerts: validation, the built-in rules, evaluation and the lifecycle.

A rule compares a metric with a threshold over a window. Per rule and *subject* (a workflow,
or "" for the rule's whole scope) an alert goes ``firing -> resolved``:
- the metric breaches and nothing fires: a new alert fires, and is announced on the rule's
  channels unless an earlier announced alert of the same rule and subject fired less than
  ``cooldown`` seconds ago (then it fires silently, and resolves silently);
- it still breaches: nothing new (de-duplicated: one firing alert per rule and subject);
- it no longer breaches, or there is no data: the alert resolves (announced if its firing was).

Metrics (tenant-scoped unless noted): ``error_rate`` (failed / finished, 0..1),
``duration_p95_ms``, ``performance_degradation`` (p95 over the workflow's own baseline p95;
a rule without a workflow watches each of the tenant's workflows), ``queue_depth`` (messages
waiting in all broker queues) and ``workers`` (workers answering a ping) — the last two are
the platform's. ``anomaly`` compares the anomaly score of the points of the series a rule
selects (``series``) with its threshold; what opens and closes such an alert is in
``atom.anomaly.alerting``. Evaluation runs on the maintenance queue, fired by beat.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from atom.alerts.validation import validate_rule
from atom.clock import now
from atom.errors import Conflict, InvalidInput, NotFound
from atom.security import settings as tenant_settings
from atom.statuses import AlertStatus
from atom.store.models import Alert, AlertRule, Workflow

logger = logging.getLogger(__name__)


BUILTIN_RULES: dict[str, dict[str, Any]] = {
    "performance_degradation": {
        "name": "Performance degradation (p95 over 2x the workflow's baseline)",
        "metric": "performance_degradation",
        "comparison": ">",
        "threshold": 2.0,
        "window": "1h",
        "severity": "high",
        "cooldown": 300,
    },
    "error_rate": {
        "name": "Error rate over 10 %",
        "metric": "error_rate",
        "comparison": ">",
        "threshold": 0.1,
        "window": "15m",
        "severity": "critical",
        "cooldown": 600,
    },
    "anomaly": {
        "name": "Anomaly in a run metric or custom metric",
        "metric": "anomaly",
        "comparison": ">=",
        "threshold": 0.9,
        "window": "1h",
        "severity": "medium",
        "cooldown": 1800,
        "series": {},
    },
}
"""The defaults of the original guide, and the anomaly rule (every series of the tenant's
own), made for every tenant; tune them with PATCH."""


def _workflow_exists(session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> bool:
    return (
        session.scalar(
            select(Workflow.id).where(
                Workflow.id == workflow_id,
                Workflow.tenant_id == tenant_id,
                Workflow.deleted_at.is_(None),
            )
        )
        is not None
    )


def _check_workflow(session: Session, tenant_id: uuid.UUID, fields: dict[str, Any]) -> None:
    if fields["workflow_id"] and not _workflow_exists(session, tenant_id, fields["workflow_id"]):
        raise InvalidInput({"workflow_id": [f"no workflow {fields['workflow_id']}"]})
    domains = tenant_settings.allowed_domains(session, tenant_id)
    problems = {}
    for i, channel in enumerate(fields.get("channels") or []):
        if channel.get("type") == "email":
            to = channel["to"] if isinstance(channel["to"], list) else [channel["to"]]
            if problem := tenant_settings.allowlist_problem(to, domains):
                problems[f"channels[{i}]"] = [problem]
    if problems:
        raise InvalidInput(problems)


def create_rule(session: Session, tenant_id: uuid.UUID, doc: Any) -> AlertRule:
    """A new rule of the tenant's; InvalidInput lists every problem."""
    fields = validate_rule(doc)
    _check_workflow(session, tenant_id, fields)
    rule = AlertRule(id=uuid.uuid4(), tenant_id=tenant_id, **fields)
    session.add(rule)
    session.flush()
    return rule


def get_rule(session: Session, tenant_id: uuid.UUID, rule_id: uuid.UUID) -> AlertRule:
    """The tenant's rule, or NotFound."""
    rule = session.scalar(
        select(AlertRule).where(AlertRule.id == rule_id, AlertRule.tenant_id == tenant_id)
    )
    if rule is None:
        raise NotFound(f"alert rule {rule_id} not found")
    return rule


def rule_doc(rule: AlertRule) -> dict[str, Any]:
    """The fields of a rule a user sets, as a document (``validate_rule`` takes it back)."""
    return {
        "name": rule.name,
        "metric": rule.metric,
        "comparison": rule.comparison,
        "threshold": rule.threshold,
        "window": rule.window,
        "severity": rule.severity,
        "cooldown": rule.cooldown,
        "channels": rule.channels,
        "workflow_id": rule.workflow_id,
        "enabled": rule.enabled,
        "series": rule.series,
    }


def update_rule(
    session: Session, tenant_id: uuid.UUID, rule_id: uuid.UUID, changes: Any
) -> AlertRule:
    """Change some of a rule's fields (a built-in keeps its metric and scope).

    Disabling a rule resolves its firing alerts, silently."""
    rule = get_rule(session, tenant_id, rule_id)
    if not isinstance(changes, dict):
        raise InvalidInput({"_schema": ["Invalid input type."]})
    if rule.builtin:
        fixed = [
            k
            for k in ("metric", "workflow_id", "series")
            if k in changes and str(changes[k]) != str(rule_doc(rule)[k])
        ]
        if fixed:
            raise InvalidInput({k: ["a built-in rule keeps its metric and scope"] for k in fixed})
    merged = {**rule_doc(rule), **changes}
    if merged.get("metric") != "anomaly" and "series" not in changes:
        merged["series"] = None  # a rule turned away from anomaly leaves its selector
    fields = validate_rule(merged)
    _check_workflow(session, tenant_id, fields)
    for key, value in fields.items():
        setattr(rule, key, value)
    rule.updated_at = now()
    if not rule.enabled:
        for alert in session.scalars(
            select(Alert).where(Alert.rule_id == rule.id, Alert.status == AlertStatus.FIRING)
        ):
            alert.status, alert.resolved_at = AlertStatus.RESOLVED, now()
            alert.message += " (resolved: the rule was disabled)"
    session.flush()
    return rule


def delete_rule(session: Session, tenant_id: uuid.UUID, rule_id: uuid.UUID) -> None:
    """Delete a rule and its alerts; a built-in one can only be disabled."""
    rule = get_rule(session, tenant_id, rule_id)
    if rule.builtin:
        raise Conflict("A built-in rule cannot be deleted; PATCH it with enabled: false.")
    session.execute(delete(AlertRule).where(AlertRule.id == rule.id))


_ENSURE_DEFAULTS = text("""
    INSERT INTO alert_rules (id, tenant_id, name, metric, comparison, threshold, "window",
                             severity, cooldown, channels, enabled, builtin, series)
    SELECT gen_random_uuid(), t.id, :name, :metric, :comparison, :threshold, :window,
           :severity, :cooldown, '[]'::jsonb, true, :builtin, CAST(:series AS jsonb)
    FROM tenants t
    WHERE (CAST(:tenant AS uuid) IS NULL OR t.id = CAST(:tenant AS uuid))
      AND NOT EXISTS (SELECT 1 FROM alert_rules r WHERE r.tenant_id = t.id
                      AND r.builtin = :builtin)
    ON CONFLICT ON CONSTRAINT uq_alert_rules_builtin DO NOTHING
""")


def ensure_default_rules(session: Session, tenant_id: uuid.UUID | None = None) -> int:
    """Give the tenant (or every tenant) the built-in rules it lacks; how many were made."""
    made = 0
    for key, spec in BUILTIN_RULES.items():
        made += session.execute(
            _ENSURE_DEFAULTS,
            {
                **spec,
                "series": json.dumps(spec["series"]) if "series" in spec else None,
                "builtin": key,
                "tenant": str(tenant_id) if tenant_id else None,
            },
        ).rowcount  # type: ignore[attr-defined]
    return made
