"""Which orderings of a workflow carry something, and which may be dropped. Pure.

An edge ``a -> b`` says "b after a". The optimizer keeps that ordering when it carries
something, and otherwise lets ``b`` start without waiting for ``a``:

- **data**: ``b`` reads ``steps.a`` in a template, a condition's expression or a transform
  (found by ``atom.workflow.templating.steps_needed``); a reader of ``steps`` that names no
  fixed id (``steps[input.k]``) keeps all its orderings;
- **declared**: the user marked the connection ``ordered: true`` (``b`` depends on a side
  effect of ``a`` although it reads nothing of it);
- **side effects**: a step with a side effect (an HTTP call other than GET/HEAD/OPTIONS, a
  database write, an email, a python function, a decision, a delay) still runs after
  everything it ran after, and every step still runs after every side-effect step it ran
  after (a read after a write may read what the write did);
- **control**: conditions, steps with a trigger rule other than ``all_success``, and
  everything after them keep their connections as they are (a branch not taken skips them
  through those edges). A workflow with ``on_failure: continue`` is left alone (there a
  failed step's successors are skipped only through its edges).

The relaxed graph keeps the original sinks as the only sinks (the execution's output is
the outputs of the sinks), so the optimized workflow has the same outputs: a step that would
otherwise become a new sink is joined to one of its original descendants.
"""

from __future__ import annotations

from dataclasses import dataclass

from atom.workflow.definition import Connection, Definition, FailurePolicy, Node, NodeType
from atom.workflow.definition import TriggerRule as Rule
from atom.workflow.graph import Graph
from atom.workflow.templating import steps_needed

PURE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def side_effect(node: Node) -> str | None:
    """What ``node`` does besides computing its output, or None for a pure step."""
    if node.type is not NodeType.ACTION:
        return None
    kind = node.action_type
    if kind == "http_request":
        method = str(node.config.get("method", "GET"))
        if "{" in method:
            return "an HTTP call whose method is a template"
        return None if method.upper() in PURE_METHODS else f"an HTTP {method.upper()}"
    if kind in ("transform", "log"):
        return None
    if kind == "database_query":
        return "a database write" if node.config.get("write") else None
    if kind == "delay":
        return "a wait (its only purpose is to order what follows)"
    return {"email": "sends an email", "python": "a python function", "decision": "a decision"}.get(
        kind or "", f"a {kind} step"
    )


def reads(node: Node) -> frozenset[str] | None:
    """The steps ``node`` reads (None: any step)."""
    expression = node.config.get("expression") if node.type is NodeType.CONDITION else None
    config = {k: v for k, v in node.config.items() if k != "expression"}
    return steps_needed(config, expression if isinstance(expression, str) else None)


def ancestors(graph: Graph) -> dict[str, set[str]]:
    """Every node's ancestors."""
    found: dict[str, set[str]] = {}
    for node in graph.topological_order():
        mine: set[str] = set()
        for p in graph.predecessors[node]:
            mine |= found[p] | {p}
        found[node] = mine
    return found


def used_outputs(definition: Definition) -> set[str] | None:
    """Steps whose output some step reads (None: a step reads ``steps`` without naming ids)."""
    used: set[str] = set()
    for node in definition.nodes:
        found = reads(node)
        if found is None:
            return None
        used |= found
    return used


@dataclass(frozen=True)
class Relaxation:
    """The connections of the relaxed graph, and what changed."""

    connections: tuple[Connection, ...]
    dropped: tuple[tuple[str, str], ...]
    """Original orderings ``(a, b)`` that no longer hold (``b`` no longer waits for ``a``)."""
    kept_reasons: dict[str, str]
    """Why a node's connections were left alone, by node."""

    @property
    def changed(self) -> bool:
        """True when some ordering was dropped."""
        return bool(self.dropped)


def frozen_nodes(definition: Definition, graph: Graph) -> dict[str, str]:
    """Nodes whose incoming connections stay as they are, with the reason."""
    frozen: dict[str, str] = {}
    for node in definition.nodes:
        if node.type is NodeType.CONDITION:
            frozen[node.id] = "a condition"
        elif node.trigger_rule is not Rule.ALL_SUCCESS:
            frozen[node.id] = f"trigger rule {node.trigger_rule.value}"
    for node_id in list(frozen):
        for below in graph.reachable_from(node_id) - {node_id}:
            frozen.setdefault(below, f"after {node_id} ({frozen[node_id]})")
    return frozen


@dataclass
class _Graph:
    """The original graph's facts the relaxation needs, computed once."""

    definition: Definition
    graph: Graph
    trigger: str
    order: list[str]
    anc: dict[str, set[str]]
    effectful: set[str]
    incoming: dict[str, list[Connection]]
    sinks: set[str]

    @classmethod
    def of(cls, definition: Definition) -> _Graph:
        graph = definition.graph()
        incoming: dict[str, list[Connection]] = {n: [] for n in graph.nodes}
        for c in definition.connections:
            incoming[c.target].append(c)
        return cls(
            definition=definition,
            graph=graph,
            trigger=definition.trigger.id,
            order=graph.topological_order(),
            anc=ancestors(graph),
            effectful={n.id for n in definition.nodes if side_effect(n)},
            incoming=incoming,
            sinks={n for n in graph.nodes if not graph.successors[n]},
        )

    def needs(self, v: str, reasons: dict[str, str]) -> set[str]:
        """The steps ``v`` must still run after (its original predecessors when it is kept
        as it is; a reason is recorded for a node found to need that)."""
        original = {c.source for c in self.incoming[v]}
        if v in reasons:
            return original
        found = reads(self.definition.node(v))
        if found is None:
            reasons[v] = "reads steps without naming them"
            return original
        if not found <= self.anc[v] | {v}:
            reasons[v] = "reads a step that does not run before it"
            return original
        need = set(found) - {v}
        need |= {c.source for c in self.incoming[v] if c.ordered}
        need |= self.anc[v] & self.effectful
        if v in self.effectful:
            need |= self.anc[v]
        need.discard(self.trigger)
        return need or {self.trigger}

    def join_new_sinks(self, preds: dict[str, set[str]], reasons: dict[str, str]) -> None:
        """A step that would become a sink would add its output to the execution's: join it
        to one of its original descendants (an original sink if it can)."""
        successors: dict[str, set[str]] = {n: set() for n in self.graph.nodes}
        for v, ps in preds.items():
            for p in ps:
                successors[p].add(v)
        depth = _depth(self.order, preds)
        for u in self.order:
            if u == self.trigger or successors[u] or u in self.sinks:
                continue
            below = self.graph.reachable_from(u) - {u}
            candidates = [w for w in below if w not in reasons]
            target = max(candidates, key=lambda w: (w in self.sinks, depth[w], w))
            preds[target].add(u)
            successors[u].add(target)


def relax(definition: Definition) -> Relaxation:
    """The graph with every ordering that carries nothing dropped (see the module docstring)."""
    original = tuple(definition.connections)
    if definition.on_failure is FailurePolicy.CONTINUE:
        return Relaxation(original, (), {n.id: "on_failure: continue" for n in definition.nodes})
    g = _Graph.of(definition)
    reasons = frozen_nodes(definition, g.graph)
    while True:
        preds = {v: g.needs(v, reasons) for v in g.order if v != g.trigger}
        new_anc = _ancestors_of(g.order, preds)
        for v in g.order:  # transitive reduction of the relaxed nodes' predecessors
            if v in preds and v not in reasons and len(preds[v]) > 1:
                ps = preds[v]
                preds[v] = {p for p in ps if not any(p in new_anc[q] for q in ps if q != p)}
        g.join_new_sinks(preds, reasons)
        new_anc = _ancestors_of(g.order, preds)
        lost = [
            v
            for v in g.order
            if (v in reasons or v in g.effectful) and not g.anc[v] <= new_anc.get(v, set())
        ]
        if not lost:
            break
        for v in lost:  # keep the orderings above a node that must keep all of them
            for a in g.anc[v] | {v}:
                reasons.setdefault(a, f"above {v}, which keeps every step before it")
    connections = _connections(original, g.order, preds)
    dropped = tuple(
        (a, b) for b in g.order for a in sorted(g.anc[b]) if a != g.trigger and a not in new_anc[b]
    )
    kept = {n: r for n, r in reasons.items() if n != g.trigger}
    return Relaxation(connections, dropped, kept)


def _ancestors_of(order: list[str], preds: dict[str, set[str]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for v in order:
        mine: set[str] = set()
        for p in preds.get(v, ()):
            mine |= found.get(p, set()) | {p}
        found[v] = mine
    return found


def _depth(order: list[str], preds: dict[str, set[str]]) -> dict[str, int]:
    depth: dict[str, int] = {}
    for v in order:
        depth[v] = 1 + max((depth[p] for p in preds.get(v, ())), default=0)
    return depth


def _connections(
    original: tuple[Connection, ...], order: list[str], preds: dict[str, set[str]]
) -> tuple[Connection, ...]:
    """The relaxed edges, keeping each original edge's own attributes where it survives."""
    by_pair = {(c.source, c.target): c for c in original}
    out: list[Connection] = []
    for v in order:
        for p in sorted(preds.get(v, ()), key=order.index):
            out.append(by_pair.get((p, v), Connection(p, v)))
    return tuple(out)
