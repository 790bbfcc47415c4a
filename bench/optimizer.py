"""Predicted versus measured: the optimizer's strategies on realistic workflows, run for real.

    python bench/optimizer.py [--runs 8] [--flaky-runs 24] [--seed 7] [--only crm-enrich ...]

Loopback services with delays and failure rates stand in for the outside world; one worker
(``ATOM_WORKER_CONCURRENCY`` processes, the slots the prediction assumes) runs the steps. For
each workflow and strategy: create the workflow, run it ``--runs`` times one after another,
analyse, apply, run the applied version as often, and print the predicted change next to the
measured one (``GET .../results/{id}`` -> ``measured``). A strategy that applies nothing that
moves the figures is reported without after-runs.

Workflows:
- crm-enrich: look a contact up, then three enrichment calls and a billing lookup chained one
  after another, though two read only the contact and one reads nothing; a merge reads all.
- report: four independent report queries chained, one of them asked twice, an audit read
  nobody uses; a build step reads the rest, a publish (PUT) sends the report.
- flaky-relay: a relay (PUT, idempotent) to a service that answers 503 to about one call in
  four, then a transform of its answer.
- dependent-chain: four calls each reading the one before (nothing to parallelise).
- quote: exchange rates (the same GET every run, the same answer) and two items of one
  catalogue collection, chained; a price step reads all three. Performance lists a response
  cache for the rates (it changes behaviour: a run may see rates up to the TTL old), which the
  bench accepts when applying and measures; cost lists a batch of the two item reads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import socket
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._services import admin_key, api_process, services, start, stop, wait_ready  # noqa: E402
from tests.integration.loopback import LoopbackService  # noqa: E402

SLOTS = 8
PLAN = {
    "crm-enrich": ("performance", "hybrid"),
    "report": ("performance", "cost", "hybrid"),
    "flaky-relay": ("reliability", "hybrid"),
    "dependent-chain": ("performance",),
    "quote": ("performance", "cost"),
}
ACCEPT = {"quote": ("cache",)}
"""Behaviour-changing suggestions the bench accepts when applying (by kind), per workflow."""


def _node(node_id: str, path: str, method: str = "GET", **config: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "action",
        "config": {"action_type": "http_request", "url": path, "method": method, **config},
    }


def _transform(node_id: str, output: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "action",
        "config": {"action_type": "transform", "output": output},
    }


def _read(step: str) -> str:
    return "{{ steps." + step + ".output.body }}"


def _chain(name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    start_node = {"id": "start", "type": "trigger", "config": {"kind": "manual"}}
    ids = ["start"] + [n["id"] for n in nodes]
    return {
        "name": name,
        "nodes": [start_node, *nodes],
        "connections": [{"source": a, "target": b} for a, b in zip(ids, ids[1:], strict=False)],
    }


def workflows(base: str) -> dict[str, dict[str, Any]]:
    """The bench set, calling the loopback service at ``base``."""
    contact = "{{ steps.lookup.output.body.email }}"
    crm = _chain(
        "crm-enrich",
        [
            _node("lookup", f"{base}/crm/contact/{{{{ input.id }}}}"),
            _node("company", f"{base}/enrich/company", params={"email": contact}),
            _node("social", f"{base}/enrich/social", params={"email": contact}),
            _node("billing", f"{base}/billing/{{{{ input.id }}}}"),
            _transform(
                "merge",
                {k: _read(k) for k in ("lookup", "company", "social", "billing")},
            ),
        ],
    )
    queries = ("sales", "costs", "headcount", "pipeline")
    report = _chain(
        "report",
        [
            *(_node(q, f"{base}/report/{q}") for q in queries),
            _node("sales_again", f"{base}/report/sales"),
            _node("audit", f"{base}/report/audit"),
            _transform(
                "build",
                {q: _read(q) for q in (*queries, "sales_again")},
            ),
            _node("publish", f"{base}/publish", method="PUT", json="{{ steps.build.output }}"),
        ],
    )
    relay = _chain(
        "flaky-relay",
        [
            _node("relay", f"{base}/relay", method="PUT", json={"event": "{{ input.id }}"}),
            _transform("ack", {"ack": "{{ steps.relay.output.body }}"}),
        ],
    )
    dependent = _chain(
        "dependent-chain",
        [
            _node("a", f"{base}/dep/a"),
            _node("b", f"{base}/dep/b/{{{{ steps.a.output.body.next }}}}"),
            _node("c", f"{base}/dep/c/{{{{ steps.b.output.body.next }}}}"),
            _node("d", f"{base}/dep/d/{{{{ steps.c.output.body.next }}}}"),
        ],
    )
    quote = _chain(
        "quote",
        [
            _node("rates", f"{base}/fx/rates"),
            _node("item_a", f"{base}/catalog/items/{{{{ input.id }}}}-a"),
            _node("item_b", f"{base}/catalog/items/{{{{ input.id }}}}-b"),
            _transform(
                "price",
                {"rates": _read("rates"), "a": _read("item_a"), "b": _read("item_b")},
            ),
        ],
    )
    return {
        "crm-enrich": crm,
        "report": report,
        "flaky-relay": relay,
        "dependent-chain": dependent,
        "quote": quote,
    }


def serve(seed: int, port: int = 0) -> LoopbackService:
    """The outside world: delays per route, a relay that fails about one call in four."""
    rng = random.Random(seed)
    lock = threading.Lock()
    service = LoopbackService(port=port)

    def slow(ms: int, body: Any):
        def answer(request, match):
            time.sleep(ms / 1000)
            return 200, body

        return answer

    def relay(request, match):
        with lock:
            fail = rng.random() < 0.25
        time.sleep(0.05)
        return (503, {"error": "busy"}) if fail else (200, {"relayed": True})

    service.route(r"GET /crm/contact/\w+", slow(150, {"email": "a@b.example", "name": "A"}))
    service.route(r"GET /enrich/company\?.*", slow(250, {"company": "Acme"}))
    service.route(r"GET /enrich/social\?.*", slow(200, {"followers": 12}))
    service.route(r"GET /billing/\w+", slow(180, {"plan": "pro"}))
    for q, ms in (("sales", 300), ("costs", 250), ("headcount", 200), ("pipeline", 350)):
        service.route(f"GET /report/{q}", slow(ms, {q: 1}))
    service.route("GET /report/audit", slow(120, {"audit": "ok"}))
    service.route("PUT /publish", slow(100, {"published": True}))
    service.route("PUT /relay", relay)
    service.route("GET /fx/rates", slow(400, {"EUR": 1.0, "USD": 1.08}))
    service.route(r"GET /catalog/items/[\w-]+", slow(120, {"price": 10}))
    for step, nxt in (("a", "x"), ("b", "y"), ("c", "z"), ("d", "end")):
        service.route(f"GET /dep/{step}(/\\w+)?", slow(150, {"next": nxt}))
    return service.start()


def serve_process(seed: int) -> tuple[multiprocessing.process.BaseProcess, str]:
    """``serve`` in a process of its own (forked), so that its threads share no interpreter
    lock with the client: (process, base URL); ``process.terminate()`` ends it."""
    from cli.embedded import free_port

    port = free_port()
    context = multiprocessing.get_context("fork")
    ready = context.Event()

    def child() -> None:
        serve(seed, port)
        ready.set()
        threading.Event().wait()

    process = context.Process(target=child, name="optbench-services", daemon=True)
    process.start()
    if not ready.wait(10):
        process.terminate()
        raise RuntimeError("the loopback services did not start within 10 s")
    return process, f"http://127.0.0.1:{port}"


def _gain(before: float | None, after: float | None) -> float | None:
    if before in (None, 0) or after is None:
        return None
    return 1 - after / before


def _rise(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    return after - before


def _row(metric: str, predicted: dict, measured: dict, kind: str = "gain") -> tuple[str, bool]:
    change = _gain if kind == "gain" else _rise
    p = change(predicted["before"].get(metric), predicted["after"].get(metric))
    m = change(measured["before"].get(metric), measured["after"].get(metric))
    unit = "%" if kind == "gain" else " pts"
    scale = 100
    if p is None or m is None:
        return f"    {metric:<16} predicted n/a  measured n/a", True
    significant = abs(p) >= (0.05 if kind == "gain" else 0.02)
    within = (not significant) or (0.8 * abs(p) <= abs(m) <= 1.2 * abs(p) and p * m > 0)
    text = (
        f"    {metric:<16} predicted {p * scale:+6.1f}{unit}   measured {m * scale:+6.1f}{unit}"
        f"   before {measured['before'].get(metric)} -> after {measured['after'].get(metric)}"
        + ("" if not significant else ("   within 20 %" if within else "   OFF by > 20 %"))
    )
    return text, within


def run(runs: int, flaky_runs: int, seed: int, only: list[str] | None = None) -> int:
    """Run the bench set; returns the number of predictions off by more than 20 %."""
    from atom.celery_app import make_celery
    from atom.client import Client

    data = ROOT / ".atom" / "bench-optimizer"
    settings, stoppers = services(data, "atom_bench_optimizer")
    settings = replace(
        settings,
        http_allowlist=("127.0.0.0/8",),
        worker_concurrency=SLOTS,
        auto_troubleshoot=False,
        rate_limit_enabled=False,
        log_level="WARNING",
    )
    hostname = f"optbench@{socket.gethostname()}"
    log = data / "worker.log"
    worker = start(
        [sys.executable, "-m", "cli", "worker", f"--concurrency={SLOTS}", f"--hostname={hostname}"],
        settings,
        log,
    )
    app = make_celery(settings)
    services_proc, base = serve_process(seed)
    api = None
    off = 0
    try:
        wait_ready(app, worker, hostname, log)
        api, url = api_process(settings, data / "api.log")
        client = Client(url, admin_key(settings, "opt-bench"), timeout=60)
        print(f"bench/optimizer.py --runs {runs} --flaky-runs {flaky_runs} --seed {seed}")
        print(f"worker slots {SLOTS}; runs one at a time\n")
        for name, strategies in PLAN.items():
            if only and name not in only:
                continue
            count = flaky_runs if name == "flaky-relay" else runs
            for strategy in strategies:
                off += _one(client, base, name, strategy, count)
    finally:
        if api is not None:
            stop(api)
        services_proc.terminate()
        stop(worker)
        app.close()
        for stopper in stoppers:
            stopper()
    print(f"\npredictions off by more than 20 % (or outputs changed): {off}")
    return off


def _runs(client, workflow_id: str, count: int) -> set[str]:
    """Run ``count`` times, one after another; the distinct outputs of the succeeded runs,
    without response headers (a Date header differs on every call)."""
    outputs = set()
    for i in range(count):
        execution = client.execute(workflow_id, {"id": f"u{i % 4}"})
        done = client.wait(execution["id"], timeout=120)
        if done["status"] == "succeeded":
            outputs.add(json.dumps(_without_headers(done["output"]), sort_keys=True))
    return outputs


def _without_headers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_headers(v) for k, v in value.items() if k != "headers"}
    if isinstance(value, list):
        return [_without_headers(v) for v in value]
    return value


def _one(client, base: str, name: str, strategy: str, count: int) -> int:
    created = client.create_workflow(workflows(base)[name])
    outputs_before = _runs(client, created["id"], count)
    result = client.request(
        "POST",
        "/api/workflows/optimization/analyze",
        json={"workflow_id": created["id"], "strategy": strategy},
    )
    suggestions = result["suggestions"]
    applied = [f"{s['kind']}({','.join(s['nodes'][:6])})" for s in suggestions if s["applied"]]
    accept = [
        i for i, s in enumerate(suggestions) if s.get("patch") and s["kind"] in ACCEPT.get(name, ())
    ]
    accepted = [f"{suggestions[i]['kind']}({','.join(suggestions[i]['nodes'])})" for i in accept]
    listed = [
        f"{s['kind']}({','.join(s['nodes'][:6])})"
        for i, s in enumerate(suggestions)
        if not s["applied"] and i not in accept
    ]
    print(
        f"{name} / {strategy}: applied {', '.join(applied) or 'nothing'}"
        + (f"; accepted (changes behaviour): {', '.join(accepted)}" if accepted else "")
        + (f"; listed only: {', '.join(listed)}" if listed else "")
    )
    for s in suggestions:
        if not s["applied"] and s["kind"] in ("batch", "cache"):
            print(f"    {s['kind']}: {s['rationale'][:160]}... expected {s['expected']}")
    if result["predicted"]["after"] == result["predicted"]["before"] and not accept:
        print("    no predicted change; not re-run\n")
        return 0
    url = f"/api/workflows/optimization/results/{result['id']}"
    client.request("POST", f"{url}/apply", json={"accept": accept})
    outputs_after = _runs(client, created["id"], count)
    row = client.request("GET", url)
    measured = row["measured"]
    predicted = row["predicted"]
    if accept:  # the version saved: optimized plus the accepted suggestions
        predicted = {"before": predicted["before"], "after": predicted["applied"]}
    off = 0
    for metric, kind in (
        ("duration_p50_ms", "gain"),
        ("duration_p95_ms", "gain"),
        ("calls", "gain"),
        ("success_rate", "rise"),
    ):
        text, within = _row(metric, predicted, measured, kind)
        print(text)
        off += 0 if within else 1
    same = outputs_after == outputs_before
    print(
        f"    outputs: {len(outputs_before)} distinct before, {len(outputs_after)} after, "
        + ("the same" if same else "DIFFERENT")
    )
    off += 0 if same else 1
    print(
        f"    predicted p50 {predicted['before']['duration_p50_ms']} -> "
        f"{predicted['after']['duration_p50_ms']} ms (runs: {count} before, "
        f"{measured['runs_after']} after)\n"
    )
    return off


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--flaky-runs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", action="append", choices=list(PLAN), help="these workflows")
    args = parser.parse_args(argv)
    run(args.runs, args.flaky_runs, args.seed, args.only)


if __name__ == "__main__":
    main()
