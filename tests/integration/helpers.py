"""Small builders for workflow documents in tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def trigger(node_id: str = "start", **config: Any) -> dict[str, Any]:
    """A trigger node."""
    if not {"kind", "eventType", "event_type"} & set(config):
        config["kind"] = "manual"
    return {"id": node_id, "type": "trigger", "config": config}


def action(node_id: str, action_type: str, **config: Any) -> dict[str, Any]:
    """An action node (node-level keys go in ``extra`` via dict update by the caller)."""
    return {"id": node_id, "type": "action", "config": {"action_type": action_type, **config}}


def workflow(
    name: str, nodes: list[dict], edges: list[tuple[str, str]], **extra: Any
) -> dict[str, Any]:
    """A definition document from nodes and (source, target) pairs."""
    return {
        "name": name,
        "nodes": nodes,
        "connections": [{"source": a, "target": b} for a, b in edges],
        **extra,
    }


def when(step: dict[str, Any], key: str) -> datetime:
    """A step's started_at or finished_at as a datetime."""
    return datetime.fromisoformat(step[key])


def by_node(execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The execution's steps keyed by node id."""
    return {s["node_id"]: s for s in execution["steps"]}
