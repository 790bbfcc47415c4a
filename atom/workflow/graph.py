"""Directed graphs of node ids: order, cycles, reachability. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class Graph:
    """An immutable directed graph over string node ids, in the order they were given."""

    def __init__(self, nodes: Sequence[str], edges: Iterable[tuple[str, str]]):
        self.nodes: tuple[str, ...] = tuple(nodes)
        self.successors: dict[str, list[str]] = {n: [] for n in self.nodes}
        self.predecessors: dict[str, list[str]] = {n: [] for n in self.nodes}
        for a, b in edges:
            if a in self.successors and b in self.successors and b not in self.successors[a]:
                self.successors[a].append(b)
                self.predecessors[b].append(a)

    def edges(self) -> list[tuple[str, str]]:
        """Every edge, in node order."""
        return [(a, b) for a in self.nodes for b in self.successors[a]]

    def subgraph(self, keep: Iterable[str]) -> Graph:
        """The graph induced by ``keep`` (node order preserved)."""
        kept = set(keep)
        nodes = [n for n in self.nodes if n in kept]
        return Graph(nodes, [(a, b) for a, b in self.edges() if a in kept and b in kept])

    def cycles(self) -> list[list[str]]:
        """One cycle (as a closed node path) for every strongly connected part that has one."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []

        def connect(v: str) -> None:  # Tarjan's algorithm
            index[v] = low[v] = len(index)
            stack.append(v)
            on_stack.add(v)
            for w in self.successors[v]:
                if w not in index:
                    connect(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                part = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    part.append(w)
                    if w == v:
                        break
                if len(part) > 1 or v in self.successors[v]:
                    found.append(self._cycle_within(set(part)))

        for n in self.nodes:
            if n not in index:
                connect(n)
        return found

    def _cycle_within(self, part: set[str]) -> list[str]:
        start = min(part, key=self.nodes.index)
        path, seen, node = [start], {start}, start
        while True:
            node = next(w for w in self.successors[node] if w in part)
            if node in seen:
                return path[path.index(node) :] + [node]
            path.append(node)
            seen.add(node)

    def topological_order(self) -> list[str]:
        """Nodes in an order where every edge points forward (stable: ties by given order)."""
        remaining = {n: len(self.predecessors[n]) for n in self.nodes}
        ready = [n for n in self.nodes if remaining[n] == 0]
        order: list[str] = []
        while ready:
            node = ready.pop(0)
            order.append(node)
            for w in self.successors[node]:
                remaining[w] -= 1
                if remaining[w] == 0:
                    ready.append(w)
        if len(order) != len(self.nodes):
            raise ValueError("graph has a cycle")
        return order

    def reachable_from(self, start: str) -> set[str]:
        """Every node reachable from ``start`` (``start`` included)."""
        seen, todo = {start}, [start]
        while todo:
            for w in self.successors[todo.pop()]:
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    def descendants_bits(self) -> dict[str, int]:
        """For each node, a bitset (by position in ``nodes``) of the nodes it reaches."""
        position = {n: i for i, n in enumerate(self.nodes)}
        bits: dict[str, int] = {}
        for node in reversed(self.topological_order()):
            mask = 0
            for w in self.successors[node]:
                mask |= (1 << position[w]) | bits[w]
            bits[node] = mask
        return bits

    def components(self) -> list[list[str]]:
        """Weakly connected components, each in node order, ordered by first node."""
        seen: set[str] = set()
        parts = []
        for n in self.nodes:
            if n in seen:
                continue
            part, todo = {n}, [n]
            while todo:
                v = todo.pop()
                for w in self.successors[v] + self.predecessors[v]:
                    if w not in part:
                        part.add(w)
                        todo.append(w)
            seen |= part
            parts.append([m for m in self.nodes if m in part])
        return parts
