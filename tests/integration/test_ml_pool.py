"""The ML pool going away and coming back: 503 with Retry-After within ATOM_ML_TIMEOUT, never
a hang; a model published before the restart answers after it."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
import requests

from atom.config import Settings
from tests.conftest import Processes, wait_for_worker

pytestmark = pytest.mark.integration


def _start(settings: Settings, processes: Processes):
    proc = processes.start("worker", "--pool", "ml", "--concurrency=1", name="ml-worker")
    wait_for_worker(settings, proc, hostname=f"ml@{socket.gethostname()}")
    return proc


def test_pool_down_is_503_within_the_timeout_and_a_published_model_survives_a_restart(
    settings: Settings, processes: Processes, api_url: str, make_key: Callable[..., str]
):
    http = requests.Session()
    http.headers["X-API-Key"] = make_key("admin")

    def decide(context: dict) -> requests.Response:
        return http.post(
            f"{api_url}/api/decisions",
            json={"model": "door", "context": context, "actions": ["left", "right"]},
            timeout=30,
        )

    proc = _start(settings, processes)
    try:
        for i in range(40):
            made = decide({"x": i % 10}).json()
            won = (made["action"]["type"] == "right") == (i % 10 >= 5)
            outcome = http.post(
                f"{api_url}/api/decisions/{made['id']}/outcome", json={"success": won}, timeout=30
            )
            assert outcome.status_code == 200
        assert http.post(f"{api_url}/api/models/door/train", timeout=30).status_code == 202
        # Outcomes queued trainings of their own: wait until the last one (ours) is done and
        # the versions stay put, so the version compared across the restart is final.
        deadline = time.monotonic() + 90
        model: dict = {}
        seen = None
        while time.monotonic() < deadline:
            time.sleep(1.5)
            model = http.get(f"{api_url}/api/models/door", timeout=30).json()
            settled = (model.get("last_training") or {}).get("outcomes") == 40
            if settled and model["version"] is not None and model["versions"] == seen:
                break
            seen = model["versions"]
        assert model["version"] is not None, model
        before = decide({"x": 8}).json()
        assert before["model_version"] == model["version"] and before["confidence"] is not None
    finally:
        processes.stop(proc)

    started = time.monotonic()
    down = decide({"x": 8})
    waited = time.monotonic() - started
    assert down.status_code == 503, down.text
    assert int(down.headers["Retry-After"]) >= 1
    assert "atom worker --pool ml" in down.json()["message"]
    assert waited < settings.ml_timeout + 2, waited
    # The explanation needs the pool too; everything else still answers without it.
    assert (
        http.get(f"{api_url}/api/decisions/{before['id']}/explanation", timeout=30).status_code
        == 503
    )
    assert http.get(f"{api_url}/api/models/door", timeout=30).status_code == 200

    proc = _start(settings, processes)
    try:
        after = decide({"x": 8})
        assert after.status_code == 201, after.text
        assert after.json()["model_version"] == model["version"]
        # The same boosters: every action scores as before (the choice itself may explore).
        scores = {a["type"]: a["score"] for a in before["alternatives"]}
        assert {a["type"]: a["score"] for a in after.json()["alternatives"]} == pytest.approx(
            scores
        )
        why = http.get(f"{api_url}/api/decisions/{before['id']}/explanation", timeout=30)
        assert why.status_code == 200 and why.json()["model_version"] == model["version"]
    finally:
        processes.stop(proc)
