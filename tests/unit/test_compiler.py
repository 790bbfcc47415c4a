"""The compiler turns any DAG into a plan that never starts a node before its predecessors."""

from __future__ import annotations

import json
from itertools import count
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atom.workflow.compiler import compile_graph, compile_plan, plan_order
from atom.workflow.definition import parse_definition
from atom.workflow.graph import Graph

FINALIZE = {"type": "finalize"}


def step(node: str) -> dict[str, Any]:
    return {"type": "step", "node": node}


def chain(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"type": "chain", "tasks": list(tasks)}


def chord(header: list[dict[str, Any]], body: dict[str, Any]) -> dict[str, Any]:
    return {"type": "chord", "header": header, "body": body}


def compile_edges(nodes: str | list[str], edges: list[str]) -> dict[str, Any]:
    """Compile nodes ("abc") and edges ("ab", "bc") written as two-letter strings."""
    return compile_graph(Graph(list(nodes), [(e[0], e[1]) for e in edges]))


def finished_before(plan: dict[str, Any]) -> dict[str, set[str]]:
    order = plan_order(plan["canvas"])
    return {node: set(before) for node, *before in order}


def ancestors(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, set[str]]:
    """Every node's ancestors, computed independently of atom.graph."""
    preds: dict[str, set[str]] = {n: set() for n in nodes}
    for a, b in edges:
        preds[b].add(a)
    result: dict[str, set[str]] = {}

    def visit(n: str) -> set[str]:
        if n not in result:
            found: set[str] = set()
            for p in preds[n]:
                found |= {p} | visit(p)
            result[n] = found
        return result[n]

    for n in nodes:
        visit(n)
    return result


def last_task(tree: dict[str, Any]) -> dict[str, Any]:
    """The task that runs last in ``tree``: the end of a chain, the body of a chord."""
    if tree["type"] == "chain":
        return last_task(tree["tasks"][-1])
    if tree["type"] == "chord":
        return last_task(tree["body"])
    return tree


def check_shape(tree: dict[str, Any]) -> None:
    """Structural rules of the plan format (see the compiler module docstring)."""
    assert tree["type"] == "chain", "the root of a canvas is a chain"
    assert last_task(tree) == FINALIZE
    seen: dict[str, int] = {"finalize": 0}

    def walk(t: dict[str, Any], followed: bool) -> None:
        kind = t["type"]
        if kind == "step":
            seen[t["node"]] = seen.get(t["node"], 0) + 1
        elif kind == "finalize":
            seen["finalize"] += 1
            assert not followed, "finalize is the last task"
        elif kind == "chain":
            assert t["tasks"], "an empty chain"
            for i, task in enumerate(t["tasks"]):
                walk(task, followed or i < len(t["tasks"]) - 1)
        elif kind == "chord":
            assert t["header"], "a chord without a header"
            for task in t["header"]:
                walk(task, False)
            walk(t["body"], followed)
        elif kind == "group":
            assert not followed, "a group followed by more work must be a chord"
            assert len(t["tasks"]) >= 2
            for task in t["tasks"]:
                walk(task, False)
        else:
            raise AssertionError(f"unknown plan node {kind!r}")

    walk(tree, False)
    assert seen.pop("finalize") == 1
    assert all(times == 1 for times in seen.values()), seen


# --- hand shapes -------------------------------------------------------------------------


def test_empty_graph_is_just_finalize():
    plan = compile_graph(Graph([], []))
    assert plan == {
        "canvas": chain(FINALIZE),
        "barriers_added": [],
        "series_parallel": True,
        "steps": 0,
    }


def test_single_node():
    plan = compile_edges("a", [])
    assert plan == {
        "canvas": chain(step("a"), FINALIZE),
        "barriers_added": [],
        "series_parallel": True,
        "steps": 1,
    }


def test_chain():
    plan = compile_edges("abc", ["ab", "bc"])
    assert plan["canvas"] == chain(step("a"), step("b"), step("c"), FINALIZE)
    assert plan["series_parallel"] is True
    assert plan["barriers_added"] == []
    assert plan["steps"] == 3


def test_chain_listed_out_of_order_still_runs_in_edge_order():
    plan = compile_edges("cab", ["ab", "bc"])
    assert plan["canvas"] == chain(step("a"), step("b"), step("c"), FINALIZE)


def test_diamond_is_a_chord():
    plan = compile_edges("abcd", ["ab", "ac", "bd", "cd"])
    assert plan["canvas"] == chain(
        step("a"), chord([step("b"), step("c")], chain(step("d"), FINALIZE))
    )
    assert plan["series_parallel"] is True
    assert plan["barriers_added"] == []


def test_wide_fan_out_with_three_branches():
    plan = compile_edges("abcde", ["ab", "ac", "ad", "be", "ce", "de"])
    assert plan["canvas"] == chain(
        step("a"), chord([step("b"), step("c"), step("d")], chain(step("e"), FINALIZE))
    )
    assert plan["series_parallel"] is True


def test_branches_of_different_lengths_join():
    plan = compile_edges("abcde", ["ab", "bc", "ad", "ce", "de"])
    assert plan["canvas"] == chain(
        step("a"), chord([chain(step("b"), step("c")), step("d")], chain(step("e"), FINALIZE))
    )
    assert plan["barriers_added"] == []


def test_nested_diamonds():
    # a -> (b -> (c | d) -> e | f) -> g
    plan = compile_edges("abcdefg", ["ab", "af", "bc", "bd", "ce", "de", "eg", "fg"])
    inner = chain(step("b"), chord([step("c"), step("d")], step("e")))
    assert plan["canvas"] == chain(step("a"), chord([inner, step("f")], chain(step("g"), FINALIZE)))
    assert plan["series_parallel"] is True
    assert plan["barriers_added"] == []


def test_two_independent_chains_run_in_parallel():
    plan = compile_edges("abcd", ["ab", "cd"])
    assert plan["canvas"] == chain(
        chord([chain(step("a"), step("b")), chain(step("c"), step("d"))], FINALIZE)
    )
    assert plan["series_parallel"] is True
    order = finished_before(plan)
    assert order == {"a": set(), "b": {"a"}, "c": set(), "d": {"c"}}


def test_independent_single_nodes():
    plan = compile_edges("abc", [])
    assert plan["canvas"] == chain(chord([step("a"), step("b"), step("c")], FINALIZE))
    assert plan["series_parallel"] is True


def test_fan_out_whose_branches_never_join():
    plan = compile_edges("abc", ["ab", "ac"])
    assert plan["canvas"] == chain(step("a"), chord([step("b"), step("c")], FINALIZE))
    assert plan["series_parallel"] is True
    assert plan["barriers_added"] == []


def test_fan_in_from_independent_starts():
    plan = compile_edges("abc", ["ac", "bc"])
    assert plan["canvas"] == chain(chord([step("a"), step("b")], chain(step("c"), FINALIZE)))
    assert plan["series_parallel"] is True


def test_n_shape_needs_one_barrier():
    # a -> c, b -> c, b -> d: no series or parallel split exists.
    plan = compile_edges("abcd", ["ac", "bc", "bd"])
    assert plan["series_parallel"] is False
    assert plan["barriers_added"] == [
        {"after": ["a", "b"], "before": ["c", "d"], "orderings_added": [["a", "d"]]}
    ]
    assert plan["canvas"] == chain(
        chord([step("a"), step("b")], chord([step("c"), step("d")], FINALIZE))
    )
    assert finished_before(plan) == {"a": set(), "b": set(), "c": {"a", "b"}, "d": {"a", "b"}}


def test_w_shape_needs_a_barrier_with_two_orderings():
    # a -> d, b -> d, b -> e, c -> e
    plan = compile_edges("abcde", ["ad", "bd", "be", "ce"])
    assert plan["series_parallel"] is False
    assert plan["barriers_added"] == [
        {
            "after": ["a", "b", "c"],
            "before": ["d", "e"],
            "orderings_added": [["a", "e"], ["c", "d"]],
        }
    ]
    assert plan["canvas"] == chain(
        chord([step("a"), step("b"), step("c")], chord([step("d"), step("e")], FINALIZE))
    )


def test_bridge_with_a_transitive_rung_is_a_chain():
    # s -> a, s -> b, a -> b, a -> t, b -> t: the rung a -> b orders everything.
    plan = compile_edges("sabt", ["sa", "sb", "ab", "at", "bt"])
    assert plan["canvas"] == chain(step("s"), step("a"), step("b"), step("t"), FINALIZE)
    assert plan["series_parallel"] is True


def test_bridge_with_a_crossing_rung_needs_a_barrier():
    # s -> a -> c -> t, s -> b -> d -> t, plus the rung a -> d: an N inside (a, b, c, d).
    plan = compile_edges("sabcdt", ["sa", "sb", "ac", "bd", "ad", "ct", "dt"])
    assert plan["series_parallel"] is False
    assert plan["barriers_added"] == [
        {"after": ["a"], "before": ["b", "c"], "orderings_added": [["a", "b"]]}
    ]
    assert plan["canvas"] == chain(
        step("s"),
        step("a"),
        chord([chain(step("b"), step("d")), step("c")], chain(step("t"), FINALIZE)),
    )
    order = finished_before(plan)
    assert order["b"] == {"s", "a"}
    assert order["t"] == {"s", "a", "b", "c", "d"}


def test_barrier_names_the_sinks_and_sources_it_joins():
    # a -> b, a -> e, c -> d -> e: e joins a and d, while the branch a -> b ends on its own.
    plan = compile_edges("abcde", ["ab", "ae", "cd", "de"])
    assert plan["series_parallel"] is False
    assert plan["barriers_added"] == [
        {"after": ["b", "d"], "before": ["e"], "orderings_added": [["b", "e"]]}
    ]
    assert plan["canvas"] == chain(
        chord(
            [chain(step("a"), step("b")), chain(step("c"), step("d"))], chain(step("e"), FINALIZE)
        )
    )


def test_two_n_shapes_in_parallel_each_get_a_barrier():
    plan = compile_edges("abcdwxyz", ["ac", "bc", "bd", "wy", "xy", "xz"])
    assert plan["series_parallel"] is False
    assert [b["orderings_added"] for b in plan["barriers_added"]] == [[["a", "d"]], [["w", "z"]]]
    check_shape(plan["canvas"])


@pytest.mark.parametrize(
    "nodes, edges",
    [
        ("a", []),
        ("abc", ["ab", "bc"]),
        ("abcd", ["ab", "ac", "bd", "cd"]),
        ("abcd", ["ab", "cd"]),
        ("abc", ["ab", "ac"]),
        ("abcd", ["ac", "bc", "bd"]),
        ("abcde", ["ad", "bd", "be", "ce"]),
        ("abcdwxyz", ["ac", "bc", "bd", "wy", "xy", "xz"]),
    ],
)
def test_every_canvas_ends_with_finalize(nodes, edges):
    plan = compile_edges(nodes, edges)
    assert plan["canvas"]["type"] == "chain"
    last = plan["canvas"]["tasks"][-1]
    assert last == FINALIZE or (last["type"] == "chord" and last_task(last["body"]) == FINALIZE)
    check_shape(plan["canvas"])


def test_plan_is_json():
    plan = compile_edges("abcde", ["ad", "bd", "be", "ce"])
    assert json.loads(json.dumps(plan)) == plan


def test_plan_order_rejects_an_unknown_plan_node():
    with pytest.raises(ValueError, match="teleport"):
        plan_order({"type": "chain", "tasks": [{"type": "teleport"}]})


def test_compile_plan_leaves_out_the_trigger():
    definition = parse_definition(
        {
            "name": "two steps",
            "nodes": [
                {"id": "start", "type": "trigger"},
                {"id": "a", "type": "action", "config": {"action_type": "log", "message": "a"}},
                {"id": "b", "type": "action", "config": {"action_type": "log", "message": "b"}},
            ],
            "connections": [{"source": "start", "target": "a"}, {"source": "a", "target": "b"}],
        }
    )
    plan = compile_plan(definition)
    assert plan["steps"] == 2
    assert plan["canvas"] == chain(step("a"), step("b"), FINALIZE)
    assert "start" not in {node for node, *_ in plan_order(plan["canvas"])}


def test_compile_plan_trigger_fan_out_becomes_parallel_branches():
    definition = parse_definition(
        {
            "name": "fan out",
            "nodes": [
                {"id": "start", "type": "trigger"},
                {"id": "a", "type": "action", "config": {"action_type": "log", "message": "a"}},
                {"id": "b", "type": "action", "config": {"action_type": "log", "message": "b"}},
            ],
            "connections": [{"source": "start", "target": "a"}, {"source": "start", "target": "b"}],
        }
    )
    plan = compile_plan(definition)
    assert plan["canvas"] == chain(chord([step("a"), step("b")], FINALIZE))
    assert plan["steps"] == 2


# --- properties over random graphs ---------------------------------------------------------


@st.composite
def dags(draw) -> tuple[list[str], list[tuple[str, str]]]:
    """A random DAG: edges only from a lower to a higher index, nodes listed shuffled."""
    n = draw(st.integers(1, 12))
    density = draw(st.integers(0, 100))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    rolls = draw(st.lists(st.integers(0, 99), min_size=len(pairs), max_size=len(pairs)))
    edges = [
        (f"n{i}", f"n{j}") for (i, j), roll in zip(pairs, rolls, strict=True) if roll < density
    ]
    nodes = draw(st.permutations([f"n{i}" for i in range(n)]))
    return list(nodes), edges


SP_TREES = st.recursive(
    st.just("leaf"),
    lambda children: st.tuples(
        st.sampled_from(["series", "parallel"]), st.lists(children, min_size=2, max_size=3)
    ),
    max_leaves=12,
)


def build_sp(tree: Any, names: count) -> tuple[list[str], list[tuple[str, str]]]:
    """Nodes and edges of a series-parallel composition tree."""
    if tree == "leaf":
        return [f"n{next(names)}"], []
    kind, children = tree
    nodes, edges = build_sp(children[0], names)
    for child in children[1:]:
        more_nodes, more_edges = build_sp(child, names)
        if kind == "series":
            sinks = [n for n in nodes if not any(a == n for a, _ in edges)]
            sources = [n for n in more_nodes if not any(b == n for _, b in more_edges)]
            edges = edges + more_edges + [(a, b) for a in sinks for b in sources]
        else:
            edges = edges + more_edges
        nodes = nodes + more_nodes
    return nodes, edges


@st.composite
def sp_graphs(draw) -> tuple[list[str], list[tuple[str, str]]]:
    nodes, edges = build_sp(draw(SP_TREES), count())
    return list(draw(st.permutations(nodes))), edges


def transitive_pairs(nodes: list[str], edges: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(a, b) for b, before in ancestors(nodes, edges).items() for a in before}


def has_induced_n(nodes: list[str], edges: list[tuple[str, str]]) -> bool:
    """True when four nodes are ordered exactly a < c, b < c, b < d (the N poset)."""
    less = transitive_pairs(nodes, edges)

    def comparable(x: str, y: str) -> bool:
        return (x, y) in less or (y, x) in less

    for b, c in less:
        for a in nodes:
            if (a, c) not in less or a in (b, c) or comparable(a, b):
                continue
            for d in nodes:
                if (
                    (b, d) in less
                    and d not in (a, c)
                    and not comparable(c, d)
                    and not comparable(a, d)
                ):
                    return True
    return False


@settings(max_examples=200, deadline=None)
@given(dags())
def test_every_dag_compiles_to_a_correct_plan(graph):
    nodes, edges = graph
    plan = compile_graph(Graph(nodes, edges))
    check_shape(plan["canvas"])
    order = plan_order(plan["canvas"])

    # (a) every node runs exactly once
    assert sorted(node for node, *_ in order) == sorted(nodes)
    assert plan["steps"] == len(nodes)

    # (b) no node starts before all of its predecessors have finished
    before = {node: set(rest) for node, *rest in order}
    for a, b in edges:
        assert a in before[b], f"{b} may start before its predecessor {a}"

    # (e) barriers only add orderings the graph does not already imply, and nothing else
    graph_ancestors = ancestors(nodes, edges)
    implied = transitive_pairs(nodes, edges)
    added = [
        tuple(pair) for barrier in plan["barriers_added"] for pair in barrier["orderings_added"]
    ]
    for a, b in added:
        assert a != b
        assert (a, b) not in implied and (b, a) not in implied
    for barrier in plan["barriers_added"]:
        assert barrier["orderings_added"], "a barrier that adds nothing"
        for side in (barrier["after"], barrier["before"]):  # sinks / sources: antichains
            assert side
            assert not any((x, y) in implied for x in side for y in side)
        for a in barrier["after"]:
            for b in barrier["before"]:
                assert a in before[b]
    assert plan["series_parallel"] is (plan["barriers_added"] == [])
    with_barriers = ancestors(nodes, edges + added)
    for node in nodes:
        assert before[node] >= graph_ancestors[node]
        assert before[node] == with_barriers[node]
        if not plan["barriers_added"]:
            assert before[node] == graph_ancestors[node]

    # a barrier is needed exactly when the graph's order contains an N
    assert plan["series_parallel"] is not has_induced_n(nodes, edges)


@settings(max_examples=200, deadline=None)
@given(sp_graphs())
def test_series_parallel_graphs_compile_exactly(graph):
    nodes, edges = graph
    plan = compile_graph(Graph(nodes, edges))
    check_shape(plan["canvas"])

    # (c) no barrier
    assert plan["barriers_added"] == []
    assert plan["series_parallel"] is True

    # (d) each node waits for exactly its ancestors, no more
    order = plan_order(plan["canvas"])
    assert sorted(node for node, *_ in order) == sorted(nodes)
    graph_ancestors = ancestors(nodes, edges)
    for node, *before in order:
        assert set(before) == graph_ancestors[node], node


def big_random_dag(n: int, m: int, seed: int) -> tuple[list[str], list[tuple[str, str]]]:
    """``n`` nodes in one connected part, ``m`` distinct edges forward in a shuffled order."""
    import random

    rng = random.Random(seed)
    nodes = [f"s{i}" for i in range(n)]
    order = nodes[:]
    rng.shuffle(order)
    edges = {(order[rng.randrange(j)], order[j]) for j in range(1, n)}
    while len(edges) < m:
        i, j = sorted(rng.sample(range(n), 2))
        edges.add((order[i], order[j]))
    return nodes, sorted(edges)


@pytest.mark.parametrize("edges_count", [3000, 4400])
def test_the_largest_accepted_workflow_compiles_correctly_and_quickly(edges_count):
    # issue 9: a 500-node DAG with a few thousand edges took 9-11 s inside POST /workflows.
    # Timings live in bench/compile_dag.py; the bound here only guards a regression.
    import time

    nodes, edges = big_random_dag(499, edges_count, seed=edges_count)
    targets = {b for _, b in edges}
    doc = {
        "name": "big",
        "nodes": [{"id": "start", "type": "trigger", "config": {"kind": "manual"}}]
        + [
            {"id": n, "type": "action", "config": {"action_type": "log", "message": n}}
            for n in nodes
        ],
        "connections": [{"source": "start", "target": n} for n in nodes if n not in targets]
        + [{"source": a, "target": b} for a, b in edges],
    }
    started = time.perf_counter()
    plan = compile_plan(parse_definition(doc))
    took = time.perf_counter() - started
    check_shape(plan["canvas"])
    order = plan_order(plan["canvas"])
    assert sorted(node for node, *_ in order) == sorted(nodes)
    before = {node: set(rest) for node, *rest in order}
    for a, b in edges:
        assert a in before[b], f"{b} may start before its predecessor {a}"
    implied = transitive_pairs(nodes, edges)
    for barrier in plan["barriers_added"]:
        assert barrier["orderings_added"]
        for a, b in barrier["orderings_added"]:
            assert (a, b) not in implied and (b, a) not in implied and a in before[b]
    assert plan["series_parallel"] is False and plan["steps"] == 499
    assert took < 5, f"compiling took {took:.1f} s"
