"""The workflow definition: typed, immutable, validated in one place.

``parse_definition(document)`` accepts ATOM's spelling and the AuraOS one (``sourceNodeId``,
``targetNodeId``, ``actionType``, ``eventType``, ``retryPolicy`` with milliseconds) and either
returns a :class:`Definition` or raises :class:`DefinitionError` listing every problem.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from atom.actions import ACTIONS, is_template
from atom.errors import DefinitionError, Problem
from atom.workflow.graph import Graph
from atom.workflow.templating import (
    expression_error,
    expression_step_references,
    step_references,
    syntax_errors,
)

MAX_NODES = 500
"""The largest workflow accepted (validation and compilation of 500 nodes and up to 5,000
connections take about 0.2-0.3 s of CPU, under a second of wall time even on the loaded dev
box: bench/compile_dag.py, docs/benchmarks.md)."""
MAX_CONNECTIONS = 5000
_NODE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


class NodeType(str, Enum):
    """What a node is."""

    TRIGGER = "trigger"
    ACTION = "action"
    CONDITION = "condition"


class TriggerKind(str, Enum):
    """How a workflow is started (any workflow can also be executed over the API)."""

    MANUAL = "manual"
    SCHEDULE = "schedule"
    WEBHOOK = "webhook"
    EVENT = "event"


class TriggerRule(str, Enum):
    """When a node runs, given its predecessors' final states."""

    ALL_SUCCESS = "all_success"
    ALL_DONE = "all_done"
    ONE_SUCCESS = "one_success"
    NONE_FAILED = "none_failed"


class FailurePolicy(str, Enum):
    """What a failed step does to the rest of the execution."""

    FAIL_FAST = "fail_fast"
    CONTINUE = "continue"


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing step is retried."""

    max_retries: int = 0
    """Retries after the first attempt (0: no retry)."""
    retry_delay: float = 1.0
    """Seconds before the first retry."""
    backoff_multiplier: float = 2.0
    """Each later delay is the previous one times this."""
    max_delay: float = 300.0
    """No delay is longer than this many seconds."""
    retry_on: tuple[int, ...] = ()
    """HTTP statuses retried although they are not transient (429 and 5xx always are)."""

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        return min(self.max_delay, self.retry_delay * self.backoff_multiplier ** (retry_number - 1))


@dataclass(frozen=True)
class Node:
    """One step of the graph."""

    id: str
    type: NodeType
    name: str
    config: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = None
    trigger_rule: TriggerRule = TriggerRule.ALL_SUCCESS
    queue: str | None = None

    @property
    def action_type(self) -> str | None:
        """The handler an action node runs, else None."""
        return self.config.get("action_type") if self.type is NodeType.ACTION else None


@dataclass(frozen=True)
class Connection:
    """An edge: ``target`` runs after ``source``; ``when`` selects a condition's branch."""

    source: str
    target: str
    when: str | None = None
    ordered: bool = False
    """Declared by the user: ``target`` depends on a side effect of ``source`` (it reads
    nothing of its output, yet must run after it). The optimizer never removes such an edge."""


@dataclass(frozen=True)
class Definition:
    """A validated workflow definition."""

    name: str
    description: str
    nodes: tuple[Node, ...]
    connections: tuple[Connection, ...]
    on_failure: FailurePolicy = FailurePolicy.FAIL_FAST
    permissions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """``metadata.permissions``: who may ``view``, ``run`` and ``edit`` it: roles,
    ``key:<API key id>`` entries and, in ``run``, ``webhook`` (an absent kind: every role its
    endpoint allows)."""

    @property
    def trigger(self) -> Node:
        """The one trigger node."""
        return next(n for n in self.nodes if n.type is NodeType.TRIGGER)

    @property
    def trigger_kind(self) -> TriggerKind:
        """How this workflow is started."""
        return TriggerKind(self.trigger.config.get("kind", "manual"))

    @property
    def event_type(self) -> str | None:
        """The event that starts this workflow, for ``kind: event``."""
        return self.trigger.config.get("event_type")

    def node(self, node_id: str) -> Node:
        """The node with this id."""
        return next(n for n in self.nodes if n.id == node_id)

    def graph(self) -> Graph:
        """The whole graph, trigger included."""
        return Graph([n.id for n in self.nodes], [(c.source, c.target) for c in self.connections])

    def to_dict(self) -> dict[str, Any]:
        """The normalized JSON document (ATOM spelling) that parses back to this definition."""
        nodes = []
        for n in self.nodes:
            doc: dict[str, Any] = {
                "id": n.id,
                "type": n.type.value,
                "name": n.name,
                "config": n.config,
            }
            if n.retry != RetryPolicy():
                doc["retry"] = {
                    "max_retries": n.retry.max_retries,
                    "retry_delay": n.retry.retry_delay,
                    "backoff_multiplier": n.retry.backoff_multiplier,
                    "max_delay": n.retry.max_delay,
                }
                if n.retry.retry_on:
                    doc["retry"]["retry_on"] = list(n.retry.retry_on)
            if n.timeout is not None:
                doc["timeout"] = n.timeout
            if n.trigger_rule is not TriggerRule.ALL_SUCCESS:
                doc["trigger_rule"] = n.trigger_rule.value
            if n.queue:
                doc["queue"] = n.queue
            nodes.append(doc)
        connections = []
        for c in self.connections:
            edge: dict[str, Any] = {"source": c.source, "target": c.target}
            if c.when is not None:
                edge["when"] = c.when
            if c.ordered:
                edge["ordered"] = True
            connections.append(edge)
        doc = {
            "name": self.name,
            "description": self.description,
            "on_failure": self.on_failure.value,
            "nodes": nodes,
            "connections": connections,
        }
        if self.permissions:
            doc["metadata"] = {"permissions": {k: list(v) for k, v in self.permissions.items()}}
        return doc


PERMISSION_KINDS = ("view", "run", "edit")
ROLES = ("viewer", "operator", "editor", "admin")
KEY_ENTRY_PREFIX = "key:"
WEBHOOK_ENTRY = "webhook"
"""In ``run`` only: deliveries to the workflow's webhook URL (which carry no key)."""
_KEY_ENTRY = re.compile(
    r"^key:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_PERMISSION_ENTRIES = f"roles ({', '.join(ROLES)}), 'key:<API key id>' or, in run, 'webhook'"


def permission_entry_problem(kind: str, entry: Any) -> str | None:
    """Why ``entry`` cannot stand in ``metadata.permissions.<kind>``, or None."""
    if isinstance(entry, str):
        if entry in ROLES or _KEY_ENTRY.match(entry):
            return None
        if entry == WEBHOOK_ENTRY:
            return None if kind == "run" else "'webhook' may only be listed in run"
        if entry.startswith(KEY_ENTRY_PREFIX):
            return "must be 'key:' followed by an API key id (a UUID)"
    return f"{entry!r} is not one of {_PERMISSION_ENTRIES}"


_CONFIG_ALIASES = {"actionType": "action_type", "eventType": "event_type"}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _Parser:
    """Collects every problem of one document while building the definition."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def problem(self, location: str, message: str, node: str | None = None) -> None:
        self.problems.append(Problem(location, message, node))

    def parse(self, doc: Any) -> Definition | None:
        if not isinstance(doc, dict):
            self.problem("$", "the definition must be a JSON object")
            return None
        name = doc.get("name")
        if not isinstance(name, str) or not name.strip():
            self.problem("name", "is required and must be a non-empty string")
        elif len(name.strip()) > 200:
            self.problem("name", "must be at most 200 characters")
        description = doc.get("description") or ""
        if not isinstance(description, str):
            self.problem("description", "must be a string")
            description = ""
        on_failure = doc.get("on_failure", doc.get("onFailure", "fail_fast"))
        if not isinstance(on_failure, str) or on_failure not in {p.value for p in FailurePolicy}:
            self.problem("on_failure", "must be fail_fast or continue")
            on_failure = "fail_fast"
        raw_nodes, raw_edges = doc.get("nodes"), doc.get("connections", [])
        if not isinstance(raw_nodes, list) or not raw_nodes:
            self.problem("nodes", "is required and must be a non-empty list")
            raw_nodes = []
        elif len(raw_nodes) > MAX_NODES:
            self.problem(
                "nodes",
                f"has {len(raw_nodes)} nodes; a workflow has at most "
                f"{MAX_NODES} (split it, or call one workflow from another)",
            )
            raw_nodes = []
        if not isinstance(raw_edges, list):
            self.problem("connections", "must be a list")
            raw_edges = []
        elif len(raw_edges) > MAX_CONNECTIONS:
            self.problem(
                "connections", f"has {len(raw_edges)} connections; at most {MAX_CONNECTIONS}"
            )
            raw_edges = []
        permissions = self.permissions(doc.get("metadata"))
        nodes = [n for i, raw in enumerate(raw_nodes) if (n := self.node(i, raw))]
        ids = [n.id for n in nodes]
        for node_id in sorted(i for i, times in Counter(ids).items() if times > 1):
            self.problem("nodes", f"duplicate node id {node_id!r}", node_id)
        unique = {n.id: n for n in nodes}
        edges = [e for i, raw in enumerate(raw_edges) if (e := self.connection(i, raw, unique))]
        self.check_graph(list(unique.values()), edges)
        if self.problems:
            return None
        return Definition(
            name=str(name).strip(),
            description=description,
            nodes=tuple(nodes),
            connections=tuple(edges),
            on_failure=FailurePolicy(on_failure),
            permissions=permissions,
        )

    def permissions(self, metadata: Any) -> dict[str, tuple[str, ...]]:
        if metadata is None:
            return {}
        if not isinstance(metadata, dict):
            self.problem("metadata", "must be an object")
            return {}
        raw = metadata.get("permissions")
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem("metadata.permissions", "must be an object {view, run, edit}")
            return {}
        found: dict[str, tuple[str, ...]] = {}
        for kind, entries in raw.items():
            where = f"metadata.permissions.{kind}"
            if kind not in PERMISSION_KINDS:
                self.problem(where, f"is not one of {', '.join(PERMISSION_KINDS)}")
                continue
            if not isinstance(entries, list):
                self.problem(where, f"must be a list of {_PERMISSION_ENTRIES}")
                continue
            good = True
            for i, entry in enumerate(entries):
                problem = permission_entry_problem(kind, entry)
                if problem:
                    self.problem(f"{where}[{i}]", problem)
                    good = False
            if good:
                found[kind] = tuple(
                    dict.fromkeys(e.lower() if _KEY_ENTRY.match(e) else e for e in entries)
                )
        return found

    def node(self, i: int, raw: Any) -> Node | None:
        where = f"nodes[{i}]"
        if not isinstance(raw, dict):
            self.problem(where, "must be an object")
            return None
        node_id = raw.get("id")
        if not isinstance(node_id, str) or not _NODE_ID.match(node_id):
            self.problem(
                f"{where}.id",
                "is required: letters, digits, '_' or '-', "
                "starting with a letter or '_', at most 64 characters",
            )
            return None
        where = f"nodes[{node_id}]"
        kind = raw.get("type")
        if not isinstance(kind, str) or kind not in {t.value for t in NodeType}:
            self.problem(f"{where}.type", "must be trigger, action or condition", node_id)
            return None
        config = raw.get("config", {})
        if not isinstance(config, dict):
            self.problem(f"{where}.config", "must be an object", node_id)
            return None
        config = {_CONFIG_ALIASES.get(k, k): v for k, v in config.items()}
        name = raw.get("name") or node_id
        if not isinstance(name, str):
            self.problem(f"{where}.name", "must be a string", node_id)
        node = Node(
            id=node_id,
            type=NodeType(kind),
            name=str(name),
            config=config,
            retry=self.retry(raw, where, node_id),
            timeout=self.timeout(raw, where, node_id),
            trigger_rule=self.trigger_rule(raw, where, node_id),
            queue=self.queue(raw, where, node_id),
        )
        self.check_config(node, where)
        return node

    def retry(self, raw: dict, where: str, node_id: str) -> RetryPolicy:
        keys: tuple[str, ...]
        if "retry" in raw:
            spec, scale, keys = (
                raw["retry"],
                1.0,
                ("max_retries", "retry_delay", "backoff_multiplier", "max_delay"),
            )
            loc = f"{where}.retry"
        elif "retryPolicy" in raw:  # AuraOS spelling: delays in milliseconds
            spec, scale, keys = (
                raw["retryPolicy"],
                0.001,
                ("maxRetries", "retryDelay", "backoffMultiplier", "maxDelay"),
            )
            loc = f"{where}.retryPolicy"
        else:
            return RetryPolicy()
        if not isinstance(spec, dict):
            self.problem(loc, "must be an object", node_id)
            return RetryPolicy()
        values: dict[str, Any] = {}
        on_key = "retry_on" if loc.endswith(".retry") else "retryOn"
        if on_key in spec:
            statuses = spec[on_key]
            if not isinstance(statuses, list) or not all(
                isinstance(x, int) and not isinstance(x, bool) and 400 <= x <= 599 for x in statuses
            ):
                self.problem(
                    f"{loc}.{on_key}", "must be a list of HTTP statuses (400-599)", node_id
                )
            else:
                values["retry_on"] = tuple(statuses)
        keys = (*keys, on_key)
        limits = {
            "max_retries": (0, 100),
            "retry_delay": (0, 86400),
            "backoff_multiplier": (1, 100),
            "max_delay": (0, 86400),
        }
        for ours, theirs in zip(limits, keys[:4], strict=True):
            if theirs not in spec:
                continue
            value = spec[theirs]
            low, high = limits[ours]
            scaled = (
                value * scale if _number(value) and ours in {"retry_delay", "max_delay"} else value
            )
            if not _number(value) or not low <= scaled <= high:
                self.problem(f"{loc}.{theirs}", f"must be a number from {low} to {high}", node_id)
                continue
            if ours == "max_retries" and value != int(value):
                self.problem(f"{loc}.{theirs}", "must be a whole number", node_id)
                continue
            values[ours] = int(value) if ours == "max_retries" else float(scaled)
        unknown = set(spec) - set(keys)
        for key in sorted(unknown):
            self.problem(f"{loc}.{key}", f"is not a retry setting ({', '.join(keys)})", node_id)
        return RetryPolicy(**values)

    def timeout(self, raw: dict, where: str, node_id: str) -> float | None:
        value = raw.get("timeout")
        if value is None:
            return None
        if not _number(value) or not 0 < value <= 86400:
            self.problem(f"{where}.timeout", "must be a number of seconds from 0 to 86400", node_id)
            return None
        return float(value)

    def trigger_rule(self, raw: dict, where: str, node_id: str) -> TriggerRule:
        value = raw.get("trigger_rule", raw.get("triggerRule", "all_success"))
        if not isinstance(value, str) or value not in {r.value for r in TriggerRule}:
            self.problem(
                f"{where}.trigger_rule",
                "must be one of " + ", ".join(r.value for r in TriggerRule),
                node_id,
            )
            return TriggerRule.ALL_SUCCESS
        return TriggerRule(value)

    def queue(self, raw: dict, where: str, node_id: str) -> str | None:
        value = raw.get("queue")
        if value is not None and (
            not isinstance(value, str) or not re.match(r"^[a-z0-9_.\-]{1,64}$", value)
        ):
            self.problem(
                f"{where}.queue", "must be a queue name (a-z, 0-9, '_', '.', '-')", node_id
            )
            return None
        if value and value.startswith("atom.") and value != "atom.steps":
            self.problem(
                f"{where}.queue",
                f"{value!r} is reserved for the platform's own work; name a worker pool of yours",
                node_id,
            )
            return None
        return value

    def check_config(self, node: Node, where: str) -> None:
        config, loc = node.config, f"{where}.config"
        if node.type is NodeType.TRIGGER:
            kind = config.get("kind", "event" if "event_type" in config else "manual")
            if not isinstance(kind, str) or kind not in {k.value for k in TriggerKind}:
                self.problem(f"{loc}.kind", "must be manual, schedule, webhook or event", node.id)
            elif kind == "event" and (
                not isinstance(config.get("event_type"), str)
                or not 1 <= len(config["event_type"]) <= 200
            ):
                self.problem(
                    f"{loc}.event_type",
                    "is required for an event trigger (1 to 200 characters)",
                    node.id,
                )
            config.setdefault("kind", kind)
        elif node.type is NodeType.CONDITION:
            expression = config.get("expression")
            if not isinstance(expression, str) or not expression.strip():
                self.problem(f"{loc}.expression", "is required", node.id)
            elif error := expression_error(expression):
                self.problem(f"{loc}.expression", error, node.id)
        else:
            action = config.get("action_type")
            if not isinstance(action, str) or action not in ACTIONS:
                self.problem(
                    f"{loc}.action_type",
                    f"unknown action type {action!r}; known: " + ", ".join(sorted(ACTIONS)),
                    node.id,
                )
                return
            self.problems.extend(ACTIONS[action].validate(config, loc, node.id))
        for location, message in syntax_errors(
            {k: v for k, v in config.items() if k != "expression"}, loc
        ):
            self.problem(location, message, node.id)

    def connection(self, i: int, raw: Any, nodes: dict[str, Node]) -> Connection | None:
        where = f"connections[{i}]"
        if not isinstance(raw, dict):
            self.problem(where, "must be an object")
            return None
        source = raw.get("source", raw.get("sourceNodeId"))
        target = raw.get("target", raw.get("targetNodeId"))
        when = raw.get("when", raw.get("condition"))
        ok = True
        for end, value in (("source", source), ("target", target)):
            if not isinstance(value, str):
                self.problem(f"{where}.{end}", "is required")
                ok = False
            elif value not in nodes:
                self.problem(f"{where}.{end}", f"unknown node {value!r}")
                ok = False
        if not ok or not isinstance(source, str) or not isinstance(target, str):
            return None
        if isinstance(when, bool):
            when = "true" if when else "false"
        if nodes[source].type is NodeType.CONDITION:
            if not isinstance(when, str) or when not in {"true", "false"}:
                self.problem(
                    f"{where}.when",
                    f'a connection from condition {source!r} must say when: "true" or "false"',
                    source,
                )
                return None
        elif when is not None:
            self.problem(
                f"{where}.when",
                f"only a condition's connections take 'when'; {source!r} is not a condition",
                source,
            )
            return None
        if nodes[target].type is NodeType.TRIGGER:
            self.problem(
                f"{where}.target", f"nothing may connect into the trigger {target!r}", target
            )
            return None
        ordered = raw.get("ordered", False)
        if not isinstance(ordered, bool):
            self.problem(f"{where}.ordered", "must be true or false", source)
            return None
        return Connection(source=source, target=target, when=when, ordered=ordered)

    def check_graph(self, nodes: list[Node], edges: list[Connection]) -> None:
        triggers = [n.id for n in nodes if n.type is NodeType.TRIGGER]
        if not triggers and nodes:
            self.problem("nodes", "a workflow needs exactly one trigger node; it has none")
        if len(triggers) > 1:
            self.problem(
                "nodes",
                "a workflow needs exactly one trigger node; it has "
                f"{len(triggers)}: {', '.join(triggers)}",
            )
        pairs = [(e.source, e.target) for e in edges]
        for pair in sorted(p for p, times in Counter(pairs).items() if times > 1):
            self.problem("connections", f"duplicate connection {pair[0]} -> {pair[1]}", pair[0])
        graph = Graph([n.id for n in nodes], pairs)
        cycles = graph.cycles()
        for cycle in cycles:
            self.problem("connections", "cycle: " + " -> ".join(cycle), cycle[0])
        if len(triggers) == 1:
            reached = graph.reachable_from(triggers[0])
            for n in nodes:
                if n.id not in reached:
                    self.problem(
                        f"nodes[{n.id}]",
                        f"unreachable: no path from the trigger {triggers[0]!r} leads to {n.id!r}",
                        n.id,
                    )
        for n in nodes:
            if n.type is NodeType.CONDITION:
                branches = {e.when for e in edges if e.source == n.id}
                if not branches:
                    self.problem(
                        f"nodes[{n.id}]", "a condition needs at least one outgoing connection", n.id
                    )


def unknown_step_references(definition: Definition) -> list[Problem]:
    """Templates (and condition expressions) reading ``steps.<id>`` of a step the workflow
    does not have: they would fail only when they run. Checked when a definition is saved
    (``atom.store.workflows.validate``), not when a stored one loads, so a version saved
    before this check still runs as it did."""
    known = [n.id for n in definition.nodes]
    listed = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
    problems: list[Problem] = []
    for node in definition.nodes:
        where = f"nodes[{node.id}].config"
        found = step_references({k: v for k, v in node.config.items() if k != "expression"}, where)
        expression = node.config.get("expression")
        if node.type is NodeType.CONDITION and isinstance(expression, str):
            found += [
                (f"{where}.expression", expression, step)
                for step in expression_step_references(expression)
            ]
        for location, source, step in found:
            if step in known:
                continue
            kind = "expression" if location.endswith(".expression") else "template"
            shown = source if len(source) <= 120 else source[:117] + "..."
            problems.append(
                Problem(
                    location,
                    f"the {kind} {shown!r} reads step {step!r}, which workflow "
                    f"{definition.name!r} does not have (its steps: {listed})",
                    node.id,
                )
            )
    return problems


def parse_definition(document: Any) -> Definition:
    """Build a Definition from a JSON document, or raise DefinitionError with every problem."""
    parser = _Parser()
    definition = parser.parse(document)
    if definition is None:
        raise DefinitionError(parser.problems)
    return definition


__all__ = [
    "Connection",
    "Definition",
    "FailurePolicy",
    "Node",
    "NodeType",
    "RetryPolicy",
    "TriggerKind",
    "TriggerRule",
    "is_template",
    "parse_definition",
    "unknown_step_references",
]
