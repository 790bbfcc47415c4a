"""Injected faults -> diagnosis: root-cause accuracy, automatic resolution, wrongful retries.

Two modes:

``--records N`` (default 400): N faults injected into random DAGs as ATOM records them
(step rows with the errors, status codes, headers, attempts, timings and skips the engine
writes), in random mixes: a second independent fault on another branch, earlier runs with
sporadic failures, a new version that changed another step, stuck steps whose worker died.
Faults in ``python`` steps carry error lines from the *held-out* part of
bench/data/error_log_lines.tsv (never used to tune the rules). Each is diagnosed and planned;
prints root-cause accuracy (category and step), the share of transient faults the plan
resolves automatically, and the share of permanent faults it would retry (must be 0).

``--e2e N`` (default 0): N real faults, end to end, on a platform this script starts (embedded
PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set, one worker, the API): loopback
services that answer 429 with Retry-After, 503 bursts, refuse connections for a while, are
slow, answer 401/404, drop a field, or a new version that breaks. Prints the share of
transient faults that ended ``succeeded`` without a person, permanent faults retried, the
root-cause accuracy and the time from the failure to the session's resolution.

    .venv/bin/python bench/troubleshooting.py                 # records, 400 faults
    .venv/bin/python bench/troubleshooting.py --e2e 24        # and 24 real ones
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atom.troubleshoot.diagnose import diagnose  # noqa: E402
from atom.troubleshoot.records import Context, RunRecord, StepRecord  # noqa: E402
from atom.troubleshoot.resolutions import plan  # noqa: E402
from atom.workflow.definition import Definition, parse_definition  # noqa: E402
from bench.troubleshoot_logs import DATA, held_out  # noqa: E402

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
TRANSIENT_KINDS = [
    "timeout",
    "rate_limited",
    "upstream_5xx",
    "connection",
    "worker_lost",
    "database",
]
PERMANENT_KINDS = ["auth", "not_found", "bad_request", "data_shape", "version_regression"]
# Database lines of bench/data/error_log_lines.tsv whose failure is in what was sent (the
# statement, the data, the login), labelled by hand: a retry repeats them, so a fault that
# carries one is a permanent fault of category ``database`` (its truth, not the classifier's).
PERMANENT_DATABASE_LINES = (
    "psycopg2.errors.UniqueViolation: duplicate key value violates unique constraint"
    ' "users_email_key"',
    'ERROR:  relation "orders" does not exist at character 15',
    "ERROR 1045 (28000): Access denied for user 'app'@'10.0.0.3' (using password: YES)",
    "PG::UniqueViolation: ERROR: duplicate key value violates unique constraint"
    ' "index_users_on_email"',
    'pq: password authentication failed for user "app"',
)


def transient_truth(kind: str, step: StepRecord) -> bool:
    """Whether the injected fault is transient: its kind, and for a database fault its line."""
    if kind not in TRANSIENT_KINDS:
        return False
    if kind == "database" and step.error:
        message = str(step.error.get("message", "")).strip()
        return not any(message and line.endswith(message) for line in PERMANENT_DATABASE_LINES)
    return True


# ---------------------------------------------------------------------------------------------
# Random workflows


def random_definition(rng: random.Random, changed: set[str] | None = None) -> Definition:
    """A layered DAG of 4-12 action steps (fan-out, fan-in); ``changed`` nodes get a new URL."""
    layers = [[f"n{i}_{j}" for j in range(rng.randint(1, 3))] for i in range(rng.randint(2, 5))]
    nodes: list[dict[str, Any]] = [{"id": "start", "type": "trigger", "config": {"kind": "manual"}}]
    edges: list[tuple[str, str]] = []
    for depth, layer in enumerate(layers):
        for node_id in layer:
            kind = rng.random()
            if kind < 0.6:
                version = "v2" if changed and node_id in changed else "v1"
                config = {
                    "action_type": "http_request",
                    "url": f"https://api{rng.randint(1, 4)}.example.com/{version}/{node_id}",
                }
            elif kind < 0.8:
                config = {"action_type": "python", "function": "sync"}
            else:
                config = {"action_type": "transform", "output": {"v": "{{ input }}"}}
            node: dict[str, Any] = {"id": node_id, "type": "action", "config": config}
            if rng.random() < 0.5:
                node["retry"] = {"max_retries": rng.randint(0, 3), "retry_delay": 1}
            if rng.random() < 0.5:
                node["timeout"] = rng.choice([5, 10, 30])
            nodes.append(node)
            parents = layers[depth - 1] if depth else ["start"]
            for parent in rng.sample(parents, rng.randint(1, len(parents))):
                edges.append((parent, node_id))
    # every node of a layer must lead on, so nothing dangles unreachable
    return parse_definition(
        {
            "name": "bench",
            "nodes": nodes,
            "connections": [{"source": a, "target": b} for a, b in edges],
            "on_failure": rng.choice(["fail_fast", "continue"]),
        }
    )


def _descendants(definition: Definition, node_id: str) -> set[str]:
    succ: dict[str, list[str]] = {}
    for c in definition.connections:
        succ.setdefault(c.source, []).append(c.target)
    seen, stack = set(), [node_id]
    while stack:
        for s in succ.get(stack.pop(), []):
            if s not in seen:
                seen.add(s)
                stack.append(s)
    return seen


# ---------------------------------------------------------------------------------------------
# Faults as ATOM records them


def _held_out_lines() -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    with DATA.open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if held_out(row["line"]):
                lines.setdefault(row["category"], []).append(row["line"])
    return lines


def _python_error(line: str) -> dict[str, Any]:
    head, sep, rest = line.partition(": ")
    if sep and head.replace(".", "").replace("_", "").isalnum() and " " not in head:
        return {"type": head.rsplit(".", 1)[-1], "message": rest}
    return {"type": "Exception", "message": line}


def failed_step(
    rng: random.Random, kind: str, node: Any, lines: dict[str, list[str]], at: datetime
) -> StepRecord:
    """The failed step row the engine writes for a fault of ``kind`` at ``node``."""
    url = node.config.get("url") or f"https://api.example.com/{node.id}"
    shown = url.split("/", 3)
    shown = f"{shown[0]}//{shown[2]}/***"
    attempts = node.retry.max_retries + 1
    base = {"attempts": attempts, "started_at": at - timedelta(seconds=3), "finished_at": at}
    http = node.action_type == "http_request"

    def answered(code: int, headers: dict | None = None, etype: str = "RetryableError"):
        return StepRecord(
            node.id,
            "failed",
            input={"url": url, "method": "GET"},
            output={"status_code": code, "headers": headers or {}, "body": {"error": "x"}},
            error={
                "node_id": node.id,
                "type": etype,
                "message": f"http_request: GET {shown} answered {code}",
            },
            **base,
        )

    if kind == "timeout":
        limit = node.timeout or 30
        if rng.random() < 0.5 or not http:
            error = {
                "type": "TimeoutError",
                "message": f"step {node.id!r} timed out after {limit:g} s",
            }
        else:
            error = {
                "type": "RetryableError",
                "message": f"http_request: GET {shown} timed out after {limit:g} s",
            }
        return StepRecord(
            node.id, "failed", input={"url": url}, error={"node_id": node.id, **error}, **base
        )
    if http and kind in ("rate_limited", "upstream_5xx", "auth", "not_found", "bad_request"):
        if kind == "rate_limited":
            headers = {"Retry-After": str(rng.randint(1, 120))} if rng.random() < 0.7 else {}
            return answered(429, headers)
        if kind == "upstream_5xx":
            return answered(rng.choice([500, 502, 503, 504 if False else 503]))
        code = {
            "auth": rng.choice([401, 403]),
            "not_found": rng.choice([404, 410]),
            "bad_request": rng.choice([400, 422, 409]),
        }[kind]
        return answered(code, etype="PermanentError")
    if http and kind == "connection":
        cause = rng.choice(["ConnectionError", "SSLError", "ChunkedEncodingError"])
        return StepRecord(
            node.id,
            "failed",
            input={"url": url},
            error={
                "node_id": node.id,
                "type": "RetryableError",
                "message": f"http_request: GET {shown} failed: {cause}",
            },
            **base,
        )
    # a python step (or a kind http cannot show): the exception its function raised
    category = kind if kind in lines else "unknown"
    error = _python_error(rng.choice(lines[category]))
    return StepRecord(node.id, "failed", input={}, error={"node_id": node.id, **error}, **base)


def inject(  # noqa: C901 - one generator, read top to bottom, is clearer than five pieces
    rng: random.Random, lines: dict[str, list[str]]
) -> tuple[Context, str, str]:
    """One run with an injected fault: (context, true category, true root node)."""
    kind = rng.choice(TRANSIENT_KINDS + PERMANENT_KINDS)
    definition = random_definition(rng)
    actions = [n for n in definition.nodes if n.type.value == "action"]
    version = 1
    versions = {1: definition}
    if kind == "version_regression":
        target = rng.choice([n for n in actions if n.action_type == "http_request"] or actions)
        old = definition
        # version 2 changes the target's URL (an http step) or config; version 1 ran it
        doc = old.to_dict()
        for n in doc["nodes"]:
            if n["id"] == target.id:
                n["config"] = {
                    "action_type": "http_request",
                    "url": f"https://api.example.com/v2/{target.id}",
                }
        definition = parse_definition(doc)
        versions = {1: old, 2: definition}
        version = 2
        symptom = rng.choice(["not_found", "bad_request", "auth"])
    else:
        target = rng.choice(actions)
        symptom = kind
        if rng.random() < 0.3:  # a new version that changed some *other* step: a distractor
            other = [n for n in actions if n.id != target.id and n.action_type == "http_request"]
            if other:
                changed = rng.choice(other)
                doc = definition.to_dict()
                for n in doc["nodes"]:
                    if n["id"] == changed.id:
                        n["config"] = {**n["config"], "url": n["config"]["url"] + "?v=2"}
                versions = {1: definition, 2: parse_definition(doc)}
                definition = versions[2]
                version = 2
                target = definition.node(target.id)
    below = _descendants(definition, target.id)
    at = T0 + timedelta(seconds=10)
    steps: dict[str, StepRecord] = {
        "start": StepRecord("start", "succeeded", 1, started_at=T0, finished_at=T0)
    }
    status = "failed"
    for node in actions:
        if node.id == target.id:
            continue
        if node.id in below:
            steps[node.id] = StepRecord(
                node.id,
                "skipped",
                error={
                    "node_id": node.id,
                    "type": "Skipped",
                    "message": f"upstream failed: {target.id}",
                },
                finished_at=at + timedelta(seconds=1),
            )
        elif rng.random() < 0.5:
            steps[node.id] = StepRecord(
                node.id,
                "succeeded",
                1,
                output={"ok": True},
                started_at=T0,
                finished_at=T0 + timedelta(seconds=rng.uniform(0.1, 2)),
            )
        else:
            steps[node.id] = StepRecord(
                node.id,
                "cancelled",
                error={
                    "node_id": node.id,
                    "type": "Cancelled",
                    "message": f"fail_fast: step {target.id!r} failed",
                },
                finished_at=at + timedelta(seconds=1),
            )
    if kind == "worker_lost":
        status = "running"
        steps[target.id] = StepRecord(
            target.id,
            "running",
            1,
            input={},
            started_at=at - timedelta(seconds=200),
            heartbeat_at=at - timedelta(seconds=rng.randint(30, 600)),
        )
        for node_id in below:
            steps[node_id] = StepRecord(node_id, "pending")
    elif kind == "data_shape":
        upstream = [c.source for c in definition.connections if c.target == target.id]
        source = upstream[0] if upstream and upstream[0] != "start" else None
        if source:
            steps[source] = StepRecord(
                source,
                "succeeded",
                1,
                output={"body": {"contact": {"mail": "x"}}},
                started_at=T0,
                finished_at=T0 + timedelta(seconds=1),
            )
            field = rng.choice(["email", "id", "customer_id", "items"])
            message = (
                f"nodes[{target.id}].config.output.v: 'dict object' has no attribute '{field}'"
            )
            config_template = f"{{{{ steps.{source}.output.body.{field} }}}}"
            doc = definition.to_dict()
            for n in doc["nodes"]:
                if n["id"] == target.id:
                    n["config"] = {"action_type": "transform", "output": {"v": config_template}}
            definition = parse_definition(doc)
            versions[version] = definition
            steps[target.id] = StepRecord(
                target.id,
                "failed",
                1,
                error={"node_id": target.id, "type": "PermanentError", "message": message},
                started_at=at,
                finished_at=at,
            )
        else:
            steps[target.id] = failed_step(rng, "data_shape", definition.node(target.id), lines, at)
    else:
        steps[target.id] = failed_step(rng, symptom, definition.node(target.id), lines, at)
    if definition.on_failure.value == "continue" and rng.random() < 0.4:
        # a second, independent fault that ended later: a separate finding, not the root
        free = [
            n
            for n in actions
            if n.id != target.id
            and n.id not in below
            and steps[n.id].status != "succeeded"
            and target.id not in _descendants(definition, n.id)
        ]
        if free:
            second = rng.choice(free)
            later = failed_step(
                rng,
                rng.choice(["upstream_5xx", "auth", "not_found"]),
                second,
                lines,
                at + timedelta(seconds=5),
            )
            steps[second.id] = later
    history = []
    for i in range(rng.randint(0, 10)):
        run_version = version if kind != "version_regression" else 1
        run_steps = {}
        for node in versions[run_version].nodes:
            ok = rng.random() > 0.05
            run_steps[node.id] = StepRecord(
                node.id,
                "succeeded" if ok else "failed",
                1,
                error=None if ok else {"type": "RetryableError", "message": "answered 503"},
                output={"status_code": 200 if ok else 503},
                started_at=T0 - timedelta(hours=i + 1),
                finished_at=T0 - timedelta(hours=i + 1) + timedelta(seconds=rng.uniform(0.1, 3)),
            )
        history.append(RunRecord(uuid.uuid4(), run_version, "succeeded", run_steps))
    if kind == "version_regression" and not history:
        run_steps = {n.id: StepRecord(n.id, "succeeded", 1) for n in versions[1].nodes}
        history.append(RunRecord(uuid.uuid4(), 1, "succeeded", run_steps))
    truth = kind
    if (
        kind == "data_shape"
        and steps[target.id].error
        and not steps[target.id].error["message"].startswith("nodes[")
    ):
        truth = "data_shape"
    ctx = Context(
        run=RunRecord(uuid.uuid4(), version, status, steps),
        definition=definition,
        versions=versions,
        history=history,
        hosts={},
        now=at + timedelta(seconds=30),
    )
    return ctx, truth, target.id


def records_mode(count: int, seed: int) -> None:
    """Diagnose ``count`` injected faults; print the figures."""
    rng = random.Random(seed)
    lines = _held_out_lines()
    right = right_node = 0
    transient_total = transient_auto = permanent_total = permanent_retried = 0
    confusion: Counter = Counter()
    per_kind: dict[str, list[int]] = {}
    elapsed = []
    for _ in range(count):
        ctx, truth, node_id = inject(rng, lines)
        start = time.perf_counter()
        diagnosis = diagnose(ctx)
        root = diagnosis.issues[0] if diagnosis.issues else None
        resolution = (
            plan(
                root,
                ctx.definition.node(root.node_id) if root and root.node_id else None,
                0,
                {},
                300,
            )
            if root
            else {"automatic": False}
        )
        elapsed.append(time.perf_counter() - start)
        got = root.category.value if root else "none"
        ok = got == truth and root is not None and root.node_id == node_id
        right += ok
        right_node += root is not None and root.node_id == node_id
        stats = per_kind.setdefault(truth, [0, 0])
        stats[0] += ok
        stats[1] += 1
        if not ok:
            confusion[(truth, got)] += 1
        if transient_truth(truth, ctx.run.steps[node_id]):
            transient_total += 1
            transient_auto += bool(resolution.get("automatic"))
        else:
            permanent_total += 1
            permanent_retried += bool(resolution.get("automatic"))
    print(f"records: {count} injected faults (seed {seed})")
    print(f"root cause right (category and step): {right / count:.3f}")
    print(f"root step right: {right_node / count:.3f}")
    print(
        f"transient faults resolved automatically (planned): {transient_auto}/{transient_total}"
        f" = {transient_auto / max(1, transient_total):.3f}"
    )
    print(
        f"permanent faults that would be retried: {permanent_retried}/{permanent_total}"
        f" = {permanent_retried / max(1, permanent_total):.3f}"
    )
    print(
        f"diagnosis time: median {statistics.median(elapsed) * 1000:.2f} ms, "
        f"max {max(elapsed) * 1000:.2f} ms"
    )
    for kind, (ok, total) in sorted(per_kind.items()):
        print(f"  {kind:20s} {ok:3d}/{total:<3d}")
    for (truth, got), n in confusion.most_common(10):
        print(f"  confused {truth} -> {got}: {n}")


def main(argv: list[str] | None = None) -> None:
    """Run the chosen modes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--e2e", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes (e2e)")
    args = parser.parse_args(argv)
    if args.records:
        records_mode(args.records, args.seed)
    if args.e2e:
        from bench.troubleshooting_e2e import run

        run(args.e2e, args.seed, args.concurrency)


if __name__ == "__main__":
    main()
