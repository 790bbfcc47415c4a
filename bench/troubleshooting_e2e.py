"""Real faults end to end for ``bench/troubleshooting.py --e2e N`` (see its docstring)."""

from __future__ import annotations

import random
import socket
import statistics
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._services import admin_key, serve_api, services, start, stop, wait_ready  # noqa: E402
from tests.integration.loopback import LoopbackService  # noqa: E402

TRANSIENT = ["rate_limited", "upstream_5xx", "connection", "timeout"]
PERMANENT = ["auth", "not_found", "data_shape", "version_regression"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def quiet(service: LoopbackService | None) -> None:
    """No traceback on stderr for a dropped connection or a client that gave up (timeouts)."""
    if service is not None and service.server is not None:
        service.server.handle_error = lambda request, address: None  # type: ignore[method-assign]


class Fault:
    """One injected fault: its workflow, the step it hits, and the service behind it."""

    def __init__(self, index: int, kind: str, rng: random.Random, service: LoopbackService):
        self.index, self.kind, self.rng, self.service = index, kind, rng, service
        self.path = f"/f{index}"
        self.calls = 0
        self.started: float | None = None  # the first call: an outage begins when it is seen
        self.later: LoopbackService | None = None
        self.url = f"{service.url}{self.path}"
        fetch: dict[str, Any] = {"retry": {"max_retries": 1, "retry_delay": 0.3}}
        if kind == "rate_limited":
            wait = rng.randint(1, 3)
            limit = rng.randint(2, 4)
            self._answer = lambda: (
                (429, {"e": 1}, {"Retry-After": str(wait)})
                if self.calls <= limit
                else (200, {"ok": 1})
            )
        elif kind == "upstream_5xx":
            # A burst that outlasts the step's own policy (2 tries), however long the run
            # waited in the queue: counted in calls, not seconds.
            burst = rng.randint(3, 5)
            self._answer = lambda: (503, {"e": 1}) if self.calls <= burst else (200, {"ok": 1})
        elif kind == "connection" and rng.random() < 0.5:
            # The connection is dropped without an answer for the first calls.
            dropped = rng.randint(3, 5)

            def drop() -> tuple:
                if self.calls <= dropped:
                    raise ConnectionAbortedError("dropped on purpose")
                return 200, {"ok": 1}

            self._answer = drop
        elif kind == "connection":
            # Nothing listens (connection refused) for 2-5 s from the run's submission.
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}{self.path}"
            self.later = LoopbackService(port=port)
            self.later.route(f"GET {self.path}", lambda r, m: (200, {"ok": 1}))
            self.down_for = rng.uniform(2, 5)
            self._answer = lambda: (200, {"ok": 1})
        elif kind == "timeout":
            fetch["timeout"] = 1
            self._answer = lambda: (time.sleep(1.5), (200, {"ok": 1}))[1]
        elif kind == "auth":
            self._answer = lambda: (401, {"e": "bad token"})
        elif kind in ("not_found", "version_regression"):
            self._answer = lambda: (200, {"ok": 1})
            if kind == "not_found":
                self._answer = lambda: (404, {"e": "no"})
        else:  # data_shape: the service does not return the field a later step names
            self._answer = lambda: (200, {"user": {"name": "x"}})
        service.route(f"GET {self.path}(/v2)?", self._route)
        self.fetch = fetch

    def arm(self) -> None:
        """The service that is down comes back a few seconds after the run is submitted."""
        if self.later is not None:
            threading.Timer(self.down_for, lambda: quiet(self.later.start())).start()

    def _route(self, request: Any, match: Any) -> tuple:
        self.calls += 1
        if self.started is None:
            self.started = time.monotonic()
        if match.group(1):  # version 2's URL, which does not exist
            return 404, {"e": "no"}
        return self._answer()

    def definition(self, url: str | None = None) -> dict[str, Any]:
        """A chain with the fault at a random position, and sometimes a parallel branch."""
        before = [f"pre{i}" for i in range(self.rng.randint(0, 2))]
        after = [f"post{i}" for i in range(self.rng.randint(1, 2))]
        nodes: list[dict[str, Any]] = [
            {"id": "start", "type": "trigger", "config": {"kind": "manual"}}
        ]
        edges = []
        previous = "start"
        for node_id in before:
            nodes.append(
                {
                    "id": node_id,
                    "type": "action",
                    "config": {"action_type": "transform", "output": {"n": node_id}},
                }
            )
            edges.append((previous, node_id))
            previous = node_id
        fetch = {
            "id": "fetch",
            "type": "action",
            "config": {"action_type": "http_request", "url": url or self.url},
            **self.fetch,
        }
        nodes.append(fetch)
        edges.append((previous, "fetch"))
        previous = "fetch"
        for i, node_id in enumerate(after):
            value = "{{ steps.fetch.output.body }}"
            if i == 0 and self.kind == "data_shape":
                value = "{{ steps.fetch.output.body.user.email }}"
            nodes.append(
                {
                    "id": node_id,
                    "type": "action",
                    "config": {"action_type": "transform", "output": {"v": value}},
                }
            )
            edges.append((previous, node_id))
            previous = node_id
        if self.rng.random() < 0.5:
            nodes.append(
                {
                    "id": "side",
                    "type": "action",
                    "config": {"action_type": "transform", "output": {"s": 1}},
                }
            )
            edges.append(("start", "side"))
        return {
            "name": f"fault-{self.index}-{self.kind}",
            "nodes": nodes,
            "connections": [{"source": a, "target": b} for a, b in edges],
        }

    @property
    def root_node(self) -> str:
        """Where the root cause is."""
        return "post0" if self.kind == "data_shape" else "fetch"


def _session(client: Any, execution_id: str, deadline: float) -> dict[str, Any] | None:
    first = True
    while first or time.monotonic() < deadline:  # every run is looked at at least once
        first = False
        execution = client.execution(execution_id)
        sid = execution.get("troubleshooting_session_id")
        if not sid and execution["status"] == "succeeded":
            return {"status": "not_needed", "issues": [], "decisions": []}
        if sid and execution["status"] in ("succeeded", "failed"):
            found = client.request("GET", f"/api/workflows/troubleshooting/sessions/{sid}")
            if found["status"] != "open":
                return found
        time.sleep(0.5)
    execution = client.execution(execution_id)
    sid = execution.get("troubleshooting_session_id")
    found = client.request("GET", f"/api/workflows/troubleshooting/sessions/{sid}") if sid else {}
    print(
        f"  unfinished: execution {execution_id} {execution['status']}, session "
        f"{found.get('status')}: {[d['decision'] for d in found.get('decisions', [])]}"
    )
    return None


def _measure(client: Any, runs: list[tuple[Fault, str]], seed: int, began: float) -> None:
    """Wait for every session to end; print the figures."""
    deadline = time.monotonic() + max(180.0, 2.0 * len(runs))
    transient = auto_ok = permanent = wrongly = right = skipped = 0
    times: list[float] = []
    misses = []
    for fault, execution_id in runs:
        session = _session(client, execution_id, deadline)
        if session is None:
            misses.append((fault.kind, "no session ended"))
            continue
        if session["status"] == "not_needed":
            misses.append((fault.kind, "the step's own retries got past it: not counted"))
            skipped += 1
            continue
        status = client.execution(execution_id)["status"]
        root = session["issues"][0] if session["issues"] else {}
        ok = root.get("category") == fault.kind and root.get("node_id") == fault.root_node
        right += ok
        if not ok:
            misses.append((fault.kind, f"{root.get('category')} at {root.get('node_id')}"))
        if fault.kind in TRANSIENT:
            transient += 1
            if status == "succeeded" and session["status"] == "resolved":
                auto_ok += 1
                first = datetime.fromisoformat(session["decisions"][0]["at"])
                end = datetime.fromisoformat(session["resolved_at"])
                times.append((end - first).total_seconds())
        else:
            permanent += 1
            # Retried: a retry decision, or more calls than the run's own tries.
            expected = 2 if fault.kind == "version_regression" else 1
            # A retry of the failed run (by ATOM or a person); a re-drive by the reconciler
            # of a run that had not failed yet is not one (the extra calls would show).
            retried = [
                d
                for d in session["decisions"]
                if d["decision"] == "retried" and d.get("by") != "reconciler"
            ]
            redriven = [d for d in session["decisions"] if d.get("by") == "reconciler"]
            if retried or fault.calls > expected:
                wrongly += 1
                misses.append(
                    (
                        fault.kind,
                        f"retried: {len(retried)} retry decisions, {len(redriven)} re-drives, "
                        f"{fault.calls} calls (expected {expected})",
                    )
                )
            elif redriven:
                misses.append(
                    (fault.kind, f"re-driven by the reconciler {len(redriven)}x, no extra call")
                )
    total = len(runs) - skipped
    print(f"\ne2e: {total} real faults (seed {seed}), {time.monotonic() - began:.0f} s")
    print(f"root cause right (category and step): {right}/{total} = {right / max(1, total):.3f}")
    print(
        f"transient faults ended succeeded without a person: {auto_ok}/{transient}"
        f" = {auto_ok / max(1, transient):.3f}"
    )
    print(f"permanent faults retried: {wrongly}/{permanent}")
    if times:
        print(
            f"time from diagnosis to resolution: median {statistics.median(times):.1f} s, "
            f"max {max(times):.1f} s"
        )
    for kind, why in misses:
        print(f"  miss: {kind}: {why}")


def _wait_all(client: Any, execution_ids: list[str], timeout: float) -> None:
    """Until every execution has ended (polled together, not one after another)."""
    deadline = time.monotonic() + timeout
    pending = set(execution_ids)
    while pending and time.monotonic() < deadline:
        for execution_id in list(pending):
            if client.execution(execution_id)["status"] in ("succeeded", "failed", "cancelled"):
                pending.discard(execution_id)
        if pending:
            time.sleep(0.5)
    if pending:
        raise RuntimeError(f"{len(pending)} first runs did not end within {timeout:g} s")


def run(count: int, seed: int, concurrency: int = 4) -> None:
    """Inject ``count`` real faults; print the figures.

    In batches, so that a few hundred are practical: every workflow is created first, the
    good first runs of the version faults run together, then every faulty run is submitted
    at once (a service that is down starts its outage when its run is submitted). The API's
    rate limits are off for the bench's own key (300 executions in a few seconds)."""
    from atom.celery_app import make_celery
    from atom.client import Client

    rng = random.Random(seed)
    data = ROOT / ".atom" / "bench-troubleshoot"
    settings, stoppers = services(data, "atom_bench_troubleshoot")
    settings = replace(
        settings,
        http_allowlist=("127.0.0.0/8",),
        auto_recovery_enabled=True,
        auto_troubleshoot=True,
        rate_limit_enabled=False,
        log_level="WARNING",
    )
    log = data / "worker.log"
    hostname = f"tsbench@{socket.gethostname()}"
    worker = start(
        [
            sys.executable,
            "-m",
            "cli",
            "worker",
            f"--concurrency={concurrency}",
            f"--hostname={hostname}",
        ],
        settings,
        log,
    )
    # The beat runs the reconciler, as in production: a run left without progress (a step
    # whose time limit fired outside the step's own handling) is re-driven.
    beat = start([sys.executable, "-m", "cli", "beat"], settings, data / "beat.log")
    app = make_celery(settings)
    service = LoopbackService().start()
    quiet(service)
    server = None
    faults: list[Fault] = []
    try:
        wait_ready(app, worker, hostname, log)
        server, url = serve_api(settings)
        client = Client(url, admin_key(settings, "ts-bench"), timeout=60)
        kinds = [(TRANSIENT + PERMANENT)[i % 8] for i in range(count)]
        rng.shuffle(kinds)
        began = time.monotonic()
        workflows = []
        for i, kind in enumerate(kinds):
            fault = Fault(i, kind, rng, service)
            faults.append(fault)
            workflows.append(client.create_workflow(fault.definition())["id"])
        regressions = [
            (f, w) for f, w in zip(faults, workflows, strict=True) if f.kind == "version_regression"
        ]
        _wait_all(client, [client.execute(w)["id"] for _, w in regressions], 60 + count)
        for fault, workflow_id in regressions:
            client.request(
                "PUT", f"/api/workflows/{workflow_id}", json=fault.definition(fault.url + "/v2")
            )
        print(f"e2e: {count} workflows ready in {time.monotonic() - began:.0f} s; submitting")
        began = time.monotonic()
        runs = []
        for fault, workflow_id in zip(faults, workflows, strict=True):
            runs.append((fault, client.execute(workflow_id)["id"]))
            fault.arm()
        _measure(client, runs, seed, began)
    finally:
        if server is not None:
            server.shutdown()
        service.stop()
        for fault in faults:
            if fault.later is not None and fault.later.server is not None:
                fault.later.stop()
        stop(worker)
        stop(beat)
        app.close()
        for stopper in stoppers:
            stopper()
