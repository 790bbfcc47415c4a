"""MAX_PARALLEL_EXECUTIONS per tenant: runs over the limit wait queued and start in order."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from werkzeug.serving import make_server

from atom.client import Client
from atom.config import Settings
from tests.conftest import Processes, wait_for_worker
from tests.integration.helpers import action, trigger, workflow


def test_runs_over_the_limit_wait_queued_and_start_in_order(
    settings: Settings, processes: Processes, make_key, redis_url: str
):
    from api.app import create_app

    limited = replace(
        settings, redis_url=redis_url.rsplit("/", 1)[0] + "/12", max_parallel_executions=1
    )
    env = {"REDIS_URL": limited.redis_url or "", "MAX_PARALLEL_EXECUTIONS": "1"}
    worker = processes.start("worker", "--concurrency=3", env=env, name="limited-worker")
    wait_for_worker(limited, worker)
    server = make_server("127.0.0.1", 0, create_app(limited), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        a, b = Client(base, make_key("admin")), Client(base, make_key("admin"))
        doc = workflow("slow", [trigger(), action("wait", "delay", seconds=1)], [("start", "wait")])
        wf_a, wf_b = a.create_workflow(doc), b.create_workflow(doc)
        runs = [a.execute(wf_a["id"])["id"] for _ in range(3)]
        other = b.execute(wf_b["id"])["id"]  # another tenant has its own slot
        waiting = [a.execution(i)["status"] for i in runs[1:]]
        assert waiting == ["queued", "queued"]
        finals = [a.wait(i, timeout=60) for i in runs]
        assert [f["status"] for f in finals] == ["succeeded"] * 3
        times = [
            (datetime.fromisoformat(f["started_at"]), datetime.fromisoformat(f["finished_at"]))
            for f in finals
        ]
        for (_, previous_end), (start, _) in zip(times, times[1:], strict=False):
            assert start >= previous_end  # one at a time, oldest first
        b_final = b.wait(other, timeout=60)
        assert b_final["status"] == "succeeded"
        assert datetime.fromisoformat(b_final["started_at"]) < times[1][0]
    finally:
        server.shutdown()
        processes.stop(worker)
