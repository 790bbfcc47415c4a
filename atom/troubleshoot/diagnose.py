"""Diagnosis: from what ATOM recorded about a run to issues, root cause first.

A pure function of a :class:`~atom.troubleshoot.records.Context`. Each failed step is
classified from the strongest evidence it has: a timeout recorded by the engine, the HTTP
status the step received (with its ``Retry-After``), a template that named a field its
upstream step's output does not have, then the words of its error. The DAG separates the
root cause from its effects: the steps that were skipped or cancelled because of it are
effects; a failure that began with a new workflow version (the node, or one it reads from,
changed; earlier versions ran it) is a version regression whatever its symptom. Earlier runs
of the same step, other workflows calling the same host and the user's own log lines are
evidence that raises or lowers the confidence.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from difflib import SequenceMatcher
from email.utils import parsedate_to_datetime
from typing import Any

from atom.troubleshoot.categories import TRANSIENT, Category
from atom.troubleshoot.classify import classify, database_is_transient, status_category
from atom.troubleshoot.records import Context, StepRecord
from atom.workflow.definition import Definition, Node, NodeType

C = Category

CROWDED = 0.8
"""A step whose durations reach this share of its time limit is running out of time."""


@dataclass
class Issue:
    """One finding: a category at a node, the evidence for it and what to do about it."""

    category: Category
    node_id: str | None
    root_cause: bool
    summary: str
    confidence: float
    evidence: list[dict[str, Any]] = field(default_factory=list)
    transient: bool = False
    details: dict[str, Any] = field(default_factory=dict)
    """Facts the resolution needs (retry_after_s, limit_s, the template fix ...)."""

    def as_dict(self) -> dict[str, Any]:
        """The issue without its resolution (added by ``resolutions``)."""
        return {
            "category": self.category.value,
            "node_id": self.node_id,
            "root_cause": self.root_cause,
            "summary": self.summary,
            "evidence": self.evidence,
            "confidence": round(min(max(self.confidence, 0.0), 1.0), 2),
            "transient": self.transient,
        }


# ---------------------------------------------------------------------------------------------
# Reading the records


def retry_after_seconds(headers: Any, now: datetime) -> float | None:
    """The ``Retry-After`` of a recorded answer, in seconds (a number or an HTTP date)."""
    if not isinstance(headers, dict):
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(text) - now).total_seconds())
    except (TypeError, ValueError):
        return None


_LOCATION = re.compile(r"^nodes\[(?P<node>[^\]]+)\]\.config(?P<path>[^:]*):\s*(?P<rest>.*)$", re.S)
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_REFERENCE = re.compile(r"steps\.([A-Za-z0-9_-]+)\.output((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)")
_MISSING_NAME = re.compile(r"has no attribute '([^']+)'|'([^']+)' is undefined|KeyError: '([^']+)'")


def _path(text: str) -> list[str | int]:
    return [
        m.group(1) if m.group(1) is not None else int(m.group(2)) for m in _PATH_PART.finditer(text)
    ]


def _get(value: Any, path: list[str | int]) -> tuple[bool, Any]:
    for part in path:
        if isinstance(part, int) and isinstance(value, list) and -len(value) <= part < len(value):
            value = value[part]
        elif isinstance(part, str) and isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return False, None
    return True, value


def _candidates(value: Any, prefix: list[str | int], depth: int = 0) -> list[list[str | int]]:
    """Every key path inside a JSON value (bounded), to look for a renamed field."""
    found: list[list[str | int]] = []
    if depth > 6:
        return found
    if isinstance(value, dict):
        for k, v in list(value.items())[:200]:
            found.append([*prefix, k])
            found.extend(_candidates(v, [*prefix, k], depth + 1))
    elif isinstance(value, list) and value:
        found.extend(_candidates(value[0], [*prefix, 0], depth + 1))
    return found


def _dotted(path: list[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _closest_field(output: Any, missing: str) -> list[str | int] | None:
    """A field of the same (or a very similar) name elsewhere in the output: a rename."""
    wanted = _norm(missing)
    best, best_score = None, 0.0
    for candidate in _candidates(output, []):
        last = candidate[-1]
        if not isinstance(last, str):
            continue
        score = SequenceMatcher(None, wanted, _norm(last)).ratio()
        if _norm(last) == wanted:
            score = 1.0 + 1.0 / (1 + len(candidate))  # exact name: prefer the shallowest
        if score > best_score:
            best, best_score = candidate, score
    return best if best_score >= 0.75 else None


def template_problem(step: StepRecord, node: Node, run_steps: dict[str, StepRecord]) -> dict | None:
    """For a step whose template named a missing value: where, which upstream output, what
    is missing, what that output has instead, and the closest field by name (a fix)."""
    message = (step.error or {}).get("message", "")
    match = _LOCATION.match(message)
    if not match or match.group("node") != node.id:
        return None
    rest = match.group("rest")
    if not re.search(r"undefined|has no attribute|no attribute|KeyError|not subscriptable", rest):
        return None
    location = _path(match.group("path"))
    found, template = _get(node.config, location)
    if not found or not isinstance(template, str):
        template = None
    problem: dict[str, Any] = {"location": f"nodes[{node.id}].config{match.group('path')}"}
    name_match = _MISSING_NAME.search(rest)
    missing_name = next((g for g in name_match.groups() if g), None) if name_match else None
    for ref in _REFERENCE.finditer(template or ""):
        upstream, ref_path = ref.group(1), _path(ref.group(2))
        record = run_steps.get(upstream)
        if record is None:
            continue
        ok, _ = _get(record.output, ref_path)
        if ok:
            continue
        # The longest prefix that exists, and the part that does not.
        depth = 0
        while depth < len(ref_path) and _get(record.output, ref_path[: depth + 1])[0]:
            depth += 1
        _, parent = _get(record.output, ref_path[:depth])
        missing = ref_path[depth]
        problem.update(
            template=template,
            upstream=upstream,
            reference=ref.group(0),
            missing=_dotted(ref_path[: depth + 1]).lstrip("."),
            available=sorted(parent)[:30] if isinstance(parent, dict) else type(parent).__name__,
        )
        best = _closest_field(record.output, str(missing))
        if best is not None:
            replacement = f"steps.{upstream}.output{_dotted(best)}"
            problem.update(
                replacement=replacement,
                fixed_template=template.replace(ref.group(0), replacement) if template else None,
            )
        return problem
    if missing_name:
        problem["missing"] = missing_name
    return problem


# ---------------------------------------------------------------------------------------------
# One failed step


def _limit(node: Node, step: StepRecord) -> float | None:
    """The time limit the step ran under: the node's timeout, else the http client's."""
    if node.timeout:
        return float(node.timeout)
    config_timeout = (step.input or {}).get("timeout") if isinstance(step.input, dict) else None
    if isinstance(config_timeout, int | float):
        return float(config_timeout)
    if node.action_type == "http_request":
        return 30.0
    return None


def _durations(ctx: Context, node_id: str) -> list[float]:
    values = []
    for run in ctx.history:
        step = run.steps.get(node_id)
        if step and step.status == "succeeded" and step.duration_s is not None:
            values.append(step.duration_s)
    return values


def classify_step(ctx: Context, step: StepRecord) -> Issue:
    """The category of one failed step, with the evidence that decided it."""
    node = ctx.definition.node(step.node_id)
    error = step.error or {}
    message = str(error.get("message", ""))
    evidence: list[dict[str, Any]] = [
        {
            "kind": "step_error",
            "node_id": step.node_id,
            "type": error.get("type"),
            "message": message,
        },
        {"kind": "attempts", "attempts": step.attempts, "max_retries": node.retry.max_retries},
    ]
    # Attempts count across retries of the run, and a retry policy compares with them.
    details: dict[str, Any] = {"attempts": step.attempts}
    code = step.status_code
    template = template_problem(step, node, ctx.run.steps)
    if template is not None:
        evidence.append({"kind": "missing_field", **template})
        details["template"] = template
        where = f"{template['upstream']}'s output" if "upstream" in template else "its input"
        summary = (
            f"step {step.node_id!r} names {template.get('missing', 'a value')!r}, which "
            f"{where} no longer has"
        )
        return Issue(C.DATA_SHAPE, step.node_id, True, summary, 0.95, evidence, False, details)
    if error.get("type") == "TimeoutError" or re.search(r"timed out after", message):
        limit = _limit(node, step)
        past = _durations(ctx, step.node_id)
        details.update(limit_s=limit, node_timeout=node.timeout)
        entry: dict[str, Any] = {"kind": "time_limit", "limit_s": limit}
        if past:
            p95 = sorted(past)[int(0.95 * (len(past) - 1))]
            entry.update(earlier_runs=len(past), p50_s=statistics.median(past), p95_s=p95)
            details["p95_s"] = p95
        evidence.append(entry)
        return Issue(
            C.TIMEOUT,
            step.node_id,
            True,
            f"step {step.node_id!r} ran out of time ({limit:g} s)"
            if limit
            else f"step {step.node_id!r} timed out",
            0.9,
            evidence,
            True,
            details,
        )
    if code is not None and code >= 400:
        category = status_category(code) or C.UNKNOWN
        evidence.append({"kind": "status_code", "status_code": code, "host": step.host})
        confidence = 0.95
        if category is C.RATE_LIMITED:
            headers = step.output.get("headers") if isinstance(step.output, dict) else None
            wait = retry_after_seconds(headers, ctx.now)
            if wait is not None:
                evidence.append({"kind": "retry_after", "seconds": wait})
            details["retry_after_s"] = wait
        summary = f"step {step.node_id!r}: {step.host or 'the service'} answered {code}"
        return Issue(
            category,
            step.node_id,
            True,
            summary,
            confidence,
            evidence,
            category in TRANSIENT,
            details,
        )
    if (
        node.action_type == "http_request"
        and error.get("type") == "RetryableError"
        and re.search(r" failed: \w+$", message)
    ):
        # The http action words it this way only when the request got no answer at all.
        evidence.append({"kind": "no_answer", "host": step.host})
        return Issue(
            C.CONNECTION,
            step.node_id,
            True,
            f"step {step.node_id!r} could not reach {step.host or 'the service'}",
            0.9,
            evidence,
            True,
            details,
        )
    found = classify(f"{error.get('type', '')}: {message}")
    category = found.category
    if category is C.DATABASE:
        transient = database_is_transient(message)
    else:
        transient = category in TRANSIENT
    evidence.append({"kind": "error_words", "matched": list(found.matched)})
    summary = f"step {step.node_id!r} failed: {message[:200]}"
    return Issue(
        category, step.node_id, True, summary, found.confidence, evidence, transient, details
    )


# ---------------------------------------------------------------------------------------------
# Context: history, versions, neighbours, logs


def _ancestors(definition: Definition, node_id: str) -> set[str]:
    preds: dict[str, set[str]] = {}
    for c in definition.connections:
        preds.setdefault(c.target, set()).add(c.source)
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        for p in preds.get(stack.pop(), ()):
            if p not in seen:
                seen.add(p)
                stack.append(p)
    return seen


def _descendants(definition: Definition, node_id: str) -> set[str]:
    succ: dict[str, set[str]] = {}
    for c in definition.connections:
        succ.setdefault(c.source, set()).add(c.target)
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        for s in succ.get(stack.pop(), ()):
            if s not in seen:
                seen.add(s)
                stack.append(s)
    return seen


def _node_doc(definition: Definition | None, node_id: str) -> Any:
    if definition is None:
        return None
    try:
        node = definition.node(node_id)
    except StopIteration:
        return None
    return (node.config, node.timeout, node.retry)


def history_evidence(ctx: Context, node_id: str) -> dict[str, Any]:
    """How this step did in earlier runs, per version."""
    per_version: dict[int, dict[str, int]] = {}
    for run in ctx.history:
        step = run.steps.get(node_id)
        if step is None or step.status not in ("succeeded", "failed"):
            continue
        counts = per_version.setdefault(run.version, {"succeeded": 0, "failed": 0})
        counts[step.status] += 1
    return {
        "kind": "history",
        "node_id": node_id,
        "earlier_runs": sum(sum(c.values()) for c in per_version.values()),
        "by_version": {str(v): c for v, c in sorted(per_version.items())},
    }


def regression(ctx: Context, issue: Issue) -> dict[str, Any] | None:
    """Evidence that the failure began with this run's version: an earlier version ran the
    step, this version never has, and the step (or one it reads from) changed."""
    if issue.node_id is None:
        return None
    version = ctx.run.version
    good_versions = sorted(
        {
            run.version
            for run in ctx.history
            if run.version < version
            and (step := run.steps.get(issue.node_id)) is not None
            and step.status == "succeeded"
        }
    )
    if not good_versions:
        return None
    ok_now = any(
        run.version == version
        and (step := run.steps.get(issue.node_id)) is not None
        and step.status == "succeeded"
        for run in ctx.history
    )
    if ok_now:
        return None
    last_good = good_versions[-1]
    before, after = ctx.versions.get(last_good), ctx.versions.get(version)
    if before is None or after is None:
        return None
    watched = {issue.node_id} | _ancestors(after, issue.node_id)
    changed = sorted(n for n in watched if _node_doc(before, n) != _node_doc(after, n))
    if not changed:
        return None
    if issue.transient and issue.node_id not in changed:
        return None  # an outage that happens to follow a change elsewhere
    return {
        "kind": "version_change",
        "last_good_version": last_good,
        "failing_version": version,
        "changed_nodes": changed,
    }


def host_evidence(ctx: Context, step: StepRecord) -> dict[str, Any] | None:
    """Other workflows calling the same host, and how they fared."""
    host = step.host
    record = ctx.hosts.get(host) if host else None
    if record is None:
        return None
    return {
        "kind": "same_host",
        "host": record.host,
        "other_workflows": record.workflows,
        "calls": record.calls,
        "failed": record.failed,
        "categories": record.categories,
    }


# ---------------------------------------------------------------------------------------------
# The whole run


@dataclass
class Diagnosis:
    """Issues, root cause first, and the user's log lines as classified."""

    issues: list[Issue]
    logs: list[dict[str, Any]]
    summary: str


def _order(definition: Definition) -> dict[str, int]:
    return {n: i for i, n in enumerate(definition.graph().topological_order())}


def _real_failure(step: StepRecord) -> bool:
    return step.status == "failed" and (step.error or {}).get("type") not in (
        "Cancelled",
        "Skipped",
    )


def diagnose(ctx: Context) -> Diagnosis:
    """The issues of one run, root cause first, then its effects, then separate findings."""
    logs = []
    for line in ctx.error_logs:
        found = classify(line)
        logs.append(
            {"line": line, "category": found.category.value, "confidence": found.confidence}
        )
    order = _order(ctx.definition)
    steps = ctx.run.steps
    failed = sorted(
        (s for s in steps.values() if _real_failure(s)),
        key=lambda s: (s.finished_at or ctx.now, order.get(s.node_id, 0)),
    )
    # The earliest failure first: a step whose worker died fails when its heartbeat stopped.
    timed = [(s.finished_at or ctx.now, classify_step(ctx, s)) for s in failed]
    timed.extend(_stuck(ctx))
    timed.sort(key=lambda pair: (pair[0], order.get(pair[1].node_id or "", 0)))
    causes = [issue for _, issue in timed]
    if not causes and ctx.run.status == "succeeded":
        causes.extend(_slow(ctx))
    for issue in causes:
        _weigh(ctx, issue)
    if causes:
        for entry in logs:
            if entry["category"] == causes[0].category.value:
                causes[0].evidence.append(
                    {"kind": "log", "line": entry["line"], "category": entry["category"]}
                )
                causes[0].confidence += 0.03
    elif logs:
        causes.extend(_from_logs(logs))
    for later in causes[1:]:
        later.root_cause = False
    issues: list[Issue] = []
    if causes:
        root = causes[0]
        issues.append(root)
        issues.extend(_effects(ctx, root, {c.node_id for c in causes}))
        issues.extend(causes[1:])
    summary = _summary(ctx, issues)
    return Diagnosis(issues, logs, summary)


def _weigh(ctx: Context, issue: Issue) -> None:
    """Add the step's history, its host's neighbours and any version change as evidence."""
    if issue.node_id is None:
        return
    step = ctx.run.steps[issue.node_id]
    issue.evidence.append(history_evidence(ctx, issue.node_id))
    if (near := host_evidence(ctx, step)) is not None:
        issue.evidence.append(near)
        if issue.category in (C.UPSTREAM_5XX, C.CONNECTION, C.TIMEOUT, C.RATE_LIMITED):
            share = near["failed"] / near["calls"] if near["calls"] else 0.0
            issue.confidence += 0.04 if share >= 0.5 else 0.0
    if (change := regression(ctx, issue)) is not None:
        change["symptom"] = issue.category.value
        issue.evidence.append(change)
        issue.details["regression"] = change
        issue.category = C.VERSION_REGRESSION
        issue.transient = False
        issue.confidence = min(0.95, 0.7 + 0.05 * len(ctx.history))
        issue.summary = (
            f"{issue.summary}; it began with version {change['failing_version']} "
            f"(version {change['last_good_version']} ran it)"
        )


def _effects(ctx: Context, root: Issue, causes: set[str | None]) -> list[Issue]:
    """The steps skipped or cancelled because the root cause failed."""
    if root.node_id is None:
        return []
    found = []
    below = _descendants(ctx.definition, root.node_id)
    for node in ctx.definition.nodes:
        step = ctx.run.steps.get(node.id)
        if step is None or node.id in causes or node.type is NodeType.TRIGGER:
            continue
        if step.status not in ("skipped", "cancelled"):
            continue
        if node.id not in below and step.status == "skipped":
            continue
        why = (step.error or {}).get("message", step.status)
        found.append(
            Issue(
                root.category,
                node.id,
                False,
                f"step {node.id!r} {step.status}: an effect of {root.node_id!r}",
                root.confidence,
                [{"kind": "effect", "of": root.node_id, "status": step.status, "reason": why}],
            )
        )
    return found


def _stuck(ctx: Context) -> list[tuple[datetime, Issue]]:
    """A running step whose heartbeat stopped: its worker was lost."""
    if ctx.run.status not in ("running", "queued"):
        return []
    found = []
    for step in ctx.run.steps.values():
        if step.status != "running" or step.heartbeat_at is None:
            continue
        silent = (ctx.now - step.heartbeat_at).total_seconds()
        if silent > ctx.heartbeat_timeout:
            found.append(
                (
                    step.heartbeat_at,
                    Issue(
                        C.WORKER_LOST,
                        step.node_id,
                        True,
                        f"step {step.node_id!r} has had no heartbeat for {silent:.0f} s: "
                        "the worker running it was lost",
                        0.85,
                        [
                            {
                                "kind": "heartbeat",
                                "silent_s": round(silent, 1),
                                "heartbeat_timeout_s": ctx.heartbeat_timeout,
                                "attempts": step.attempts,
                            }
                        ],
                        True,
                    ),
                )
            )
    return found


def _slow(ctx: Context) -> list[Issue]:
    """A step that succeeded but used most of its time limit: the next run may not fit."""
    found = []
    for step in ctx.run.steps.values():
        if step.status != "succeeded" or step.duration_s is None:
            continue
        node = ctx.definition.node(step.node_id)
        limit = _limit(node, step)
        if not limit or step.duration_s < CROWDED * limit:
            continue
        found.append(
            Issue(
                C.TIMEOUT,
                step.node_id,
                True,
                f"step {step.node_id!r} took {step.duration_s:.1f} s of its {limit:g} s limit",
                0.6,
                [{"kind": "time_limit", "limit_s": limit, "duration_s": step.duration_s}],
                False,
                {
                    "limit_s": limit,
                    "node_timeout": node.timeout,
                    "p95_s": step.duration_s,
                    "succeeded": True,
                },
            )
        )
    return found


def _from_logs(logs: list[dict[str, Any]]) -> list[Issue]:
    """No failed step: the user's own log lines are the only evidence."""
    counted: dict[str, int] = {}
    for entry in logs:
        if entry["category"] != C.UNKNOWN.value:
            counted[entry["category"]] = counted.get(entry["category"], 0) + 1
    if not counted:
        return []
    best = max(counted, key=lambda k: counted[k])
    category = Category(best)
    lines = [e for e in logs if e["category"] == best]
    transient = category in TRANSIENT and (
        category is not C.DATABASE or any(database_is_transient(e["line"]) for e in lines)
    )
    return [
        Issue(
            category,
            None,
            True,
            f"the logs point to {best.replace('_', ' ')} ({len(lines)} of {len(logs)} lines)",
            round(0.4 + 0.4 * len(lines) / len(logs), 2),
            [{"kind": "log", "line": e["line"], "category": e["category"]} for e in lines],
            transient,
        )
    ]


def _summary(ctx: Context, issues: list[Issue]) -> str:
    if not issues:
        return f"execution {ctx.run.execution_id} is {ctx.run.status}: nothing to fix was found"
    root = issues[0]
    effects = sum(1 for i in issues[1:] if i.evidence and i.evidence[0].get("kind") == "effect")
    text = f"root cause: {root.category.value}"
    if root.node_id:
        text += f" at step {root.node_id!r}"
    text += f" — {root.summary}"
    if effects:
        text += f"; {effects} later step(s) did not run because of it"
    return text
