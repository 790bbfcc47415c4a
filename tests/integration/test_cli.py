"""The ``atom`` command: keys, submit --wait, the examples, and ``atom up`` end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from atom.client import Client
from atom.config import Settings
from tests.conftest import ROOT
from tests.integration.helpers import action, trigger, workflow

EXAMPLES = ROOT / "examples"


def atom(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_keys_create_prints_a_working_key_on_the_last_line(settings: Settings, api_url: str):
    result = atom(
        "keys", "create", "--tenant", "cli-tenant", "--role", "viewer", env=settings.as_env()
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("atom_") and " " not in key
    listed = requests.get(api_url + "/api/workflows", headers={"X-API-Key": key}, timeout=10)
    assert listed.status_code == 200
    denied = requests.post(
        api_url + "/api/workflows", headers={"X-API-Key": key}, json={}, timeout=10
    )
    assert denied.status_code == 403


def test_submit_wait_shows_steps_and_exit_status(
    settings: Settings, api_url: str, make_key, worker, tmp_path: Path
):
    env = {**settings.as_env(), "ATOM_API_URL": api_url, "ATOM_API_KEY": make_key("editor")}
    ok = atom(
        "submit",
        str(EXAMPLES / "onboarding.json"),
        "--input",
        json.dumps({"userId": "u-7", "email": "ada@example.com"}),
        "--wait",
        env=env,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for node in ("profile", "welcome", "follow_up", "summary"):
        assert f"{node}" in ok.stdout
    assert "execution succeeded" in ok.stdout
    final = json.loads(ok.stdout[ok.stdout.index("{") :])
    assert final["output"]["summary"] == {
        "user_id": "u-7",
        "welcomed": True,
        "followed_up_after_s": final["output"]["summary"]["followed_up_after_s"],
    }
    assert final["output"]["summary"]["followed_up_after_s"] >= 1.0

    failing = tmp_path / "failing.json"
    failing.write_text(
        json.dumps(
            workflow(
                "fails",
                [trigger(), action("boom", "transform", output="{{ input.missing.value }}")],
                [("start", "boom")],
            )
        )
    )
    bad = atom("submit", str(failing), "--wait", env=env)
    assert bad.returncode == 1
    assert "boom" in bad.stdout and "failed" in bad.stdout


def test_examples_run_as_they_are(client: Client):
    fanout = client.create_workflow(json.loads((EXAMPLES / "fanout_report.json").read_text()))
    done = client.wait(client.execute(fanout["id"])["id"])
    assert done["status"] == "succeeded", done
    assert done["output"]["announce"]["message"] == "Sales report ready: 535 in total"
    assert done["metrics"]["execution_time_ms"] < 1900  # the three 1 s waits overlapped


def _wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise TimeoutError(url)


def test_atom_up_runs_everything_on_embedded_services_and_stops_it_all(tmp_path: Path):
    from cli.embedded import free_port

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}
    }
    api_port, flower_port = free_port(), free_port()
    env.update(
        {
            "ATOM_DATA_DIR": str(tmp_path / "data"),
            "PYTHON_API_PORT": str(api_port),
            "FLOWER_PORT": str(flower_port),
            "FLOWER_BASIC_AUTH": "ops:secret",
        }
    )
    with open(tmp_path / "up.log", "w") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "cli", "up", "--concurrency=2"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        _wait_http(f"http://127.0.0.1:{api_port}/api/openapi.json", timeout=90)
        key = (tmp_path / "data" / "dev-admin-key").read_text().strip()
        client = Client(f"http://127.0.0.1:{api_port}", key)
        wf = client.create_workflow(json.loads((EXAMPLES / "onboarding.json").read_text()))
        done = client.wait(client.execute(wf["id"], {"userId": "42"})["id"], timeout=60)
        assert done["status"] == "succeeded"
        # gunicorn workers and prefork children all reach the API's /metrics.
        exposed = requests.get(f"http://127.0.0.1:{api_port}/metrics", timeout=30).text
        assert 'atom_step_duration_seconds_count{action_type="transform"' in exposed
        assert 'endpoint="/api/workflows/<uuid:workflow_id>/execute"' in exposed
        assert 'atom_executions{status="succeeded"}' in exposed
        # The ML worker answers a decision (it may still be loading LightGBM: 503 until then).
        deadline = time.monotonic() + 90
        while True:
            decided = requests.post(
                f"http://127.0.0.1:{api_port}/api/decisions",
                json={"context": {"userId": "42"}, "actions": ["a", "b"]},
                headers={"X-API-Key": key},
                timeout=30,
            )
            if decided.status_code != 503 or time.monotonic() > deadline:
                break
        assert decided.status_code == 201, decided.text
        assert decided.json()["action"]["type"] in {"a", "b"}
        health = requests.get(
            f"http://127.0.0.1:{api_port}/api/workflows/monitoring/health", timeout=30
        ).json()
        assert health["components"]["workers"]["count"] == 2  # the step and the ML worker
        _wait_http(f"http://127.0.0.1:{flower_port}/", timeout=30)
        assert (
            requests.get(f"http://127.0.0.1:{flower_port}/api/workers", timeout=5).status_code
            == 401
        )
        output = (tmp_path / "up.log").read_text()
        assert f"http://127.0.0.1:{api_port}/api" in output and key in output
        family = psutil.Process(up.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in family)
        for part in ("api", "worker", "worker --pool ml", "beat", "flower"):
            assert f"-m cli {part}" in names, names
    finally:
        os.killpg(up.pid, signal.SIGINT)
        up.wait(60)
    assert up.returncode == 0
    gone, alive = psutil.wait_procs(family, timeout=20)
    assert not alive, [p.cmdline() for p in alive]
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or [])
    ]
    assert not leftovers, [p.info["cmdline"] for p in leftovers]
