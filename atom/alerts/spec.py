"""What a rule may say: the metrics, comparisons, severities and channel types."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass


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
    # The anomaly score of a series' points (atom.anomaly), 0..1, reaching the threshold.
    "anomaly": MetricSpec(per_workflow=True, comparison=">=", threshold=0.9, fraction=True),
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
    "series",
)
