"""The optimizer's pure analysis: which orderings may go, the critical path, predictions."""

from __future__ import annotations

from typing import Any

import pytest

from atom.errors import DefinitionError
from atom.optimize.dataflow import relax
from atom.optimize.figures import StepFigures
from atom.optimize.predict import (
    join_delays,
    predict,
    step_calls,
    step_duration,
    step_success,
)
from atom.optimize.strategies import Context, analyze
from atom.workflow.definition import RetryPolicy, parse_definition
from atom.workflow.templating import steps_needed


def http(node_id: str, url: str, **config: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "action",
        "config": {"action_type": "http_request", "url": url, **config},
    }


def chain(nodes: list[dict[str, Any]], **extra: Any):
    ids = ["start"] + [n["id"] for n in nodes]
    start = {"id": "start", "type": "trigger", "config": {"kind": "manual"}}
    return parse_definition(
        {
            "name": "t",
            "nodes": [start, *nodes],
            "connections": [{"source": a, "target": b} for a, b in zip(ids, ids[1:], strict=False)],
            **extra,
        }
    )


def edges(relaxation) -> set[tuple[str, str]]:
    return {(c.source, c.target) for c in relaxation.connections}


def measured(p50: float = 200.0, success: float = 1.0, transient: int = 0) -> StepFigures:
    return StepFigures(p50, p50 * 1.1, p50 * 1.2, success, 1.0, "history", 5, {}, transient)


def test_step_references_names_the_steps_read():
    assert steps_needed({"u": "x/{{ steps.a.output.id }}", "b": ["{{ steps['b'].status }}"]}) == {
        "a",
        "b",
    }
    assert steps_needed({"u": "{{ input.x }}"}) == frozenset()
    assert steps_needed({}, "steps.c.output.ok and input.n > 1") == {"c"}
    assert steps_needed("{{ steps[input.k] }}") is None
    assert steps_needed("{% for s in steps %}{{ s }}{% endfor %}") is None


def test_independent_reads_run_in_parallel_and_keep_the_final_step():
    calls = [http(f"c{i}", f"http://svc/{i}") for i in range(1, 7)]
    d = chain(calls)
    r = relax(d)
    assert {("start", f"c{i}") for i in range(1, 7)} <= edges(r)
    # c6 stays the only sink (the execution's output), the others join it
    assert {(f"c{i}", "c6") for i in range(1, 6)} <= edges(r)
    assert len(edges(r)) == 11


def test_a_data_dependency_is_kept():
    d = chain([http("a", "http://svc/a"), http("b", "http://svc/b/{{ steps.a.output.body.id }}")])
    assert not relax(d).changed


def test_a_dependency_two_steps_back_is_kept_directly():
    d = chain(
        [
            http("a", "http://svc/a"),
            http("b", "http://svc/b"),
            http("c", "http://svc/c", json={"id": "{{ steps.a.output.body.id }}"}),
        ]
    )
    r = relax(d)
    assert ("a", "c") in edges(r) and ("start", "b") in edges(r)
    assert ("b", "c") in edges(r)  # b would be a new sink: joined to c
    assert r.dropped == (("a", "b"),)


def test_declared_ordering_is_respected():
    d = chain([http("a", "http://svc/a"), http("b", "http://svc/b")])
    doc = d.to_dict()
    doc["connections"][1]["ordered"] = True
    assert not relax(parse_definition(doc)).changed
    assert parse_definition(doc).to_dict()["connections"][1]["ordered"] is True
    doc["connections"][1]["ordered"] = "yes"
    with pytest.raises(DefinitionError) as bad:
        parse_definition(doc)
    assert bad.value.problems[0].location == "connections[1].ordered"


def test_side_effects_keep_their_order():
    d = chain(
        [
            http("read1", "http://svc/1"),
            http("write", "http://svc/w", method="POST"),
            http("read2", "http://svc/2"),
        ]
    )
    assert not relax(d).changed  # the write stays after read1, read2 stays after the write


def test_steps_after_a_condition_are_left_alone():
    start = {"id": "start", "type": "trigger", "config": {"kind": "manual"}}
    cond = {"id": "big", "type": "condition", "config": {"expression": "input.n > 1"}}
    d = parse_definition(
        {
            "name": "t",
            "nodes": [start, cond, http("a", "http://svc/a"), http("b", "http://svc/b")],
            "connections": [
                {"source": "start", "target": "big"},
                {"source": "big", "target": "a", "when": "true"},
                {"source": "a", "target": "b"},
            ],
        }
    )
    assert not relax(d).changed


def test_on_failure_continue_is_left_alone():
    d = chain([http("a", "http://svc/a"), http("b", "http://svc/b")], on_failure="continue")
    assert not relax(d).changed


def test_unknown_reads_keep_everything_above():
    d = chain(
        [http("a", "http://svc/a"), http("b", "http://svc/b"), http("c", "{{ steps[input.k] }}")]
    )
    assert not relax(d).changed


def test_step_model_with_retries():
    fig = StepFigures(100.0, 200.0, 300.0, 2 / 3, 1.0)
    policy = RetryPolicy(max_retries=2, retry_delay=0.5, backoff_multiplier=2.0)
    assert step_success(fig, RetryPolicy()) == pytest.approx(2 / 3)
    assert step_success(fig, policy) == pytest.approx(1 - (1 / 3) ** 3)
    assert step_calls(fig, policy) == pytest.approx(1 + 1 / 3 + 1 / 9)
    assert step_duration(fig, policy, 0.5) == 100.0
    # p95 of the successful runs needs two retries: two failed attempts and two delays
    assert step_duration(fig, policy, 0.95) == pytest.approx(200 + 2 * 100 + 500 + 1000)


def test_critical_path_and_slots():
    calls = [http(f"c{i}", f"http://svc/{i}") for i in range(1, 5)]
    d = chain(calls)
    steps = {f"c{i}": measured(100.0) for i in range(1, 5)}
    before = predict(d, steps, overhead=10.0, slots=8)
    assert before.duration_p50_ms == pytest.approx(4 * 110 + 10)
    parallel = parse_definition(
        {
            **d.to_dict(),
            "connections": [{"source": "start", "target": f"c{i}"} for i in range(1, 5)],
        }
    )
    assert predict(parallel, steps, overhead=10.0, slots=8).duration_p50_ms == pytest.approx(120)
    # two slots: two waves (the dispatch overhead is latency, not slot time)
    assert predict(parallel, steps, overhead=10.0, slots=2).duration_p50_ms == pytest.approx(220)
    assert before.success_rate == 1.0 and before.calls == 4.0
    assert before.duration_p95_ms >= before.duration_p50_ms


def test_performance_strategy_predicts_the_gain_and_keeps_the_definition_valid():
    calls = [http(f"c{i}", f"http://svc/{i}") for i in range(1, 7)]
    d = chain(calls)
    ctx = Context(d, {f"c{i}": measured() for i in range(1, 7)}, 30.0, 8, 300.0)
    result = analyze(d, ctx, "performance")
    kinds = [s["kind"] for s in result.suggestions]
    assert kinds[0] == "parallelize"
    before, after = result.predicted["before"], result.predicted["after"]
    assert after["duration_p50_ms"] < 0.5 * before["duration_p50_ms"]
    assert after["calls"] == before["calls"]
    parse_definition(result.optimized)  # valid


def test_reliability_adds_retries_only_from_history():
    calls = [http("a", "http://svc/a"), http("b", "http://svc/b", method="POST")]
    d = chain(calls)
    flaky = measured(success=2 / 3, transient=3)
    ctx = Context(d, {"a": flaky, "b": flaky}, 30.0, 8, 300.0)
    result = analyze(d, ctx, "reliability")
    retry = {s["nodes"][0]: s for s in result.suggestions if s["kind"] == "retry"}
    assert retry["a"]["applied"] and not retry["a"]["changes_behaviour"]
    assert retry["b"]["changes_behaviour"] and not retry["b"]["applied"]  # a POST
    nodes = {n["id"]: n for n in result.optimized["nodes"]}
    assert nodes["a"]["retry"]["max_retries"] >= 3 and "retry" not in nodes["b"]
    assert result.predicted["after"]["success_rate"] > result.predicted["before"]["success_rate"]
    estimated = analyze(d, Context(d, {}, 30.0, 8, 300.0), "reliability")
    assert not [s for s in estimated.suggestions if s["kind"] == "retry"]


def test_cost_dedupes_and_drops_unused_reads():
    d = chain(
        [
            http("a", "http://svc/a"),
            http("a2", "http://svc/a"),
            http("gate", "http://svc/health"),
            http("notify", "http://svc/n", method="POST"),
            http("unused", "http://svc/u"),
            http("a3", "http://svc/a"),  # the same read after a write: not a duplicate
            {
                "id": "out",
                "type": "action",
                "config": {
                    "action_type": "transform",
                    "output": {"a": "{{ steps.a.output }}", "b": "{{ steps.a2.output }}"},
                },
            },
        ]
    )
    result = analyze(d, Context(d, {}, 30.0, 8, 300.0), "cost")
    by_kind = {}
    for s in result.suggestions:
        by_kind.setdefault(s["kind"], []).append(s)
    assert [s["nodes"] for s in by_kind["dedupe"]] == [["a", "a2"]]
    dropped = {s["nodes"][0]: s for s in by_kind["drop_unused"]}
    assert dropped["unused"]["applied"]
    assert dropped["notify"]["changes_behaviour"] and not dropped["notify"]["applied"]
    # a read nobody uses that runs before a write gates it: cutting it is a change
    assert dropped["gate"]["changes_behaviour"] and "gates notify" in dropped["gate"]["rationale"]
    ids = {n["id"] for n in result.optimized["nodes"]}
    assert not {"unused", "a3"} & ids and {"notify", "gate"} <= ids
    assert result.predicted["after"]["calls"] == result.predicted["before"]["calls"] - 3


def test_hybrid_states_trade_offs():
    out = {f"c{i}": "{{ steps.c" + str(i) + ".output }}" for i in range(1, 4)}
    collect = {"id": "out", "type": "action", "config": {"action_type": "transform", "output": out}}
    d = chain([*(http(f"c{i}", f"http://svc/{i}") for i in range(1, 4)), collect])
    flaky = measured(success=0.8, transient=2)
    result = analyze(
        d, Context(d, {"c1": flaky, "c2": measured(), "c3": measured()}, 30.0, 8, 300.0), "hybrid"
    )
    assert result.trade_offs and any("Retries" in t for t in result.trade_offs)
    kinds = {s["kind"] for s in result.suggestions}
    assert {"retry", "parallelize"} <= kinds


def test_fast_calls_get_a_tighter_request_timeout():
    d = chain(
        [
            http("a", "http://svc/a"),
            {"id": "q", "type": "action", "config": {"action_type": "python", "function": "f"}},
        ]
    )
    ctx = Context(d, {"a": measured(200.0), "q": measured(100.0)}, 30.0, 8, 300.0)
    result = analyze(d, ctx, "performance")
    nodes = {n["id"]: n for n in result.optimized["nodes"]}
    assert nodes["a"]["config"]["timeout"] == 5.0 and "timeout" not in nodes["a"]
    assert nodes["q"]["timeout"] == 5.0  # no request timeout: the step's own limit
    slow = Context(d, {"a": measured(3000.0)}, 30.0, 8, 300.0)
    assert not [s for s in analyze(d, slow, "performance").suggestions if s["nodes"] == ["a"]]


def test_a_chord_joining_a_nested_group_is_predicted_late():
    start = {"id": "start", "type": "trigger", "config": {"kind": "manual"}}
    nodes = [start, *(http(n, f"http://svc/{n}") for n in ("a", "b", "c", "d"))]
    nodes.append({"id": "m", "type": "action", "config": {"action_type": "transform", "output": 1}})
    pairs = [("start", "a"), ("a", "b"), ("a", "c"), ("start", "d")]
    pairs += [("b", "m"), ("c", "m"), ("d", "m")]
    d = parse_definition(
        {
            "name": "t",
            "nodes": nodes,
            "connections": [{"source": a, "target": b} for a, b in pairs],
        }
    )
    assert join_delays(d) == {"m": 500.0}  # the header holds a.then(group(b, c))
    steps = {n: measured(100.0) for n in "abcd"}
    steps["m"] = measured(0.0)
    # a, b (or c), then m half a second late: 3 hops, 200 ms of steps, 500 ms of join
    assert predict(d, steps, overhead=0.0, slots=8).duration_p50_ms == pytest.approx(700.0)
    flat = chain([http(f"c{i}", f"http://svc/{i}") for i in range(3)])
    assert join_delays(flat) == {}
