"""Evaluation: measure each enabled rule, move its alerts along ``firing -> resolved``, and
announce the changes on the rule's channels once the pass has committed."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from atom.alerts import channels as notify
from atom.alerts.rules import ensure_default_rules
from atom.alerts.spec import COMPARISONS, METRICS
from atom.anomaly import alerting as anomaly_alerting
from atom.clock import now
from atom.config import Settings
from atom.observe import stats
from atom.observe.probe import Probe
from atom.security import settings as tenant_settings
from atom.statuses import AlertStatus
from atom.store.models import Alert, AlertRule

logger = logging.getLogger(__name__)


ALERTS_LOCK = 742003  # 742001 migrations, 742002 reconciler, 742004 schedule sweep


@dataclass(frozen=True)
class Notice:
    """A notification to send once the evaluation has committed."""

    alert_id: uuid.UUID
    channels: list[dict[str, Any]]
    payload: dict[str, Any]
    tenant_id: uuid.UUID


class _Platform:
    """Queue depth and workers, measured once per pass and only if a rule needs them."""

    def __init__(self, probe: Probe):
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
    window = stats.parse_window(rule.window)
    since = at - window
    subject = str(rule.workflow_id) if rule.workflow_id else ""
    if rule.metric == "performance_degradation":
        if rule.workflow_id:
            ratio, _, _ = stats.degradation(session, rule.tenant_id, rule.workflow_id, window, at)
            return {subject: (rule.workflow_id, ratio)}
        current = stats.run_stats_by_workflow(session, rule.tenant_id, since, at)
        baseline = stats.run_stats_by_workflow(
            session, rule.tenant_id, since - stats.BASELINE, since
        )
        found: Measured = {}
        for workflow_id, recent in current.items():
            base = baseline.get(workflow_id)
            if (
                base
                and base.finished >= stats.MIN_BASELINE_RUNS
                and base.p95_ms
                and recent.p95_ms is not None
            ):
                found[str(workflow_id)] = (workflow_id, recent.p95_ms / base.p95_ms)
        return found
    overall = stats.run_stats(session, rule.tenant_id, since, at, rule.workflow_id)
    value = overall.error_rate if rule.metric == "error_rate" else overall.p95_ms
    return {subject: (rule.workflow_id, value)}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _payload(event: str, rule: AlertRule, alert: Alert) -> dict[str, Any]:
    payload: dict[str, Any] = {
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
    if rule.metric == "anomaly":
        details = alert.details or {}
        # The anomalous point: its value, the range the detector expected, its score (the
        # metric compared with the threshold); a resolution also says where the series is.
        payload.update(
            value=details.get("value"),
            expected=details.get("expected"),
            score=alert.value,
            at=details.get("at"),
            series=details.get("series"),
            last=details.get("last"),
        )
    return payload


def _describe(rule: AlertRule, value: float, subject: str) -> str:
    about = f" of workflow {subject}" if subject else ""
    return (
        f"{rule.name}: {rule.metric}{about} is {value:.4g} "
        f"({rule.comparison} {rule.threshold:g}) over the last {rule.window}"
    )


Change = tuple[str | None, Notice | None]


def _resolve(rule: AlertRule, current: Alert, at: datetime) -> Change:
    current.status, current.resolved_at = AlertStatus.RESOLVED, at
    logger.info("alert resolved: %s", current.message)
    if current.notify and rule.channels:
        return "resolved", Notice(
            current.id, rule.channels, _payload("resolved", rule, current), rule.tenant_id
        )
    return "resolved", None


def _fire(
    session: Session,
    rule: AlertRule,
    subject: str,
    workflow_id: uuid.UUID | None,
    value: float,
    at: datetime,
    message: str,
    details: dict[str, Any] | None = None,
) -> Change:
    """A new firing alert, announced unless an announced one fired within the cooldown."""
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
        status=AlertStatus.FIRING,
        severity=rule.severity,
        value=value,
        last_value=value,
        threshold=rule.threshold,
        message=message,
        notify=announce,
        notifications=[],
        details=details,
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
        return _resolve(rule, current, at)
    if not breaching:
        return None, None
    assert value is not None
    return _fire(session, rule, subject, workflow_id, value, at, _describe(rule, value, subject))


def _describe_anomaly(rule: AlertRule, details: dict[str, Any]) -> str:
    series = details.get("series") or {}
    about = series.get("kind", "series")
    if series.get("name"):
        about += f" {series['name']}"
    if series.get("workflow_id"):
        about += f" of workflow {series['workflow_id']}"
    unit = f" {series['unit']}" if series.get("unit") else ""
    expected = details.get("expected")
    normal = (
        f"expected {expected[0]:.4g}..{expected[1]:.4g}"
        if isinstance(expected, list)
        else "no expected range yet"
    )
    return (
        f"{rule.name}: {about} was {details.get('value', 0.0):.4g}{unit} at "
        f"{details.get('at')} ({normal}; anomaly score {details.get('score', 0.0):.2f} "
        f">= {rule.threshold:g})"
    )


def _advance_anomaly(
    session: Session,
    rule: AlertRule,
    verdict: anomaly_alerting.Verdict,
    current: Alert | None,
    at: datetime,
) -> Change:
    """The lifecycle of an anomaly rule's alert about one series (atom.anomaly.alerting)."""
    if current is not None:
        current.last_value, current.updated_at = verdict.score, at
        current.details = verdict.details
        return (None, None) if verdict.open else _resolve(rule, current, at)
    if not verdict.open or verdict.score is None:
        return None, None
    message = _describe_anomaly(rule, verdict.details)
    return _fire(
        session,
        rule,
        verdict.subject,
        verdict.workflow_id,
        verdict.score,
        at,
        message,
        verdict.details,
    )


def _evaluate_anomaly(
    session: Session, rule: AlertRule, firing: dict[tuple[uuid.UUID, str], Alert], at: datetime
) -> list[Change]:
    mine = {subject: a for (rule_id, subject), a in firing.items() if rule_id == rule.id}
    window = stats.parse_window(rule.window)
    return [
        _advance_anomaly(session, rule, verdict, mine.get(verdict.subject), at)
        for verdict in anomaly_alerting.verdicts(session, rule, mine, at, window)
    ]


def evaluate(factory: sessionmaker[Session], probe: Probe, settings: Settings) -> dict[str, Any]:
    """One pass over every enabled rule of every tenant; only one pass runs at a time."""
    started, at = time.monotonic(), now()
    notices: list[Notice] = []
    changes = {"fired": 0, "resolved": 0}
    with factory.begin() as session:
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
            for a in session.scalars(select(Alert).where(Alert.status == AlertStatus.FIRING))
        }
        platform = _Platform(probe)
        for rule in rules:
            if rule.metric == "anomaly":
                for change, notice in _evaluate_anomaly(session, rule, firing, at):
                    if change:
                        changes[change] += 1
                    if notice:
                        notices.append(notice)
                rule.last_evaluated_at = at
                continue
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
        with factory.begin() as session:
            domains = tenant_settings.allowed_domains(session, notice.tenant_id)
        results = notify.deliver(notice.channels, notice.payload, settings, domains)
        with factory.begin() as session:
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
