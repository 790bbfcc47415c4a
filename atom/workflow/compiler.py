"""Compile a workflow graph into a plan: a tree of chains, chords and steps.

Pure functions, no I/O, no Celery: ``atom.dispatch`` turns a plan into a Celery canvas.

A graph is decomposed recursively. Disconnected parts run in parallel (a group); a connected
part is split in series ``A ; B`` where every node of ``A`` already reaches every node of ``B``,
so the split adds no ordering the graph does not have. Series-parallel graphs decompose fully
this way and compile exactly. Any other DAG has a connected part with no such split; there the
compiler picks the split (a prefix of a topological order) that adds the fewest orderings the
graph did not have, and lists it in ``barriers_added``. The result is always correct: no node
can start before all of its predecessors have finished.

Plan JSON::

    {"canvas": TREE, "barriers_added": [{"after": [...], "before": [...],
                                         "orderings_added": [[a, b], ...]}],
     "series_parallel": bool, "steps": int}
    TREE := {"type": "step", "node": id}
          | {"type": "chain", "tasks": [TREE, ...]}
          | {"type": "chord", "header": [TREE, ...], "body": TREE}
          | {"type": "group", "tasks": [TREE, ...]}     # only as the last task of a branch
          | {"type": "finalize"}                         # always the last task of the canvas
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from atom.workflow.definition import Definition, NodeType
from atom.workflow.graph import Graph


@dataclass(frozen=True)
class Block:
    """A decomposition node: a step, a series of blocks or a parallel set of blocks."""

    kind: str  # "step" | "series" | "parallel"
    node: str | None = None
    parts: tuple[Block, ...] = ()


@dataclass
class _Decomposer:
    barriers: list[dict[str, Any]] = field(default_factory=list)

    def decompose(self, graph: Graph) -> Block:
        parts = graph.components()
        if len(parts) > 1:
            return Block("parallel", parts=tuple(self.decompose(graph.subgraph(p)) for p in parts))
        if len(graph.nodes) == 1:
            return Block("step", node=graph.nodes[0])
        before, after = self._split(graph)
        blocks: list[Block] = []
        for side in (before, after):
            block = self.decompose(graph.subgraph(side))
            blocks.extend(block.parts if block.kind == "series" else (block,))
        return Block("series", parts=tuple(blocks))

    def _split(self, graph: Graph) -> tuple[list[str], list[str]]:
        """The first exact series split of a connected graph, else the least costly barrier."""
        order = graph.topological_order()
        reach = graph.descendants_bits()
        position = {n: i for i, n in enumerate(graph.nodes)}
        best: tuple[int, int] | None = None  # (orderings added, k)
        for k in range(1, len(order)):
            after_mask = 0
            for n in order[k:]:
                after_mask |= 1 << position[n]
            added = sum(bin(after_mask & ~reach[a]).count("1") for a in order[:k])
            if added == 0:
                return order[:k], order[k:]
            if best is None or added < best[0]:
                best = (added, k)
        assert best is not None  # a connected graph has at least two nodes here
        k = best[1]
        before, after = order[:k], order[k:]
        self.barriers.append(
            {
                "after": _sinks(graph, before),
                "before": _sources(graph, after),
                "orderings_added": [
                    [a, b] for a in before for b in after if not reach[a] >> position[b] & 1
                ],
            }
        )
        return before, after


def _sinks(graph: Graph, part: list[str]) -> list[str]:
    inside = set(part)
    return [n for n in part if not any(s in inside for s in graph.successors[n])]


def _sources(graph: Graph, part: list[str]) -> list[str]:
    inside = set(part)
    return [n for n in part if not any(p in inside for p in graph.predecessors[n])]


def _tree(block: Block) -> dict[str, Any]:
    if block.kind == "step":
        return {"type": "step", "node": block.node}
    if block.kind == "parallel":
        return {"type": "group", "tasks": [_tree(p) for p in block.parts]}
    return _chain(list(block.parts))


def _chain(parts: list[Block], tail: dict[str, Any] | None = None) -> dict[str, Any]:
    """A series as a chain, each parallel block followed by more work becoming a chord."""
    acc = tail
    for part in reversed(parts):
        if part.kind == "parallel" and acc is not None:
            acc = {"type": "chord", "header": [_tree(p) for p in part.parts], "body": acc}
            continue
        head = _tree(part)
        if acc is None:
            acc = head
        else:
            rest = acc["tasks"] if acc["type"] == "chain" else [acc]
            acc = {"type": "chain", "tasks": [head, *rest]}
    assert acc is not None
    if acc["type"] != "chain":
        acc = {"type": "chain", "tasks": [acc]}
    return acc


def compile_graph(graph: Graph) -> dict[str, Any]:
    """The plan for running every node of ``graph`` and then ``finalize``."""
    decomposer = _Decomposer()
    finalize = {"type": "finalize"}
    if not graph.nodes:
        canvas = {"type": "chain", "tasks": [finalize]}
    else:
        block = decomposer.decompose(graph)
        parts = list(block.parts) if block.kind == "series" else [block]
        canvas = _chain(parts, tail=finalize)
    return {
        "canvas": canvas,
        "barriers_added": decomposer.barriers,
        "series_parallel": not decomposer.barriers,
        "steps": len(graph.nodes),
    }


def step_graph(definition: Definition) -> Graph:
    """The graph of the nodes that run as tasks: every node but the trigger."""
    return definition.graph().subgraph(
        n.id for n in definition.nodes if n.type is not NodeType.TRIGGER
    )


def compile_plan(definition: Definition) -> dict[str, Any]:
    """The plan for a whole validated definition."""
    return compile_graph(step_graph(definition))


def plan_order(tree: dict[str, Any]) -> list[list[str]]:
    """Simulate a plan: the steps of ``tree`` as waves, in an order the canvas allows.

    Returns, for each step, the set of steps guaranteed finished before it starts, as
    ``[[node, *finished_before], ...]``; used by tests to check that the plan never starts a
    node before its predecessors.
    """
    result: list[list[str]] = []

    def walk(t: dict[str, Any], done: frozenset[str]) -> frozenset[str]:
        kind = t["type"]
        if kind == "step":
            result.append([t["node"], *sorted(done)])
            return done | {t["node"]}
        if kind == "finalize":
            return done
        if kind == "chain":
            for task in t["tasks"]:
                done = walk(task, done)
            return done
        if kind in ("group", "chord"):
            finished = done
            for task in t["tasks" if kind == "group" else "header"]:
                finished |= walk(task, done)
            return walk(t["body"], finished) if kind == "chord" else finished
        raise ValueError(f"unknown plan node {kind!r}")

    walk(tree, frozenset())
    return result
