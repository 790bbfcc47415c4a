"""How long compiling a workflow takes as its graph grows (issue 9: "under a second").

Random DAGs, seeded: ``n`` step nodes, ``m`` edges drawn uniformly among the pairs ``i < j``
of a shuffled order (so most are not series-parallel and the compiler must add barriers),
plus a series-parallel fan-out/fan-in ladder of the same size. Prints, per graph, the time of
``compile_graph`` alone and of ``parse_definition`` + ``compile_plan`` (what ``POST
/api/workflows`` does), best of ``--repeat`` runs.

    .venv/bin/python bench/compile_dag.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atom.workflow.compiler import compile_graph, compile_plan
from atom.workflow.definition import MAX_NODES, parse_definition
from atom.workflow.graph import Graph


def random_dag(n: int, m: int, seed: int) -> tuple[list[str], list[tuple[str, str]]]:
    """``n`` nodes, ``m`` distinct forward edges of a random order, every node connected."""
    rng = random.Random(seed)
    nodes = [f"s{i}" for i in range(n)]
    order = nodes[:]
    rng.shuffle(order)
    edges: set[tuple[str, str]] = set()
    for j in range(1, n):  # a random earlier parent for each node: one connected part
        edges.add((order[rng.randrange(j)], order[j]))
    while len(edges) < m:
        i, j = sorted(rng.sample(range(n), 2))
        edges.add((order[i], order[j]))
    return nodes, sorted(edges)


def ladder(n: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Series-parallel: rungs of 8 parallel nodes joined by a single node, ``n`` nodes."""
    nodes = [f"s{i}" for i in range(n)]
    edges, previous, i = [], None, 0
    while i < n:
        join = nodes[i]
        if previous:
            edges += [(p, join) for p in previous]
        i += 1
        rung = nodes[i : i + 8]
        edges += [(join, r) for r in rung]
        previous, i = rung or [join], i + 8
    return nodes, edges


def document(nodes: list[str], edges: list[tuple[str, str]]) -> dict:
    """A workflow definition: a manual trigger before every source, log steps."""
    targets = {b for _, b in edges}
    return {
        "name": "bench",
        "nodes": [{"id": "start", "type": "trigger", "config": {"kind": "manual"}}]
        + [
            {"id": n, "type": "action", "config": {"action_type": "log", "message": n}}
            for n in nodes
        ],
        "connections": [{"source": "start", "target": n} for n in nodes if n not in targets]
        + [{"source": a, "target": b} for a, b in edges],
    }


def best(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU time (this process) of ``repeat`` runs: on a shared,
    loaded machine the CPU time is the steadier figure."""
    walls, cpus = [], []
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sizes", default="100:600,250:1500,499:3000,499:4400,1000:6000")
    args = parser.parse_args()
    cases = []
    for size in args.sizes.split(","):
        n, m = (int(x) for x in size.split(":"))
        cases.append((f"random n={n} m={m}", *random_dag(n, m, seed=n * 7 + m)))
    cases.append(("ladder n=499", *ladder(499)))
    print(
        f"{'graph':<26} {'edges':>6} {'barriers':>8} {'compile_graph s':>16} "
        f"{'parse+plan s':>13} {'parse+plan cpu s':>17}"
    )
    for name, nodes, edges in cases:
        graph = Graph(nodes, edges)
        plan = compile_graph(graph)
        t_graph, _ = best(lambda g=graph: compile_graph(g), args.repeat)
        doc = document(nodes, edges)
        accepted = len(nodes) < MAX_NODES  # the trigger is the 500th node
        t_post, c_post = (
            best(lambda d=doc: compile_plan(parse_definition(d)), args.repeat)
            if accepted
            else (None, None)
        )
        print(
            f"{name:<26} {len(edges):>6} {len(plan['barriers_added']):>8} "
            f"{t_graph:>16.3f} {'too big' if t_post is None else f'{t_post:.3f}':>13} "
            f"{'-' if c_post is None else f'{c_post:.3f}':>17}"
        )


if __name__ == "__main__":
    main()
