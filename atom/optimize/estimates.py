"""Labelled estimates for a step that has never run (``baseline.source: "estimate"``).

Rough figures for a typical call of each action type on a healthy service; every analysis
built on them says so, and lists them in ``baseline.estimates``.
"""

from __future__ import annotations

from typing import Any

from atom.optimize.figures import StepFigures
from atom.workflow.definition import Node, NodeType

HOP_OVERHEAD_MS = 40.0
"""Dispatch and bookkeeping between one step and the next (queue, claim, record), per step."""

CACHE_HIT_MS = (5.0, 20.0)
"""p50 and p95 of a step answered from the response cache (a Redis read): an estimate."""

_BY_ACTION: dict[str, tuple[float, float, float, float]] = {
    # action type: (p50 ms, p95 ms, attempt success, outside calls per attempt)
    "http_request": (300.0, 1000.0, 0.99, 1.0),
    "database_query": (50.0, 250.0, 0.995, 1.0),
    "email": (500.0, 2000.0, 0.98, 1.0),
    "decision": (100.0, 500.0, 0.99, 1.0),
    "python": (50.0, 300.0, 0.999, 0.0),
    "transform": (5.0, 20.0, 1.0, 0.0),
    "log": (5.0, 20.0, 1.0, 0.0),
}


def calls_per_attempt(node: Node) -> float:
    """Outside calls one attempt of ``node`` makes."""
    return _BY_ACTION.get(node.action_type or "", (0, 0, 1, 0.0))[3]


def estimate(node: Node) -> StepFigures:
    """The estimated figures of one attempt of ``node``."""
    if node.type is NodeType.TRIGGER:
        return StepFigures(0.0, 0.0, 0.0, 1.0, 0.0)
    if node.type is NodeType.CONDITION:
        return StepFigures(5.0, 20.0, 30.0, 1.0, 0.0)
    kind = node.action_type or ""
    if kind == "delay":
        seconds = node.config.get("seconds")
        ms = float(seconds) * 1000 if isinstance(seconds, int | float) else 1000.0
        return StepFigures(ms, ms, ms, 1.0, 0.0)
    p50, p95, success, calls = _BY_ACTION.get(kind, (100.0, 500.0, 0.99, 0.0))
    return StepFigures(p50, p95, p95 * 1.5, success, calls)


def table() -> dict[str, dict[str, Any]]:
    """The per-action estimates, as stated in an estimate-based baseline."""
    return {
        kind: {
            "p50_ms": p50,
            "p95_ms": p95,
            "attempt_success_rate": success,
            "calls_per_attempt": calls,
        }
        for kind, (p50, p95, success, calls) in _BY_ACTION.items()
    } | {
        "delay": {"p50_ms": "config.seconds", "p95_ms": "config.seconds"},
        "cache_hit": {"p50_ms": CACHE_HIT_MS[0], "p95_ms": CACHE_HIT_MS[1]},
    }
