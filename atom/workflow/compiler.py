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

from dataclasses import dataclass
from itertools import compress
from typing import Any

from atom.workflow.definition import Definition, NodeType
from atom.workflow.graph import Graph


@dataclass(frozen=True)
class Block:
    """A decomposition node: a step, a series of blocks or a parallel set of blocks."""

    kind: str  # "step" | "series" | "parallel"
    node: str | None = None
    parts: tuple[Block, ...] = ()


_FLAGS = bytes.maketrans(b"01", b"\x00\x01")


def _bits(mask: int) -> list[int]:
    """The positions of the set bits of ``mask``, lowest first. A mask with many bits is
    read from its binary text by ``itertools.compress`` (in C); a sparse one bit by bit."""
    if mask.bit_count() > 8:
        flags = bin(mask)[:1:-1].encode().translate(_FLAGS)
        return list(compress(range(len(flags)), flags))
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


class _Decomposer:
    """Decomposes ``graph`` working on sets of node positions, never copying the graph.

    A node's position is its rank in the graph's topological order (ties by definition
    order), so the topological order of any part is its bits, lowest first, and lists come
    out in that order without sorting. Every part the recursion meets is convex (a path
    between two of its nodes stays in it: a prefix or suffix of a topological order, or a
    connected part of such), so reachability inside a part is the whole graph's, restricted:
    ancestors and descendants are computed once as bitsets, and each part costs time linear
    in its nodes and edges. Choosing the split is incremental: moving node ``v`` from the
    after side to the before side removes the orderings its non-ancestors had to it and adds
    the ones it lacks to the rest.
    """

    def __init__(self, graph: Graph):
        names = self.names = graph.topological_order()
        position = {n: i for i, n in enumerate(names)}
        declared = {n: i for i, n in enumerate(graph.nodes)}
        self.declared = [declared[n] for n in names]
        self.succ = [[position[w] for w in graph.successors[n]] for n in names]
        size = len(names)
        self.pred_mask = [0] * size
        self.adjacent = [0] * size
        for i, targets in enumerate(self.succ):
            for j in targets:
                self.pred_mask[j] |= 1 << i
                self.adjacent[i] |= 1 << j
                self.adjacent[j] |= 1 << i
        self.desc = [0] * size
        for i in reversed(range(size)):
            mask = 0
            for j in self.succ[i]:
                mask |= (1 << j) | self.desc[j]
            self.desc[i] = mask
        self.anc = [0] * size
        for i in range(size):
            mask = 0
            for j in _bits(self.pred_mask[i]):
                mask |= (1 << j) | self.anc[j]
            self.anc[i] = mask
        self.barriers: list[dict[str, Any]] = []

    def decompose(self, part: int) -> Block:
        """The block of the nodes in the bitset ``part`` (a series is walked in a loop, so
        a long chain does not nest the recursion)."""
        series: list[Block] = []
        while True:
            pieces = self._components(part)
            if len(pieces) > 1:
                block = Block("parallel", parts=tuple(map(self.decompose, pieces)))
            elif part & (part - 1) == 0:
                block = Block("step", node=self.names[part.bit_length() - 1])
            else:
                before, part = self._split(part)
                first = self.decompose(before)
                series.extend(first.parts if first.kind == "series" else (first,))
                continue
            if not series:
                return block
            series.append(block)
            return Block("series", parts=tuple(series))

    def _components(self, part: int) -> list[int]:
        """Weakly connected parts of ``part``, ordered by their first node in the definition."""
        pieces = []
        remaining = part
        adjacent = self.adjacent
        while remaining:
            piece = frontier = remaining & -remaining
            while frontier:
                grown = 0
                for i in _bits(frontier):
                    grown |= adjacent[i]
                frontier = grown & part & ~piece
                piece |= frontier
            pieces.append(piece)
            remaining &= ~piece
        if len(pieces) > 1:
            declared = self.declared
            pieces.sort(key=lambda piece: min(declared[i] for i in _bits(piece)))
        return pieces

    def _split(self, part: int) -> tuple[int, int]:
        """The first exact series split of a connected part, else the least costly barrier."""
        order = _bits(part)
        size = len(order)
        anc, desc = self.anc, self.desc
        added, best, best_k = 0, -1, 0
        for k in range(1, size):
            v = order[k - 1]  # moves to the before side
            added += size - 2 * k + 1 + (anc[v] & part).bit_count() - (desc[v] & part).bit_count()
            if added == 0:
                best_k = k
                break
            if best < 0 or added < best:
                best, best_k = added, k
        before_nodes, after_nodes = order[:best_k], order[best_k:]
        before = part & ((1 << order[best_k]) - 1)
        after = part & ~before
        if added != 0:
            names = self.names
            self.barriers.append(
                {
                    "after": [names[i] for i in before_nodes if not desc[i] & before],
                    "before": [names[i] for i in after_nodes if not anc[i] & after],
                    "orderings_added": [
                        [names[a], names[b]]
                        for a in before_nodes
                        if (missing := after & ~desc[a])
                        for b in _bits(missing)
                    ],
                }
            )
        return before, after


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
    decomposer = _Decomposer(graph)
    finalize = {"type": "finalize"}
    if not graph.nodes:
        canvas = {"type": "chain", "tasks": [finalize]}
    else:
        block = decomposer.decompose((1 << len(graph.nodes)) - 1)
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
