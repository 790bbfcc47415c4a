"""The optimizer's pure analysis: which orderings may go, the critical path, predictions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from atom.errors import DefinitionError
from atom.optimize.dataflow import relax
from atom.optimize.figures import StepFigures, wilson
from atom.optimize.predict import (
    predict,
    step_calls,
    step_duration,
    step_success,
)
from atom.optimize.strategies import Context, analyze, apply_patch, cached, hit_rate
from atom.workflow.compiler import compile_plan
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


def test_a_chord_joining_a_nested_group_is_predicted_without_a_join_wait():
    # The header holds a.then(group(b, c)); the engine counts it like a flat one
    # (atom.celery_app.NoWaitRedisBackend.apply_chord), so no 0.5 s join is predicted.
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
    plan = compile_plan(d)["canvas"]["tasks"][0]
    assert plan["type"] == "chord" and plan["header"][0]["tasks"][-1]["type"] == "group"
    steps = {n: measured(100.0) for n in "abcd"}
    steps["m"] = measured(0.0)
    # a, then b (or c), then m: 200 ms of steps and 4 hops of 10 ms (m and finalize included)
    assert predict(d, steps, overhead=10.0, slots=8).duration_p50_ms == pytest.approx(240.0)


def stable(p50: float, outputs: int = 6, changes: int = 0, span: float = 60.0) -> StepFigures:
    """Figures of a read whose answer changed ``changes`` times over ``outputs`` runs."""
    return StepFigures(
        p50,
        p50 * 1.2,
        p50 * 1.3,
        1.0,
        1.0,
        "history",
        outputs,
        outputs=outputs,
        output_changes=changes,
        output_span_s=span,
    )


def test_hit_rate_follows_the_ttl_and_the_run_interval():
    assert hit_rate(300, 3) == pytest.approx(300 / 303)
    assert hit_rate(300, 86_400) < 0.01  # a daily run never finds a 5-minute entry
    assert hit_rate(300, None) == 0.0
    hot = cached(stable(400.0), 0.99)
    assert hot.p50_ms < 10 and hot.p95_ms < 30 and hot.calls == pytest.approx(0.01)
    cold = cached(stable(400.0), 0.3)
    assert cold.p50_ms == 400.0 and cold.calls == pytest.approx(0.7)


def test_cache_is_listed_for_a_constant_read_with_a_stable_answer_and_can_be_accepted():
    d = chain([http("rates", "http://svc/rates"), http("who", "http://svc/u/{{ input.id }}")])
    ctx = Context(d, {"rates": stable(400.0), "who": stable(400.0)}, 20.0, 8, 300.0, 2.0)
    result = analyze(d, ctx, "performance")
    found = [s for s in result.suggestions if s["kind"] == "cache"]
    assert [s["nodes"] for s in found] == [["rates"]]  # "who" is templated: differs per run
    suggestion = found[0]
    assert suggestion["changes_behaviour"] and not suggestion["applied"]
    assert suggestion["patch"] == [
        {"op": "set", "node": "rates", "path": "config.cache_ttl", "value": 300.0}
    ]
    assert "cache_ttl" not in {k for n in result.optimized["nodes"] for k in n["config"]}
    assert suggestion["expected"]["calls"] == pytest.approx(2 - 300 / 302, abs=0.01)
    assert suggestion["expected"]["duration_p50_ms"] < result.predicted["after"]["duration_p50_ms"]
    use = {
        "id": "use",
        "type": "action",
        "config": {"action_type": "transform", "output": "{{ steps.rates.output }}"},
    }
    read = chain([http("rates", "http://svc/rates"), use])
    hybrid = analyze(read, Context(read, {"rates": stable(400.0)}, 20.0, 8, 300.0, 2.0), "hybrid")
    assert any("freshness" in t for t in hybrid.trade_offs or [])
    accepted = parse_definition(apply_patch(result.optimized, suggestion["patch"]))
    assert accepted.node("rates").config["cache_ttl"] == 300.0
    with pytest.raises(KeyError):
        apply_patch(result.optimized, [{"op": "set", "node": "gone", "path": "x", "value": 1}])


def test_cache_ttl_follows_how_often_the_answer_changed_and_is_not_offered_when_useless():
    d = chain([http("rates", "http://svc/rates")])

    def cache_of(figures: StepFigures, interval: float | None = 2.0) -> list[dict[str, Any]]:
        ctx = Context(d, {"rates": figures}, 20.0, 8, 300.0, interval)
        return [s for s in analyze(d, ctx, "performance").suggestions if s["kind"] == "cache"]

    changing = cache_of(stable(400.0, outputs=20, changes=4, span=800.0))  # every 200 s
    assert changing[0]["patch"][0]["value"] == 100.0
    assert cache_of(stable(400.0, outputs=20, changes=10, span=300.0)) == []  # every 30 s
    assert cache_of(stable(10.0)) == []  # a 10 ms call: nothing to save
    assert cache_of(stable(400.0), interval=3600.0) == []  # runs hourly: no hits
    assert cache_of(stable(400.0, outputs=2)) == []  # too few runs to know
    post = chain([http("rates", "http://svc/rates", method="POST")])
    ctx = Context(post, {"rates": stable(400.0)}, 20.0, 8, 300.0, 2.0)
    assert not [s for s in analyze(post, ctx, "performance").suggestions if s["kind"] == "cache"]


def test_batch_lists_reads_of_one_collection_with_the_calls_saved():
    d = chain(
        [
            http("u1", "http://svc/users/1"),
            http("u2", "http://svc/users/2"),
            http("u3", "http://svc/users/{{ steps.u1.output.body.next }}"),
            http("o", "http://svc/orders/1"),
            {
                "id": "merge",
                "type": "action",
                "config": {
                    "action_type": "transform",
                    "output": {k: "{{ steps." + k + ".output }}" for k in ("u1", "u2", "u3", "o")},
                },
            },
        ]
    )
    figures = {n: measured(100.0) for n in ("u1", "u2", "u3", "o")}
    result = analyze(d, Context(d, figures, 20.0, 8, 300.0), "cost")
    found = [s for s in result.suggestions if s["kind"] == "batch"]
    assert [s["nodes"] for s in found] == [["u1", "u2"]]  # u3 reads u1; orders is another
    assert found[0]["changes_behaviour"] and not found[0]["applied"] and "patch" not in found[0]
    assert found[0]["expected"]["calls"] == pytest.approx(3.0)
    assert result.predicted["after"]["calls"] == pytest.approx(4.0)  # listed, not made


def test_batch_needs_items_of_one_collection_not_different_endpoints():
    def batches(*nodes: dict[str, Any]) -> list[list[str]]:
        ids = [n["id"] for n in nodes]
        merge = {
            "id": "merge",
            "type": "action",
            "config": {
                "action_type": "transform",
                "output": {k: "{{ steps." + k + ".output }}" for k in ids},
            },
        }
        d = chain([*nodes, merge])
        ctx = Context(d, {k: measured(100.0) for k in ids}, 20.0, 8, 300.0)
        return [s["nodes"] for s in analyze(d, ctx, "cost").suggestions if s["kind"] == "batch"]

    # different reports of one service are different endpoints, not items
    assert batches(http("s", "http://svc/report/sales"), http("c", "http://svc/report/costs")) == []
    # items named by a template or a number, or by the query
    assert batches(
        http("a", "http://svc/items/{{ input.id }}-a"),
        http("b", "http://svc/items/{{ input.id }}-b"),
    ) == [["a", "b"]]
    assert batches(
        http("a", "http://svc/search", params={"email": "a@x"}),
        http("b", "http://svc/search", params={"email": "b@x"}),
    ) == [["a", "b"]]


def test_a_retry_that_may_repeat_a_write_carries_a_patch_to_accept():
    d = chain([http("b", "http://svc/b", method="POST")])
    ctx = Context(d, {"b": measured(success=2 / 3, transient=3)}, 30.0, 8, 300.0)
    retry = next(s for s in analyze(d, ctx, "reliability").suggestions if s["kind"] == "retry")
    assert retry["changes_behaviour"] and not retry["applied"]
    made = parse_definition(apply_patch(d.to_dict(), retry["patch"]))
    assert made.node("b").retry.max_retries >= 3


def test_a_retry_states_how_sure_the_measured_success_rate_is():
    assert wilson(150, 200) == pytest.approx((0.686, 0.805), abs=0.002)
    low, high = wilson(6, 10)
    assert low < 0.35 and high > 0.8  # ten attempts say little
    d = chain([http("a", "http://svc/a")])
    few = replace(measured(success=0.75, transient=50), attempts=200)
    retry = next(
        s
        for s in analyze(d, Context(d, {"a": few}, 30.0, 8, 300.0), "reliability").suggestions
        if s["kind"] == "retry"
    )
    assert "(200 attempts; 95 % interval 69%-8" in retry["rationale"]
