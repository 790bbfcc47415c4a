"""The four strategies: suggestions, each with its expected effect, and the optimized
definition. Pure: the figures come in (``history`` or ``estimates``), JSON goes out.

Suggestions are built in order; one that keeps behaviour is applied to the working
definition at once (the next ones see it), and its ``expected`` figures are the workflow's
with it and every applied one before it. One that changes behaviour (``changes_behaviour``)
is listed with the figures it would give, and never applied.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from atom.actions.base import is_template
from atom.actions.http_request import DEFAULT_TIMEOUT
from atom.errors import DefinitionError
from atom.optimize import dataflow
from atom.optimize.estimates import CACHE_HIT_MS, estimate
from atom.optimize.figures import Figures, StepFigures, wilson
from atom.optimize.predict import predict, step_success
from atom.workflow.compiler import compile_plan
from atom.workflow.definition import Definition, Node, NodeType, parse_definition

STRATEGIES = ("performance", "cost", "reliability", "hybrid")
TARGET_STEP_SUCCESS = 0.99
"""Retries are added until a flaky step succeeds this often (at most MAX_RETRIES)."""
MAX_RETRIES = 5
FALLBACK_BELOW = 0.95
"""A dependency whose step succeeds less often than this, even with retries, is flaky."""
MIN_SAMPLES = 3
MIN_TIMEOUT = 5
"""No timeout the optimizer sets is shorter (s): a loaded machine slows every step."""
"""Runs of a step needed before a timeout is derived from its measured p99."""
TRANSIENT_RETRY = {"retry_delay": 0.5, "backoff_multiplier": 2.0, "max_delay": 30.0}
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

Document = dict[str, Any]


def hit_rate(ttl: float, interval: float | None) -> float:
    """Share of runs a response cache of ``ttl`` s answers when runs come every ``interval``
    s: each miss stores a response that the next ``ttl / interval`` runs read."""
    if interval is None or ttl <= 0:
        return 0.0
    return ttl / (ttl + max(interval, 1e-3))


def cached(figures: StepFigures, hits: float) -> StepFigures:
    """A step's figures when a share ``hits`` of its runs are answered from the cache."""
    hit_p50, hit_p95 = CACHE_HIT_MS
    return replace(
        figures,
        p50_ms=hit_p50 if hits >= 0.5 else figures.p50_ms,
        p95_ms=hit_p95 if hits >= 0.95 else figures.p95_ms,
        success=1 - (1 - hits) * (1 - figures.success),
        calls=figures.calls * (1 - hits),
    )


@dataclass(frozen=True)
class Context:
    """What an analysis knows: the step figures, the overhead per step, the worker slots,
    how often the workflow runs."""

    original: Definition
    measured: dict[str, StepFigures]
    overhead_ms: float
    slots: int
    step_timeout: float
    run_interval_s: float | None = None

    def figures(self, definition: Definition) -> dict[str, StepFigures]:
        """Each node's figures: measured when the node is the one that ran, else estimated;
        a response cache the node did not have when it ran answers its share of runs."""
        out: dict[str, StepFigures] = {}
        before = {n.id: n for n in self.original.nodes}
        for node in definition.nodes:
            was = before.get(node.id)
            same = was is not None and was.action_type == node.action_type
            measured = self.measured.get(node.id) if same else None
            figures = measured or estimate(node)
            ttl = node.config.get("cache_ttl")
            had = was is not None and same and was.config.get("cache_ttl") == ttl
            if isinstance(ttl, int | float) and not (had and measured):
                figures = cached(figures, hit_rate(float(ttl), self.run_interval_s))
            out[node.id] = figures
        return out

    def predict(self, definition: Definition, **kw: Any) -> Figures:
        """The workflow's figures."""
        return predict(
            definition,
            self.figures(definition),
            overhead=self.overhead_ms,
            slots=self.slots,
            **kw,
        )


def apply_patch(doc: Document, patch: list[dict[str, Any]]) -> Document:
    """``doc`` with each ``{op: set, node, path, value}`` done (``path`` is dotted, under the
    node); KeyError names a node that is not there."""
    for edit in patch:
        spec = next((n for n in doc["nodes"] if n["id"] == edit["node"]), None)
        if spec is None:
            raise KeyError(edit["node"])
        *parents, last = str(edit["path"]).split(".")
        target = spec
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = copy.deepcopy(edit["value"])
    return doc


@dataclass
class Suggestion:
    """One proposed change."""

    kind: str
    nodes: list[str]
    rationale: str
    changes_behaviour: bool = False
    change: Callable[[Document], Document] | None = None
    success_override: dict[str, float] = field(default_factory=dict)
    patch: list[dict[str, Any]] | None = None
    """The change as data (``apply_patch``), for one that changes behaviour: the user may
    accept it when applying the result."""
    figures_override: dict[str, StepFigures] = field(default_factory=dict)
    """Step figures the suggestion would give, for one that is described but not built."""

    def __post_init__(self) -> None:
        if self.patch is not None and self.change is None:
            edits = self.patch
            self.change = lambda doc: apply_patch(doc, edits)


Generator = Callable[[Definition, Context], list[Suggestion]]


def _node_doc(doc: Document, node_id: str) -> dict[str, Any]:
    return next(n for n in doc["nodes"] if n["id"] == node_id)


def _ms(value: float) -> str:
    return f"{value:.0f} ms"


# -- performance -------------------------------------------------------------------------------


def parallelize(definition: Definition, ctx: Context) -> list[Suggestion]:
    """Drop the orderings that carry no data, no declared order and no side effect."""
    relaxed = dataflow.relax(definition)
    if not relaxed.changed:
        return []
    involved = {n for pair in relaxed.dropped for n in pair}
    moved = [n.id for n in definition.nodes if n.id in involved]
    edges = [
        {"source": c.source, "target": c.target}
        | ({"when": c.when} if c.when is not None else {})
        | ({"ordered": True} if c.ordered else {})
        for c in relaxed.connections
    ]
    figures = ctx.figures(definition)
    saved = sum(figures[b].p50_ms for b in {b for _, b in relaxed.dropped} if b in figures)
    rationale = (
        f"{len({b for _, b in relaxed.dropped})} steps wait for steps whose output they do "
        "not read: "
        + ", ".join(f"{b} no longer waits for {a}" for a, b in relaxed.dropped[:12])
        + ("; ..." if len(relaxed.dropped) > 12 else "")
        + f". They now start as soon as what they read is ready (up to {_ms(saved)} of step "
        "time taken off the chain); none of them has a side effect another step could "
        "depend on, and the workflow keeps its final steps, so its output is the same. "
        'Mark a connection "ordered": true to keep an order that matters for another reason.'
    )

    def change(doc: Document) -> Document:
        doc["connections"] = edges
        return doc

    return [Suggestion("parallelize", moved, rationale, change=change)]


def _time_limit(node: Node, step_timeout: float) -> tuple[float, str]:
    """How long the step may take now, and where that limit is set."""
    if node.action_type == "http_request":
        own = node.config.get("timeout")
        seconds = float(own) if isinstance(own, int | float) else DEFAULT_TIMEOUT
        return min(seconds, node.timeout or seconds), "the request timeout"
    return node.timeout or step_timeout, "the step timeout"


def _set_time_limit(doc: Document, node_id: str, seconds: float) -> Document:
    spec = _node_doc(doc, node_id)
    if spec["config"].get("action_type") == "http_request":
        # The request's own timeout: a timed-out call is a retryable error (a step's time
        # limit would end the step without its retries).
        spec["config"]["timeout"] = seconds
        if spec.get("timeout") is not None and spec["timeout"] < seconds:
            spec.pop("timeout")
    else:
        spec["timeout"] = seconds
    return doc


def tighten_timeouts(definition: Definition, ctx: Context) -> list[Suggestion]:
    """A fast, measured step gets a timeout a few times its p99 instead of the default."""
    out = []
    for node in definition.nodes:
        fig = ctx.measured.get(node.id)
        if node.type is not NodeType.ACTION or fig is None or fig.samples < MIN_SAMPLES:
            continue
        if node.action_type in ("delay", "transform", "log"):
            continue
        proposed = float(max(MIN_TIMEOUT, math.ceil(3 * fig.p99_ms / 1000)))
        current, where = _time_limit(node, ctx.step_timeout)
        if proposed * 4 > current:
            continue

        def change(doc: Document, node_id: str = node.id, seconds: float = proposed) -> Document:
            return _set_time_limit(doc, node_id, seconds)

        out.append(
            Suggestion(
                "timeout",
                [node.id],
                f"{node.id} took {_ms(fig.p99_ms)} at p99 over {fig.samples} runs but may run "
                f"{current:g} s ({where}) before it is stopped; {proposed:g} s (3x p99, at "
                f"least {MIN_TIMEOUT} s) frees the worker and fails fast (a retry, if set, "
                "starts sooner) when the service hangs. A call slower than that now fails "
                "instead of waiting.",
                change=change,
            )
        )
    return out


DEFAULT_CACHE_TTL = 300.0
"""The TTL proposed for a response that did not change over the runs read (s)."""
MIN_CACHE_TTL = 30.0
"""A response that changes more often than twice this is not worth caching (s)."""
MIN_CACHE_SAVING_MS = 20.0


def _constant_request(node: Node) -> bool:
    """True when the request is the same every run (no template in what is sent)."""
    sent = {k: v for k, v in node.config.items() if k not in ("description", "timeout")}
    return not any(is_template(v) for v in _strings(sent))


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def cache(definition: Definition, ctx: Context) -> list[Suggestion]:
    """A read that sends the same request every run and gets the same answer is cached."""
    out = []
    for node in definition.nodes:
        fig = ctx.measured.get(node.id)
        if node.action_type != "http_request" or fig is None or fig.outputs < MIN_SAMPLES:
            continue
        method = str(node.config.get("method", "GET")).upper()
        if method not in ("GET", "HEAD") or "cache_ttl" in node.config:
            continue
        if not _constant_request(node) or fig.p50_ms - CACHE_HIT_MS[0] < MIN_CACHE_SAVING_MS:
            continue
        if fig.output_changes == 0:
            ttl = DEFAULT_CACHE_TTL
            seen = f"its response body was the same in all {fig.outputs} runs read"
        else:
            every = fig.output_span_s / fig.output_changes
            ttl = float(min(DEFAULT_CACHE_TTL, math.floor(every / 2)))
            seen = (
                f"its response body changed {fig.output_changes} times in {fig.outputs} runs "
                f"over {fig.output_span_s:.0f} s (about every {every:.0f} s)"
            )
            if ttl < MIN_CACHE_TTL:
                continue
        hits = hit_rate(ttl, ctx.run_interval_s)
        if hits < 0.5:
            continue
        out.append(
            Suggestion(
                "cache",
                [node.id],
                f"{node.id} sends the same {method} every run (nothing in its request is "
                f"templated) and {seen}. Runs start about every "
                f"{ctx.run_interval_s:.3g} s, so a response cache of {ttl:g} s (cache_ttl) "
                f"would answer about {hits:.0%} of runs from Redis (~{CACHE_HIT_MS[0]:g} ms, "
                f"an estimate) instead of a {_ms(fig.p50_ms)} call. A run may then see a "
                f"response up to {ttl:g} s old, so this changes behaviour: it is listed, not "
                "applied; accept it when applying if that is fine.",
                changes_behaviour=True,
                patch=[{"op": "set", "node": node.id, "path": "config.cache_ttl", "value": ttl}],
            )
        )
    return out


# -- cost --------------------------------------------------------------------------------------


def _request_key(node: Node) -> str | None:
    if node.action_type != "http_request" or dataflow.side_effect(node):
        return None
    config = {k: v for k, v in node.config.items() if k != "description"}
    config["method"] = str(config.get("method", "GET")).upper()
    return json.dumps(config, sort_keys=True, default=str)


def dedupe(definition: Definition, ctx: Context) -> list[Suggestion]:
    """Identical reads (method, URL, params, body, headers) in one run are made once."""
    graph = definition.graph()
    anc = dataflow.ancestors(graph)
    effectful = {n.id for n in definition.nodes if dataflow.side_effect(n)}
    frozen = dataflow.frozen_nodes(definition, graph)
    order = graph.topological_order()
    first: dict[str, str] = {}
    out = []
    for node_id in order:
        node = definition.node(node_id)
        key = _request_key(node)
        if key is None or node_id in frozen:
            continue
        keeper = first.get(key)
        if keeper is None:
            first[key] = node_id
            continue
        if node_id in anc[keeper] or not (anc[node_id] & effectful) <= anc[keeper]:
            continue

        def change(doc: Document, dup: str = node_id, keep: str = keeper) -> Document:
            spec = _node_doc(doc, dup)
            spec["config"] = {
                "action_type": "transform",
                "output": "{{ steps." + keep + ".output }}",
            }
            spec.pop("retry", None)
            spec.pop("timeout", None)
            if not any(e["source"] == keep and e["target"] == dup for e in doc["connections"]):
                doc["connections"].append({"source": keep, "target": dup})
            return doc

        out.append(
            Suggestion(
                "dedupe",
                [keeper, node_id],
                f"{node_id} sends the same request as {keeper} "
                f"({node.config.get('method', 'GET')} {node.config.get('url')}, same params, "
                f"body and headers, rendered from the same values), with no write in between; "
                f"{node_id} now takes {keeper}'s response instead of calling again "
                "(one call less per run; its output is the same).",
                change=change,
            )
        )
    return out


def _endpoint(node: Node) -> tuple[str, str] | None:
    """(the collection, the item) a plain read fetches: ``GET host/items/{id}`` and the id
    when the last path segment is an id (it has a digit or a template), else ``GET
    host/path?name=`` and the values when the query names the item; None otherwise."""
    if node.action_type != "http_request" or dataflow.side_effect(node):
        return None
    method = str(node.config.get("method", "GET")).upper()
    parts = urlsplit(str(node.config.get("url", "")))
    if not parts.netloc or "{" in parts.netloc:
        return None
    params = node.config.get("params")
    query = json.dumps(params, sort_keys=True, default=str) if params else ""
    head, _, last = parts.path.rstrip("/").rpartition("/")
    if "{{" in last or any(c.isdigit() for c in last):
        return f"{method} {parts.scheme}://{parts.netloc}{head}/{{id}}{query}", last
    if isinstance(params, dict) and params:
        names = "&".join(f"{k}=" for k in sorted(params))
        return f"{method} {parts.scheme}://{parts.netloc}{parts.path}?{names}", query
    return None


def batch(definition: Definition, ctx: Context) -> list[Suggestion]:
    """Reads of the same collection of a service (``.../items/1``, ``.../items/2``), none
    reading another, could be one call if the service has a batch endpoint."""
    groups: dict[str, list[Node]] = {}
    for node in definition.nodes:
        found = _endpoint(node)
        if found is not None:
            groups.setdefault(found[0], []).append(node)
    figures = ctx.figures(definition)
    out = []
    for endpoint, nodes in groups.items():
        ids = [n.id for n in nodes]
        independent = [n for n in nodes if not (dataflow.reads(n) or set()) & set(ids) - {n.id}]
        if len(independent) < 2 or len({_endpoint(n) for n in independent}) < 2:
            continue  # one read, reads that depend on each other, or the same read (dedupe)
        chosen = [n.id for n in independent]
        saved = sum(figures[i].calls for i in chosen[1:])
        out.append(
            Suggestion(
                "batch",
                chosen,
                f"{', '.join(chosen)} read items of one collection ({endpoint}) one per "
                f"call, and none reads another's output. If the service answers several items "
                f"in one request (a batch or multi-get endpoint: ids=a,b,c), one call replaces "
                f"{len(chosen)} ({saved:g} call(s) less per run). ATOM cannot tell from the "
                "definition whether the service offers that, and the step outputs would take "
                "another shape, so this is listed for you to make, not applied; its figures "
                "count the calls saved and leave the durations as they are.",
                changes_behaviour=True,
                figures_override={i: replace(figures[i], calls=0.0) for i in chosen[1:]},
            )
        )
    return out


def drop_unused(definition: Definition, ctx: Context) -> list[Suggestion]:
    """Steps whose output nothing reads (and which are not final steps) are cut."""
    used = dataflow.used_outputs(definition)
    if used is None:
        return []
    graph = definition.graph()
    frozen = dataflow.frozen_nodes(definition, graph)
    out = []
    for node in definition.nodes:
        if node.type is not NodeType.ACTION or node.id in used or not graph.successors[node.id]:
            continue
        effect = dataflow.side_effect(node)
        if node.action_type == "log":
            effect = "writes a log line (the line is its point)"
        gated = sorted(
            w
            for w in graph.reachable_from(node.id) - {node.id}
            if dataflow.side_effect(definition.node(w))
        )
        if not effect and gated:
            effect = f"gates {', '.join(gated[:5])} (a failed {node.id} stops them from running)"
        blocked = node.id in frozen or any(
            definition.node(s).type is not NodeType.ACTION or s in frozen
            for s in graph.successors[node.id]
        )
        if blocked and not effect:
            continue
        calls = ctx.figures(definition)[node.id].calls

        def change(doc: Document, gone: str = node.id) -> Document:
            inbound = [e for e in doc["connections"] if e["target"] == gone]
            outbound = [e for e in doc["connections"] if e["source"] == gone]
            edges = [e for e in doc["connections"] if gone not in (e["source"], e["target"])]
            pairs = {(e["source"], e["target"]) for e in edges}
            for i in inbound:
                for o in outbound:
                    if (i["source"], o["target"]) not in pairs:
                        edges.append({**i, "target": o["target"]})
                        pairs.add((i["source"], o["target"]))
            doc["connections"] = edges
            doc["nodes"] = [n for n in doc["nodes"] if n["id"] != gone]
            return doc

        if effect:
            out.append(
                Suggestion(
                    "drop_unused",
                    [node.id],
                    f"No step reads the output of {node.id}, but it {effect}; cutting it "
                    "would stop that, so it is listed, not applied.",
                    changes_behaviour=True,
                    change=None if blocked else change,
                )
            )
        else:
            out.append(
                Suggestion(
                    "drop_unused",
                    [node.id],
                    f"No step reads the output of {node.id} and it has no side effect "
                    f"({node.action_type}); cutting it saves {calls:g} call(s) and "
                    f"{_ms(ctx.figures(definition)[node.id].p50_ms)} per run. Its failure "
                    "no longer fails the run.",
                    change=change,
                )
            )
    return out


def no_retry(definition: Definition, ctx: Context) -> list[Suggestion]:
    """Statuses retried although history shows they never recover stop being retried."""
    out = []
    for node in definition.nodes:
        fig = ctx.measured.get(node.id)
        if fig is None or not node.retry.retry_on:
            continue
        hopeless = sorted(s for s in node.retry.retry_on if fig.wasted_retries.get(s))
        if not hopeless:
            continue
        keep = [s for s in node.retry.retry_on if s not in hopeless]

        def change(doc: Document, node_id: str = node.id, left: list = keep) -> Document:
            retry = _node_doc(doc, node_id).setdefault("retry", {})
            if left:
                retry["retry_on"] = left
            else:
                retry.pop("retry_on", None)
            return doc

        wasted = sum(fig.wasted_retries[s] for s in hopeless)
        out.append(
            Suggestion(
                "no_retry",
                [node.id],
                f"{node.id} retried HTTP {', '.join(map(str, hopeless))} {wasted} times in "
                f"{fig.samples} runs and never recovered: a client error answers the same "
                "way every time. Those statuses now fail at once (fewer calls, sooner).",
                change=change,
            )
        )
    return out


# -- reliability -------------------------------------------------------------------------------


def _interval(fig: StepFigures) -> str:
    """The uncertainty of a measured success rate, in words (the calls and p95 a retry
    policy is predicted to cost follow it)."""
    if fig.attempts <= 0:
        return ""
    low, high = wilson(fig.success * fig.attempts, fig.attempts)
    return (
        f" ({fig.attempts} attempts; 95 % interval {low:.0%}-{high:.0%}, which the predicted "
        "calls and p95 below inherit)"
    )


def _retries_for(success: float) -> int:
    for n in range(MAX_RETRIES + 1):
        if 1 - (1 - success) ** (n + 1) >= TARGET_STEP_SUCCESS:
            return n
    return MAX_RETRIES


def retries(definition: Definition, ctx: Context) -> list[Suggestion]:
    """Retries with backoff where history shows failures a later attempt gets past."""
    out = []
    for node in definition.nodes:
        fig = ctx.measured.get(node.id)
        if node.type is not NodeType.ACTION or fig is None or fig.transient_failures == 0:
            continue
        if step_success(fig, node.retry) >= TARGET_STEP_SUCCESS:
            continue
        wanted = max(_retries_for(fig.success), node.retry.max_retries + 1)
        if wanted <= node.retry.max_retries:
            continue
        rate_limited = fig.failures.get("rate_limited", 0) > 0
        policy = dict(TRANSIENT_RETRY, max_retries=wanted)
        if rate_limited:
            policy["retry_delay"] = 2.0
        method = str(node.config.get("method", "GET")).upper()
        unsafe = node.action_type != "http_request" and bool(dataflow.side_effect(node))
        unsafe = unsafe or (node.action_type == "http_request" and method not in IDEMPOTENT_METHODS)
        kinds = ", ".join(f"{k} x{v}" for k, v in sorted(fig.failures.items())) or "retried"
        after = 1 - (1 - fig.success) ** (wanted + 1)

        def change(doc: Document, node_id: str = node.id, spec: dict = policy) -> Document:
            old = _node_doc(doc, node_id).get("retry") or {}
            _node_doc(doc, node_id)["retry"] = {**old, **spec}
            return doc

        text = (
            f"{node.id} failed {fig.transient_failures} of its attempts over {fig.samples} "
            f"runs on transient causes ({kinds}); an attempt succeeds {fig.success:.0%} of the "
            f"time{_interval(fig)}. {wanted} retries with backoff "
            f"({policy['retry_delay']:g} s, x2) raise the step's success from "
            f"{step_success(fig, node.retry):.1%} to {after:.1%}."
        )
        if unsafe:
            text += (
                f" It is not idempotent ({dataflow.side_effect(node)}): a retry after a "
                "timeout may repeat it (the http action sends a stable Idempotency-Key, which "
                "helps only if the service honours it), so this is listed, not applied; accept it "
                "when applying if the service tolerates a repeat."
            )
        patch = [
            {"op": "set", "node": node.id, "path": f"retry.{key}", "value": value}
            for key, value in policy.items()
        ]
        out.append(
            Suggestion(
                "retry",
                [node.id],
                text,
                changes_behaviour=unsafe,
                change=None if unsafe else change,
                patch=patch if unsafe else None,
            )
        )
    return out


def timeouts_missing(definition: Definition, ctx: Context) -> list[Suggestion]:
    """A step with no timeout of its own gets one from its p99 (or its estimate)."""
    out = []
    figures = ctx.figures(definition)
    for node in definition.nodes:
        if node.type is not NodeType.ACTION or node.timeout is not None:
            continue
        if node.action_type in ("delay", "transform", "log", "http_request"):
            continue  # an HTTP call always has its request timeout (30 s by default)
        fig = figures[node.id]
        basis = fig.p99_ms if fig.source == "history" and fig.samples >= MIN_SAMPLES else None
        seconds = float(max(5, math.ceil(5 * (basis or fig.p95_ms) / 1000)))
        if seconds >= ctx.step_timeout:
            continue
        where = (
            f"its p99 over {fig.samples} runs is {_ms(basis)}"
            if basis is not None
            else f"estimated p95 for {node.action_type} is {_ms(fig.p95_ms)}"
        )

        def change(doc: Document, node_id: str = node.id, s: float = seconds) -> Document:
            _node_doc(doc, node_id)["timeout"] = s
            return doc

        out.append(
            Suggestion(
                "timeout",
                [node.id],
                f"{node.id} has no timeout of its own, so a hung call holds a worker for "
                f"ATOM_STEP_TIMEOUT ({ctx.step_timeout:g} s); {where}, so {seconds:g} s "
                "bounds it with a wide margin.",
                change=change,
            )
        )
    return out


def fallback(definition: Definition, ctx: Context) -> list[Suggestion]:
    """A dependency that stays flaky even with retries deserves a fallback branch."""
    out = []
    for node in definition.nodes:
        fig = ctx.measured.get(node.id)
        if node.type is not NodeType.ACTION or fig is None or fig.transient_failures == 0:
            continue
        best = 1 - (1 - fig.success) ** (max(node.retry.max_retries, MAX_RETRIES) + 1)
        if fig.success >= FALLBACK_BELOW and best >= TARGET_STEP_SUCCESS:
            continue
        out.append(
            Suggestion(
                "fallback",
                [node.id],
                f"{node.id} succeeds on only {fig.success:.0%} of attempts; besides retries, "
                "give it a fallback: a second step (another endpoint, a cached copy) that runs "
                "when it fails, joined by a step with trigger_rule one_success. That changes "
                "what the run returns when the dependency is down, so it is not applied; the "
                "figures assume the fallback itself succeeds 99% of the time.",
                changes_behaviour=True,
                success_override={node.id: 1 - (1 - step_success(fig, node.retry)) * 0.01},
            )
        )
    return out


PLANS: dict[str, tuple[Generator, ...]] = {
    "performance": (parallelize, tighten_timeouts, cache),
    "cost": (dedupe, batch, drop_unused, no_retry),
    "reliability": (retries, timeouts_missing, fallback),
    "hybrid": (
        dedupe,
        batch,
        drop_unused,
        no_retry,
        retries,
        fallback,
        parallelize,
        tighten_timeouts,
        timeouts_missing,
        cache,
    ),
}


@dataclass(frozen=True)
class Analysis:
    """The outcome of one strategy on one definition."""

    suggestions: list[dict[str, Any]]
    optimized: Document
    predicted: dict[str, Any]
    trade_offs: list[str] | None


def analyze(definition: Definition, ctx: Context, strategy: str) -> Analysis:
    """Run ``strategy`` on ``definition`` (see the module docstring)."""
    doc = definition.to_dict()
    current = definition
    before = ctx.predict(definition)
    shown: list[dict[str, Any]] = []
    for generate in PLANS[strategy]:
        for suggestion in generate(current, ctx):
            expected, candidate = _try(current, doc, suggestion, ctx)
            if expected is None:
                continue
            if suggestion.kind == "parallelize" and not _faster(expected, ctx.predict(current)):
                continue  # its compiled plan would not finish sooner (predict.py)
            if candidate is not None and not suggestion.changes_behaviour:
                doc, current = candidate
            shown.append(
                {
                    "kind": suggestion.kind,
                    "nodes": suggestion.nodes,
                    "rationale": suggestion.rationale,
                    "expected": expected.as_dict(),
                    "changes_behaviour": suggestion.changes_behaviour,
                    "applied": candidate is not None and not suggestion.changes_behaviour,
                }
                | ({"patch": suggestion.patch} if suggestion.patch and candidate else {})
            )
    after = ctx.predict(current)
    trade_offs = _trade_offs(shown, before, after) if strategy == "hybrid" else None
    return Analysis(
        suggestions=shown,
        optimized=current.to_dict(),
        predicted={"before": before.as_dict(), "after": after.as_dict()},
        trade_offs=trade_offs,
    )


def _faster(expected: Figures, now: Figures) -> bool:
    return (expected.duration_p50_ms or 0) < (now.duration_p50_ms or 0)


def _try(
    current: Definition, doc: Document, suggestion: Suggestion, ctx: Context
) -> tuple[Figures | None, tuple[Document, Definition] | None]:
    """The figures with the suggestion applied, and the new (document, definition)."""
    if suggestion.change is None:
        figures = ctx.figures(current) | suggestion.figures_override
        return (
            predict(
                current,
                figures,
                overhead=ctx.overhead_ms,
                slots=ctx.slots,
                success_override=suggestion.success_override,
            ),
            None,
        )
    changed = suggestion.change(copy.deepcopy(doc))
    try:
        definition = parse_definition(changed)
        compile_plan(definition)
    except DefinitionError:
        return None, None  # a change that would not validate is never offered
    return ctx.predict(definition), (definition.to_dict(), definition)


def _pct(before: float | None, after: float | None) -> str:
    if not before or after is None:
        return "n/a"
    return f"{(after - before) / before:+.0%}"


def _trade_offs(shown: list[dict[str, Any]], before: Figures, after: Figures) -> list[str]:
    """What the hybrid plan gives up for what it gains, in figures."""
    kinds = {s["kind"] for s in shown if s["applied"]}
    out = [
        f"Overall: p50 {_pct(before.duration_p50_ms, after.duration_p50_ms)}, p95 "
        f"{_pct(before.duration_p95_ms, after.duration_p95_ms)}, calls "
        f"{_pct(before.calls, after.calls)}, success rate "
        f"{(before.success_rate or 0):.1%} -> {(after.success_rate or 0):.1%}."
    ]
    if "retry" in kinds:
        out.append(
            "Retries trade time for success: a run that needs them takes longer (p95 grows "
            "by the backoff) and makes more calls, but fails less often."
        )
    if "parallelize" in kinds:
        out.append(
            "Parallel steps finish sooner but call their services at the same time: the peak "
            "load on a service and on the worker pool rises (a rate-limited API may answer "
            '429 more often; keep such calls in order with "ordered": true).'
        )
    if "drop_unused" in kinds:
        out.append(
            "Cut reads no longer gate the run: a run they used to fail now succeeds without them."
        )
    if "timeout" in kinds:
        out.append(
            "Tighter timeouts free workers from hung calls sooner, but fail a call that is "
            "only unusually slow."
        )
    if any(s["kind"] == "cache" for s in shown):
        out.append(
            "A response cache (listed) trades freshness for time and calls: a cached read "
            "answers in milliseconds and calls nothing, but a run may see an answer up to its "
            "TTL old."
        )
    if any(s["kind"] == "batch" for s in shown):
        out.append(
            "A batch call (listed) saves calls but makes one request's failure fail every "
            "item in it, and needs the service to offer it."
        )
    if any(s["changes_behaviour"] for s in shown):
        out.append(
            "Suggestions marked changes_behaviour (listed, not applied) would change what "
            "the workflow does; apply them by hand if the change is wanted."
        )
    return out
