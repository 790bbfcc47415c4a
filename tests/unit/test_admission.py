"""``engine.admit``: what a delivery of a step task does, decided from the rows alone (no
session, no broker). The worker (``workers/tasks.py``) only carries the verdict out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from atom.runs.engine import Admission, ExecutionStatus, StepStatus, Verdict, admit
from atom.store.models import Execution, StepRun
from atom.workflow.definition import parse_definition

AT = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def definition(on_failure: str = "continue", rule: str = "all_success"):
    return parse_definition(
        {
            "name": "admission",
            "on_failure": on_failure,
            "nodes": [
                {"id": "start", "type": "trigger", "config": {"kind": "manual"}},
                {"id": "a", "type": "action", "config": {"action_type": "log", "message": "a"}},
                {"id": "b", "type": "action", "config": {"action_type": "log", "message": "b"}},
                {
                    "id": "c",
                    "type": "action",
                    "trigger_rule": rule,
                    "config": {"action_type": "log", "message": "c"},
                },
            ],
            "connections": [
                {"source": "start", "target": "a"},
                {"source": "start", "target": "b"},
                {"source": "a", "target": "c"},
                {"source": "b", "target": "c"},
            ],
        }
    )


def steps(**status: str) -> dict[str, StepRun]:
    base = {"start": "succeeded", "a": "succeeded", "b": "succeeded", "c": "pending"}
    return {
        node: StepRun(node_id=node, status=value, output=None)
        for node, value in {**base, **status}.items()
    }


def execution(status: str = "running", error: dict | None = None) -> Execution:
    return Execution(status=status, epoch=1, error=error)


def verdict(ex=None, d=None, st=None, node="c", timeout=30.0) -> Verdict:
    return admit(
        ex or execution(), d or definition(), st or steps(), node, at=AT, heartbeat_timeout=timeout
    )


def test_a_step_whose_predecessors_succeeded_runs():
    assert verdict() == Verdict(Admission.RUN)


@pytest.mark.parametrize("status", ["succeeded", "failed", "skipped", "cancelled"])
def test_a_step_that_ended_is_done(status):
    assert verdict(st=steps(c=status)) == Verdict(Admission.DONE)


def test_a_fresh_heartbeat_means_another_delivery_runs_it():
    st = steps(c="running")
    st["c"].heartbeat_at = AT - timedelta(seconds=5)
    assert verdict(st=st).admission is Admission.BUSY


def test_a_stale_heartbeat_is_taken_over():
    st = steps(c="running")
    st["c"].heartbeat_at = AT - timedelta(seconds=31)
    assert verdict(st=st) == Verdict(Admission.RUN)


@pytest.mark.parametrize("status", ["cancelled", "failed"])
def test_a_stopped_execution_cancels_the_step(status):
    assert verdict(ex=execution(status)) == Verdict(Admission.CANCEL, f"execution is {status}")


def test_fail_fast_after_a_failure_cancels_the_step():
    ex = execution(error={"node_id": "a", "type": "X", "message": "m"})
    got = verdict(ex=ex, d=definition("fail_fast"))
    assert got == Verdict(Admission.CANCEL, "fail_fast: step 'a' failed")
    assert verdict(ex=ex, d=definition("continue")).admission is Admission.RUN


def test_a_paused_execution_leaves_the_step_pending():
    assert verdict(ex=execution(ExecutionStatus.PAUSED.value)) == Verdict(Admission.DONE)


def test_an_early_delivery_waits_for_unfinished_predecessors():
    got = verdict(st=steps(b="running"))
    assert got == Verdict(Admission.EARLY, waiting_for=("b",))


def test_the_trigger_rule_skips_with_its_reason():
    assert verdict(st=steps(a="failed")) == Verdict(Admission.SKIP, "upstream failed: a")
    assert verdict(st=steps(a="failed"), d=definition(rule="all_done")).admission is (Admission.RUN)
    got = verdict(st=steps(a="skipped", b="skipped"), d=definition(rule="one_success"))
    assert got == Verdict(Admission.SKIP, "upstream skipped: a, b")


def _if_else():
    """start -> is_big; is_big -(true)-> big -> after_big; is_big -(false)-> small; join."""
    log = {"action_type": "log", "message": "x"}
    return parse_definition(
        {
            "name": "branches",
            "nodes": [
                {"id": "start", "type": "trigger", "config": {"kind": "manual"}},
                {"id": "is_big", "type": "condition", "config": {"expression": "input.n > 9"}},
                {"id": "big", "type": "action", "config": log},
                {"id": "after_big", "type": "action", "config": log},
                {"id": "small", "type": "action", "config": log},
                {"id": "join", "type": "action", "config": log},
            ],
            "connections": [
                {"source": "start", "target": "is_big"},
                {"source": "is_big", "target": "big", "when": "true"},
                {"source": "is_big", "target": "small", "when": "false"},
                {"source": "big", "target": "after_big"},
                {"source": "after_big", "target": "join"},
                {"source": "small", "target": "join"},
            ],
        }
    )


@pytest.mark.parametrize("result", [False, True])
def test_a_skip_on_the_branch_not_taken_says_so(result: bool):
    taken, not_taken = ("big", "small") if result else ("small", "big")
    st = {
        "start": StepRun(node_id="start", status="succeeded", output=None),
        "is_big": StepRun(node_id="is_big", status="succeeded", output={"result": result}),
        taken: StepRun(node_id=taken, status="succeeded", output=None),
        not_taken: StepRun(node_id=not_taken, status="pending", output=None),
    }
    got = verdict(d=_if_else(), st=st, node=not_taken)
    word = "true" if result else "false"
    assert got == Verdict(Admission.SKIP, f"branch not taken (`is_big` was {word})")
    if not result:  # skipping propagates, and says from where
        st["big"] = StepRun(node_id="big", status="skipped", output=None)
        st["after_big"] = StepRun(node_id="after_big", status="pending", output=None)
        got = verdict(d=_if_else(), st=st, node="after_big")
        assert got == Verdict(Admission.SKIP, "upstream skipped: big")
        st["after_big"] = StepRun(node_id="after_big", status="skipped", output=None)
        st["join"] = StepRun(node_id="join", status="pending", output=None)
        got = verdict(d=_if_else(), st=st, node="join")
        assert got == Verdict(
            Admission.SKIP, "trigger rule all_success not met: upstream skipped: after_big"
        )


def test_the_rules_apply_in_order():
    # ended beats everything; a stopped execution beats an unfinished predecessor
    assert verdict(ex=execution("cancelled"), st=steps(c="succeeded")).admission is (Admission.DONE)
    assert verdict(ex=execution("cancelled"), st=steps(b="running")).admission is (Admission.CANCEL)
    assert StepStatus.PENDING.value == "pending"
