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
the platform's. Evaluation runs on the maintenance queue, fired by beat.
"""

from __future__ import annotations

import logging
import math
import operator
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from atom.alerts import channels as notify
from atom.clock import now
from atom.config import Settings
from atom.errors import Conflict, InvalidInput, NotFound, PermanentError
from atom.observe import monitoring
from atom.security import settings as tenant_settings
from atom.security.netguard import REDACTED, parse, redact_url
from atom.store.db import transaction
from atom.store.models import Alert, AlertRule, Workflow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricSpec:
    """What a metric means for a rule."""

    per_workflow: bool
    """Whether it is about runs (and may name a workflow) rather than the platform."""
    comparison: str = ">"
    threshold: float | None = None
    fraction: bool = False


METRICS = {
    "error_rate": MetricSpec(per_workflow=True, fraction=True),
    "duration_p95_ms": MetricSpec(per_workflow=True),
    "performance_degradation": MetricSpec(per_workflow=True, threshold=2.0),
    "queue_depth": MetricSpec(per_workflow=False),
    "workers": MetricSpec(per_workflow=False, comparison="<", threshold=1.0),
}
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
SEVERITIES = ("low", "medium", "high", "critical")
CHANNEL_TYPES = ("webhook", "slack", "email")
MAX_CHANNELS = 10
MAX_COOLDOWN = 7 * 86400
FIELDS = (
    "name",
    "metric",
    "comparison",
    "threshold",
    "window",
    "severity",
    "cooldown",
    "channels",
    "workflow_id",
    "enabled",
)
_EMAIL = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$")
ALERTS_LOCK = 742003  # 742001 migrations, 742002 reconciler, 742004 schedule sweep

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
}
"""The defaults of the original guide, made for every tenant; tune them with PATCH."""


# ---------------------------------------------------------------------------------------------
# Validation: every problem at once, by field


def _check_channels(value: Any, problems: dict[str, list[str]]) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > MAX_CHANNELS:
        problems.setdefault("channels", []).append(
            f"a list of at most {MAX_CHANNELS} channels, each {{type, url}} or {{type, to}}"
        )
        return []
    clean = []
    for i, channel in enumerate(value):
        where = f"channels[{i}]"
        if not isinstance(channel, dict) or channel.get("type") not in CHANNEL_TYPES:
            problems.setdefault(where, []).append(f"type must be one of {', '.join(CHANNEL_TYPES)}")
            continue
        kind = channel["type"]
        extra = set(channel) - {"type", "url" if kind != "email" else "to"}
        if extra:
            problems.setdefault(where, []).append(f"unknown keys: {', '.join(sorted(extra))}")
        if kind == "email":
            to = channel.get("to")
            addresses = to if isinstance(to, list) else [to]
            if (
                not addresses
                or len(addresses) > 20
                or not all(isinstance(a, str) and _EMAIL.match(a) for a in addresses)
            ):
                problems.setdefault(where, []).append(
                    "to must be an email address, or a list of up to 20"
                )
                continue
            clean.append({"type": kind, "to": to})
            continue
        url = channel.get("url")
        if (
            not isinstance(url, str)
            or len(url) > 2000
            or not re.match(r"^https?://[^/\s]+", url)
            or not _parses(url)
        ):
            problems.setdefault(where, []).append("url must be an http(s) URL")
        elif ambiguous := _ambiguous(url):
            problems.setdefault(where, []).append(ambiguous)
        elif REDACTED in url:
            problems.setdefault(where, []).append(
                "url is a redacted one from an answer; send the full URL"
            )
        else:
            clean.append({"type": kind, "url": url})
    return clean


def _parses(url: str) -> bool:
    """True when urllib can take the URL apart, port included (``h:99999`` cannot)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return bool(parts.hostname)


def _ambiguous(url: str) -> str | None:
    """Why the outbound guard refuses ``url`` before any lookup (userinfo, backslashes ...)."""
    try:
        parse(url, "url")
    except PermanentError as e:
        return str(e)
    return None


def _check_number(
    doc: dict[str, Any], spec: MetricSpec | None, problems: dict[str, list[str]]
) -> float | None:
    value = doc.get("threshold", spec.threshold if spec else None)
    if value is None:
        problems.setdefault("threshold", []).append("required for this metric")
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or abs(value) > 1e15
        or not math.isfinite(value)
    ):
        problems.setdefault("threshold", []).append("a finite number")
        return None
    if spec and spec.fraction and not 0 <= value <= 1:
        problems.setdefault("threshold", []).append("a fraction between 0 and 1 (0.1 is 10 %)")
    elif value < 0:
        problems.setdefault("threshold", []).append("zero or more")
    return float(value)


def _check_timing(doc: dict[str, Any], problems: dict[str, list[str]]) -> None:
    try:
        monitoring.parse_window(doc.get("window", "5m"))
    except ValueError as e:
        problems.setdefault("window", []).append(str(e))
    if doc.get("severity", "medium") not in SEVERITIES:
        problems.setdefault("severity", []).append(f"one of {', '.join(SEVERITIES)}")
    cooldown = doc.get("cooldown", 300)
    if (
        isinstance(cooldown, bool)
        or not isinstance(cooldown, int)
        or not 0 <= cooldown <= MAX_COOLDOWN
    ):
        problems.setdefault("cooldown", []).append(f"whole seconds between 0 and {MAX_COOLDOWN}")


def _check_scope(
    doc: dict[str, Any], spec: MetricSpec | None, problems: dict[str, list[str]]
) -> uuid.UUID | None:
    if not isinstance(doc.get("enabled", True), bool):
        problems.setdefault("enabled", []).append("true or false")
    workflow_id = doc.get("workflow_id")
    if workflow_id is None:
        return None
    if spec is not None and not spec.per_workflow:
        problems.setdefault("workflow_id", []).append(
            f"{doc.get('metric')} is about the platform, not a workflow"
        )
    try:
        return uuid.UUID(str(workflow_id))
    except ValueError:
        problems.setdefault("workflow_id", []).append("a workflow id (UUID)")
        return None


def validate_rule(doc: Any) -> dict[str, Any]:
    """A rule document checked and completed with defaults; InvalidInput lists every problem."""
    if not isinstance(doc, dict):
        raise InvalidInput({"_schema": ["a JSON object"]})
    problems: dict[str, list[str]] = {}
    for key in sorted(set(doc) - set(FIELDS)):
        problems.setdefault(key, []).append("unknown field")
    name = doc.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        problems.setdefault("name", []).append("required: 1 to 200 characters")
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problems.setdefault("name", []).append(
            "must not hold control characters (a newline would end an email's Subject header)"
        )
    metric = doc.get("metric")
    spec = METRICS.get(metric) if isinstance(metric, str) else None
    if spec is None:
        problems.setdefault("metric", []).append(f"one of {', '.join(METRICS)}")
    comparison = doc.get("comparison", spec.comparison if spec else ">")
    if not isinstance(comparison, str) or comparison not in COMPARISONS:
        problems.setdefault("comparison", []).append(f"one of {' '.join(COMPARISONS)}")
    threshold = _check_number(doc, spec, problems)
    _check_timing(doc, problems)
    channels = _check_channels(doc.get("channels", []), problems)
    workflow_id = _check_scope(doc, spec, problems)
    if problems:
        raise InvalidInput(problems)
    return {
        "name": str(name).strip(),
        "metric": doc["metric"],
        "comparison": comparison,
        "threshold": threshold,
        "window": str(doc.get("window", "5m")).strip(),
        "severity": doc.get("severity", "medium"),
        "cooldown": doc.get("cooldown", 300),
        "channels": channels,
        "workflow_id": workflow_id,
        "enabled": doc.get("enabled", True),
    }


# ---------------------------------------------------------------------------------------------
# Rules: create, change, delete, the built-ins


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


def _rule_doc(rule: AlertRule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "metric": rule.metric,
        "comparison": rule.comparison,
        "threshold": rule.threshold,
        "window": rule.window,
        "severity": rule.severity,
        "cooldown": rule.cooldown,
        "channels": rule.channels,
        "workflow_id": str(rule.workflow_id) if rule.workflow_id else None,
        "enabled": rule.enabled,
    }


def update_rule(
    session: Session, tenant_id: uuid.UUID, rule_id: uuid.UUID, changes: Any
) -> AlertRule:
    """Change some of a rule's fields (a built-in keeps its metric and scope).

    Disabling a rule resolves its firing alerts, silently."""
    rule = get_rule(session, tenant_id, rule_id)
    if not isinstance(changes, dict):
        raise InvalidInput({"_schema": ["a JSON object"]})
    if rule.builtin:
        fixed = [
            k
            for k in ("metric", "workflow_id")
            if k in changes and changes[k] != _rule_doc(rule)[k]
        ]
        if fixed:
            raise InvalidInput({k: ["a built-in rule keeps its metric and scope"] for k in fixed})
    fields = validate_rule({**_rule_doc(rule), **changes})
    _check_workflow(session, tenant_id, fields)
    for key, value in fields.items():
        setattr(rule, key, value)
    rule.updated_at = now()
    if not rule.enabled:
        for alert in session.scalars(
            select(Alert).where(Alert.rule_id == rule.id, Alert.status == "firing")
        ):
            alert.status, alert.resolved_at = "resolved", now()
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
                             severity, cooldown, channels, enabled, builtin)
    SELECT gen_random_uuid(), t.id, :name, :metric, :comparison, :threshold, :window,
           :severity, :cooldown, '[]'::jsonb, true, :builtin
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
                "builtin": key,
                "tenant": str(tenant_id) if tenant_id else None,
            },
        ).rowcount  # type: ignore[attr-defined]
    return made


# ---------------------------------------------------------------------------------------------
# Views (channel URLs redacted: they often hold tokens)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def rule_view(rule: AlertRule) -> dict[str, Any]:
    """A rule as the API shows it."""
    channels = [
        {**c, "url": redact_url(c["url"])} if "url" in c else dict(c) for c in rule.channels or []
    ]
    return {
        "id": str(rule.id),
        **_rule_doc(rule),
        "channels": channels,
        "builtin": rule.builtin,
        "created_at": _iso(rule.created_at),
        "updated_at": _iso(rule.updated_at),
        "last_evaluated_at": _iso(rule.last_evaluated_at),
    }


def alert_view(alert: Alert, rule: AlertRule | None = None) -> dict[str, Any]:
    """An alert as the API shows it (notification targets are stored redacted)."""
    view = {
        "id": str(alert.id),
        "rule_id": str(alert.rule_id),
        "status": alert.status,
        "severity": alert.severity,
        "subject": alert.subject,
        "workflow_id": str(alert.workflow_id) if alert.workflow_id else None,
        "value": alert.value,
        "last_value": alert.last_value,
        "threshold": alert.threshold,
        "message": alert.message,
        "notified": alert.notify,
        "notifications": alert.notifications or [],
        "fired_at": _iso(alert.fired_at),
        "resolved_at": _iso(alert.resolved_at),
    }
    if rule is not None:
        view.update(
            rule=rule.name, metric=rule.metric, comparison=rule.comparison, window=rule.window
        )
    return view


def overview(session: Session, tenant_id: uuid.UUID, recent: int = 50) -> dict[str, Any]:
    """The tenant's firing alerts, its most recent resolved ones, and its rules."""
    rules = {
        r.id: r
        for r in session.scalars(
            select(AlertRule)
            .where(AlertRule.tenant_id == tenant_id)
            .order_by(AlertRule.created_at, AlertRule.id)
        )
    }
    active = session.scalars(
        select(Alert)
        .where(Alert.tenant_id == tenant_id, Alert.status == "firing")
        .order_by(Alert.fired_at.desc())
    )
    resolved = session.scalars(
        select(Alert)
        .where(Alert.tenant_id == tenant_id, Alert.status == "resolved")
        .order_by(Alert.resolved_at.desc())
        .limit(recent)
    )
    return {
        "active": [alert_view(a, rules.get(a.rule_id)) for a in active],
        "recent": [alert_view(a, rules.get(a.rule_id)) for a in resolved],
        "rules": [rule_view(r) for r in rules.values()],
    }


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class Notice:
    """A notification to send once the evaluation has committed."""

    alert_id: uuid.UUID
    channels: list[dict[str, Any]]
    payload: dict[str, Any]
    tenant_id: uuid.UUID


class _Platform:
    """Queue depth and workers, measured once per pass and only if a rule needs them."""

    def __init__(self, probe: monitoring.Probe):
        self.probe = probe
        self._values: dict[str, float] = {}

    def value(self, metric: str) -> float:
        if metric not in self._values:
            if metric == "workers":
                self._values[metric] = float(len(self.probe.workers(fresh=True)))
            else:
                self._values[metric] = float(sum(self.probe.queues().values()))
        return self._values[metric]


Measured = dict[str, tuple[uuid.UUID | None, float | None]]


def measure(session: Session, rule: AlertRule, platform: _Platform, at: datetime) -> Measured:
    """The rule's metric now, by subject: ``{subject: (workflow_id, value or None)}``."""
    if not METRICS[rule.metric].per_workflow:
        return {"": (None, platform.value(rule.metric))}
    window = monitoring.parse_window(rule.window)
    since = at - window
    subject = str(rule.workflow_id) if rule.workflow_id else ""
    if rule.metric == "performance_degradation":
        if rule.workflow_id:
            ratio, _, _ = monitoring.degradation(
                session, rule.tenant_id, rule.workflow_id, window, at
            )
            return {subject: (rule.workflow_id, ratio)}
        current = monitoring.run_stats_by_workflow(session, rule.tenant_id, since, at)
        baseline = monitoring.run_stats_by_workflow(
            session, rule.tenant_id, since - monitoring.BASELINE, since
        )
        found: Measured = {}
        for workflow_id, stats in current.items():
            base = baseline.get(workflow_id)
            if (
                base
                and base.finished >= monitoring.MIN_BASELINE_RUNS
                and base.p95_ms
                and stats.p95_ms is not None
            ):
                found[str(workflow_id)] = (workflow_id, stats.p95_ms / base.p95_ms)
        return found
    stats = monitoring.run_stats(session, rule.tenant_id, since, at, rule.workflow_id)
    value = stats.error_rate if rule.metric == "error_rate" else stats.p95_ms
    return {subject: (rule.workflow_id, value)}


def _payload(event: str, rule: AlertRule, alert: Alert) -> dict[str, Any]:
    return {
        "event": event,
        "alert_id": str(alert.id),
        "rule_id": str(rule.id),
        "rule": rule.name,
        "severity": rule.severity,
        "metric": rule.metric,
        "value": alert.value if event == "firing" else alert.last_value,
        "comparison": rule.comparison,
        "threshold": rule.threshold,
        "window": rule.window,
        "workflow_id": str(alert.workflow_id) if alert.workflow_id else None,
        "tenant_id": str(rule.tenant_id),
        "message": alert.message,
        "fired_at": _iso(alert.fired_at),
        "resolved_at": _iso(alert.resolved_at),
    }


def _describe(rule: AlertRule, value: float, subject: str) -> str:
    about = f" of workflow {subject}" if subject else ""
    return (
        f"{rule.name}: {rule.metric}{about} is {value:.4g} "
        f"({rule.comparison} {rule.threshold:g}) over the last {rule.window}"
    )


Change = tuple[str | None, Notice | None]


def _advance(
    session: Session,
    rule: AlertRule,
    subject: str,
    workflow_id: uuid.UUID | None,
    value: float | None,
    current: Alert | None,
    at: datetime,
) -> Change:
    """One step of the lifecycle for one rule and subject: what changed ("fired",
    "resolved" or None) and the notice to send, if any."""
    breaching = value is not None and COMPARISONS[rule.comparison](value, rule.threshold)
    if current is not None:
        current.last_value, current.updated_at = value, at
        if breaching:
            return None, None
        current.status, current.resolved_at = "resolved", at
        logger.info("alert resolved: %s", current.message)
        if current.notify and rule.channels:
            return "resolved", Notice(
                current.id, rule.channels, _payload("resolved", rule, current), rule.tenant_id
            )
        return "resolved", None
    if not breaching:
        return None, None
    assert value is not None
    last_announced = session.scalar(
        select(func.max(Alert.fired_at)).where(
            Alert.rule_id == rule.id, Alert.subject == subject, Alert.notify.is_(True)
        )
    )
    announce = last_announced is None or (at - last_announced).total_seconds() >= rule.cooldown
    alert = Alert(
        id=uuid.uuid4(),
        tenant_id=rule.tenant_id,
        rule_id=rule.id,
        subject=subject,
        workflow_id=workflow_id,
        status="firing",
        severity=rule.severity,
        value=value,
        last_value=value,
        threshold=rule.threshold,
        message=_describe(rule, value, subject),
        notify=announce,
        notifications=[],
        fired_at=at,
        updated_at=at,
    )
    session.add(alert)
    session.flush()
    logger.warning("alert fired: %s%s", alert.message, "" if announce else " (in cooldown)")
    if announce and rule.channels:
        return "fired", Notice(
            alert.id, rule.channels, _payload("firing", rule, alert), rule.tenant_id
        )
    return "fired", None


def evaluate(
    factory: sessionmaker[Session], probe: monitoring.Probe, settings: Settings
) -> dict[str, Any]:
    """One pass over every enabled rule of every tenant; only one pass runs at a time."""
    started, at = time.monotonic(), now()
    notices: list[Notice] = []
    changes = {"fired": 0, "resolved": 0}
    with transaction(factory) as session:
        if not session.scalar(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": ALERTS_LOCK}):
            return {"skipped": "another evaluation is running"}
        ensure_default_rules(session)
        rules = list(
            session.scalars(
                select(AlertRule)
                .where(AlertRule.enabled.is_(True))
                .order_by(AlertRule.tenant_id, AlertRule.created_at)
            )
        )
        firing: dict[tuple[uuid.UUID, str], Alert] = {
            (a.rule_id, a.subject): a
            for a in session.scalars(select(Alert).where(Alert.status == "firing"))
        }
        platform = _Platform(probe)
        for rule in rules:
            measured = measure(session, rule, platform, at)
            subjects = set(measured) | {s for (r, s) in firing if r == rule.id}
            for subject in sorted(subjects):
                current = firing.get((rule.id, subject))
                workflow_id, value = measured.get(
                    subject, (current.workflow_id if current else None, None)
                )
                change, notice = _advance(session, rule, subject, workflow_id, value, current, at)
                if change:
                    changes[change] += 1
                if notice:
                    notices.append(notice)
            rule.last_evaluated_at = at
    for notice in notices:
        with transaction(factory) as session:
            domains = tenant_settings.allowed_domains(session, notice.tenant_id)
        results = notify.deliver(notice.channels, notice.payload, settings, domains)
        with transaction(factory) as session:
            alert = session.get(Alert, notice.alert_id)
            if alert is not None:
                alert.notifications = [*(alert.notifications or []), *results]
    report = {
        "at": at.isoformat(),
        "duration_ms": round((time.monotonic() - started) * 1000, 1),
        "rules_evaluated": len(rules),
        "alerts_fired": changes["fired"],
        "alerts_resolved": changes["resolved"],
        "notifications": len(notices),
    }
    probe.record_monitor_status(report)
    return report
