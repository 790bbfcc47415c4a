"""The health score of a workflow: 0-100 from its success rate, its p95 latency against its
own baseline, its open alerts, and the open anomalies on its series."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from atom.observe.stats import BASELINE, MIN_BASELINE_RUNS, degradation
from atom.statuses import AlertStatus
from atom.store.models import Alert, AlertRule

logger = logging.getLogger(__name__)

SEVERITY_PENALTY = {"critical": 20, "high": 10, "medium": 5, "low": 2}
WEIGHTS = {"success_rate": 45, "latency": 25, "open_alerts": 15, "anomalies": 15}
ANOMALY_PENALTY = 10
"""Points an open anomaly on one of the workflow's series costs (of the 15)."""


def _latency_points(ratio: float | None) -> float:
    """Full marks up to 1.2x the baseline p95, none from 3x, linear in between."""
    if ratio is None or ratio <= 1.2:
        return WEIGHTS["latency"]
    return max(0.0, WEIGHTS["latency"] * (3.0 - ratio) / 1.8)


def workflow_health(
    session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID, window: timedelta
) -> dict[str, Any]:
    """A 0-100 score with its factors (see README 'Workflow health')."""
    ratio, current, baseline = degradation(session, tenant_id, workflow_id, window)
    firing = session.execute(
        select(Alert, AlertRule.metric)
        .join(AlertRule, AlertRule.id == Alert.rule_id)
        .where(
            Alert.tenant_id == tenant_id,
            Alert.workflow_id == workflow_id,
            Alert.status == AlertStatus.FIRING,
        )
        .order_by(Alert.fired_at)
    ).all()
    open_alerts = [a for a, metric in firing if metric != "anomaly"]
    anomalies: dict[str, Alert] = {}  # by series: several rules may watch one series
    for alert, metric in firing:
        if metric == "anomaly":
            anomalies.setdefault(alert.subject, alert)
    rate = current.success_rate
    success_points = WEIGHTS["success_rate"] * (1.0 if rate is None else rate)
    latency_points = _latency_points(ratio)
    penalty = sum(SEVERITY_PENALTY.get(a.severity, 5) for a in open_alerts)
    alert_points = max(0, WEIGHTS["open_alerts"] - penalty)
    anomaly_points = max(0, WEIGHTS["anomalies"] - ANOMALY_PENALTY * len(anomalies))
    score = round(success_points + latency_points + alert_points + anomaly_points)
    factors = {
        "success_rate": {
            "weight": WEIGHTS["success_rate"],
            "points": round(success_points, 1),
            "value": rate,
            "succeeded": current.succeeded,
            "failed": current.failed,
            "detail": (
                f"{current.succeeded} of {current.finished} finished runs succeeded"
                if current.finished
                else "no finished runs in the window"
            ),
        },
        "latency": {
            "weight": WEIGHTS["latency"],
            "points": round(latency_points, 1),
            "value": round(ratio, 3) if ratio is not None else None,
            "p95_ms": current.durations()["p95"],
            "baseline_p95_ms": baseline.durations()["p95"],
            "baseline_runs": baseline.finished,
            "detail": (
                f"p95 is {ratio:.2f}x the baseline of the {BASELINE.days} days before"
                if ratio is not None
                else f"no baseline yet (needs {MIN_BASELINE_RUNS} runs in the "
                f"{BASELINE.days} days before the window)"
            ),
        },
        "open_alerts": {
            "weight": WEIGHTS["open_alerts"],
            "points": alert_points,
            "value": len(open_alerts),
            "alerts": [
                {"id": str(a.id), "severity": a.severity, "message": a.message} for a in open_alerts
            ],
            "detail": f"{len(open_alerts)} firing alert(s) about this workflow",
        },
        "anomalies": {
            "weight": WEIGHTS["anomalies"],
            "points": anomaly_points,
            "value": len(anomalies),
            "series": [
                {
                    "alert_id": str(a.id),
                    "series": (a.details or {}).get("series"),
                    "value": (a.details or {}).get("value"),
                    "expected": (a.details or {}).get("expected"),
                    "score": a.value,
                    "at": (a.details or {}).get("at"),
                }
                for a in anomalies.values()
            ],
            "detail": f"{len(anomalies)} of its series with an open anomaly",
        },
    }
    status = "healthy" if score >= 80 else "warning" if score >= 50 else "critical"
    return {
        "workflow_id": str(workflow_id),
        "window_seconds": int(window.total_seconds()),
        "score": score,
        "status": status,
        "factors": factors,
    }
