"""Workflow figures from step figures: the critical path, retries and worker slots. Pure.

- A step's attempt takes its p50 (p95) and succeeds with probability ``p``; with ``n``
  retries it succeeds with probability ``1 - (1 - p) ** (n + 1)`` and makes
  ``sum((1 - p) ** k for k in 0..n)`` attempts on average. Its q-quantile duration, among
  runs where it succeeds, adds one failed attempt (p50) and its backoff delay for every retry
  that fewer than ``1 - q`` of those runs get past.
- p50 of the workflow: every step starts ``overhead`` after its last predecessor finishes
  (dispatch, claim, bookkeeping: measured from history, else an estimate) and takes its p50;
  steps wait for a free worker slot (list scheduling on ``slots`` slots, longest path first).
- p95 of the workflow: along each path the durations add up as independent variables, so a
  path's p95 is ``sum(p50) + sqrt(sum((p95 - p50) ** 2))``; the workflow's is the largest over
  its paths (found by dynamic programming on that score), plus the slot wait the p50 schedule
  showed.
- success rate: the product over the steps of each step's success with its retries
  (every step is assumed to run: branches a condition skips are counted as run).
- calls: the expected outside calls per run, retries included.
- the compiled plan adds no wait of its own: every chord body is sent from the chord's
  counter, a header holding a group included (``NoWaitRedisBackend.apply_chord`` in
  ``atom.celery_app``), so it starts one ``overhead`` after its last predecessor like any
  step (bench/joins.py: the same as after a flat header, where it was 0.5 s later before).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

from atom.optimize.figures import Figures, StepFigures
from atom.workflow.definition import Definition, Node, NodeType, RetryPolicy


def step_success(figures: StepFigures, retry: RetryPolicy) -> float:
    """Probability that the step succeeds within its retries."""
    return 1 - (1 - figures.success) ** (retry.max_retries + 1)


def step_calls(figures: StepFigures, retry: RetryPolicy) -> float:
    """Expected outside calls of the step, retries included."""
    fail = 1 - figures.success
    return figures.calls * sum(fail**k for k in range(retry.max_retries + 1))


def retries_below(figures: StepFigures, retry: RetryPolicy, q: float) -> int:
    """Retries needed by the q-quantile of the runs where the step succeeds."""
    fail = 1 - figures.success
    n = retry.max_retries
    total = 1 - fail ** (n + 1)
    if total <= 0:
        return 0
    for k in range(n + 1):
        beyond = (fail ** (k + 1) - fail ** (n + 1)) / total
        if beyond <= 1 - q:
            return k
    return n


def step_duration(figures: StepFigures, retry: RetryPolicy, q: float) -> float:
    """The step's q-quantile duration (ms), retries and their backoff included."""
    base = figures.p50_ms if q <= 0.5 else figures.p95_ms
    needed = retries_below(figures, retry, q)
    extra = sum(figures.p50_ms + retry.delay(i) * 1000 for i in range(1, needed + 1))
    return base + extra


def _figures(node: Node, steps: Mapping[str, StepFigures]) -> StepFigures:
    return steps.get(node.id) or StepFigures(0.0, 0.0, 0.0, 1.0)


def schedule(
    definition: Definition,
    durations: Mapping[str, float],
    overhead: float,
    slots: int,
) -> float:
    """Makespan (ms) of the graph on ``slots`` worker slots, longest remaining path first."""
    graph = definition.graph()
    order = graph.topological_order()
    trigger = definition.trigger.id
    tail: dict[str, float] = {}
    for v in reversed(order):
        own = 0.0 if v == trigger else durations.get(v, 0.0) + overhead
        tail[v] = own + max((tail[w] for w in graph.successors[v]), default=0.0)
    waiting = {v: len(graph.predecessors[v]) for v in order}
    ready_at = {v: 0.0 for v in order}
    free = [0.0] * max(1, slots)
    heapq.heapify(free)
    ready: list[tuple[float, float, str]] = [(0.0, -tail[trigger], trigger)]
    finish_all = 0.0
    while ready:
        # The step that has been ready longest (ties: longest remaining path) takes a slot.
        at, _, v = heapq.heappop(ready)
        if v == trigger:
            done = 0.0
        else:
            slot = heapq.heappop(free)
            start = max(at + overhead, slot)
            done = start + durations.get(v, 0.0)
            heapq.heappush(free, done)
        finish_all = max(finish_all, done)
        for w in graph.successors[v]:
            ready_at[w] = max(ready_at[w], done)
            waiting[w] -= 1
            if waiting[w] == 0:
                heapq.heappush(ready, (ready_at[w], -tail[w], w))
    return finish_all + overhead  # the closing finalize task


def _path_p95(
    definition: Definition,
    p50: Mapping[str, float],
    p95: Mapping[str, float],
    overhead: float,
) -> tuple[float, float]:
    """(p50 of the longest path without slot limits, p95 by the path composition)."""
    graph = definition.graph()
    best: dict[str, tuple[float, float]] = {}
    for v in graph.topological_order():
        own = 0.0 if v == definition.trigger.id else p50.get(v, 0.0) + overhead
        spread = max(0.0, p95.get(v, 0.0) - p50.get(v, 0.0)) ** 2
        options = [best[p] for p in graph.predecessors[v]] or [(0.0, 0.0)]
        mean, var = max(options, key=lambda mv: mv[0] + math.sqrt(mv[1]))
        best[v] = (mean + own, var + spread)
    plain = max(m for m, _ in best.values()) + overhead
    worst = max(m + math.sqrt(s) for m, s in best.values()) + overhead
    return plain, worst


def predict(
    definition: Definition,
    steps: Mapping[str, StepFigures],
    *,
    overhead: float,
    slots: int,
    success_override: Mapping[str, float] | None = None,
) -> Figures:
    """The workflow's figures from its steps' (see the module docstring)."""
    p50: dict[str, float] = {}
    p95: dict[str, float] = {}
    success = 1.0
    calls = 0.0
    for node in definition.nodes:
        if node.type is NodeType.TRIGGER:
            continue
        fig = _figures(node, steps)
        p50[node.id] = step_duration(fig, node.retry, 0.5)
        p95[node.id] = step_duration(fig, node.retry, 0.95)
        own = step_success(fig, node.retry)
        if success_override and node.id in success_override:
            own = success_override[node.id]
        success *= own
        calls += step_calls(fig, node.retry)
    makespan = schedule(definition, p50, overhead, slots)
    plain, worst = _path_p95(definition, p50, p95, overhead)
    return Figures(
        duration_p50_ms=makespan,
        duration_p95_ms=max(worst + (makespan - plain), makespan),
        calls=calls,
        success_rate=success,
    )
