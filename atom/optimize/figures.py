"""The numbers the optimizer reasons with: per step, and for a whole workflow."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepFigures:
    """What one step costs per attempt, from history or from an estimate."""

    p50_ms: float
    """Median duration of one attempt."""
    p95_ms: float
    p99_ms: float
    success: float
    """Probability that one attempt succeeds."""
    calls: float = 0.0
    """Outside calls (HTTP requests, queries, mails, model calls) one attempt makes."""
    source: str = "estimate"
    """``history`` (measured on ``samples`` runs) or ``estimate``."""
    samples: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    """Failed attempts by category (``timeout``, ``upstream_5xx``, ``bad_request`` ...)."""
    transient_failures: int = 0
    """Failed attempts a later attempt could get past (timeouts, 5xx, connection, 429)."""
    wasted_retries: dict[int, int] = field(default_factory=dict)
    """Retries spent on an HTTP status that never recovered, by status."""
    attempts: int = 0
    """Attempts the success rate was measured on (0: an estimate)."""
    outputs: int = 0
    """Succeeded runs whose output body was compared (oldest to newest)."""
    output_changes: int = 0
    """How often the body differed from the run before's."""
    output_span_s: float = 0.0
    """Seconds from the first to the last of those runs."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form shown in ``baseline.steps``."""
        return {
            "p50_ms": round(self.p50_ms, 1),
            "p95_ms": round(self.p95_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "attempt_success_rate": round(self.success, 4),
            "calls_per_attempt": self.calls,
            "source": self.source,
            "samples": self.samples,
            "failures": dict(self.failures),
        }


@dataclass(frozen=True)
class Figures:
    """A workflow's duration, outside calls and success rate per run."""

    duration_p50_ms: float | None
    duration_p95_ms: float | None
    calls: float | None
    success_rate: float | None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (API.md "Optimizer")."""
        return {
            "duration_p50_ms": _round(self.duration_p50_ms, 1),
            "duration_p95_ms": _round(self.duration_p95_ms, 1),
            "calls": _round(self.calls, 2),
            "success_rate": _round(self.success_rate, 4),
        }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by linear interpolation (values non-empty)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def wilson(successes: float, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson interval of a success rate measured on ``trials`` attempts."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    scale = 1 + z * z / trials
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)
