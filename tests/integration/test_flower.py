"""Flower for operators: the workers and their step tasks, behind basic auth."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from atom.client import Client
from atom.config import Settings
from tests.conftest import Processes
from tests.integration.helpers import action, trigger, workflow


def wait_for_flower(url: str, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, Path(proc.log_path).read_text()
        try:
            requests.get(url + "/healthcheck", timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.3)
    raise AssertionError("Flower did not start:\n" + Path(proc.log_path).read_text())


def poll(fetch: Callable[[], dict], ready: Callable[[dict], bool], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        found = fetch()
        if ready(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_flower_shows_the_workers_and_step_tasks_with_the_password(
    processes: Processes, settings: Settings, client: Client, worker
):
    from cli.embedded import free_port
    from tests.conftest import wait_for_worker

    port = free_port()
    proc = processes.start(
        "flower",
        env={"FLOWER_PORT": str(port), "FLOWER_BASIC_AUTH": "ops:s3cret-pw"},
        name="flower",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_flower(url, proc)
        auth = ("ops", "s3cret-pw")
        name = wait_for_worker(settings, worker)
        workers = poll(
            lambda: requests.get(url + "/api/workers?refresh=1", auth=auth, timeout=30).json(),
            lambda found: name in found and found[name].get("registered"),
        )
        assert name in workers, workers
        assert "atom.run_step" in workers[name]["registered"]
        assert "atom.finalize" in workers[name]["registered"]

        doc = workflow(
            "seen-in-flower", [trigger(), action("t", "transform", output=1)], [("start", "t")]
        )
        run = client.execute(client.create_workflow(doc)["id"])
        client.wait(run["id"])
        tasks = poll(
            lambda: requests.get(
                url + "/api/tasks?taskname=atom.run_step", auth=auth, timeout=30
            ).json(),
            lambda found: any(run["id"] in str(t.get("args")) for t in found.values()),
        )
        assert any(
            run["id"] in str(t.get("args")) and t.get("state") == "SUCCESS" for t in tasks.values()
        ), tasks

        assert requests.get(url + "/api/workers", timeout=10).status_code == 401
        assert (
            requests.get(url + "/api/workers", auth=("ops", "wrong"), timeout=10).status_code == 401
        )
        assert requests.get(url + "/", timeout=10).status_code == 401
    finally:
        processes.stop(proc)


def test_flower_refuses_to_start_without_auth_outside_dev(settings: Settings, processes):
    proc = processes.start(
        "flower", env={"ATOM_DEV": "0", "FLOWER_BASIC_AUTH": ""}, name="flower-noauth"
    )
    assert proc.wait(60) == 2
    assert "FLOWER_BASIC_AUTH" in Path(proc.log_path).read_text()


@pytest.mark.parametrize("value", ["nopassword", "user:", ":pw", "a:b,c"])
def test_flower_refuses_malformed_auth(settings: Settings, processes, value: str):
    proc = processes.start("flower", env={"FLOWER_BASIC_AUTH": value}, name="flower-bad")
    assert proc.wait(60) == 2
    assert "must be user:password" in Path(proc.log_path).read_text()


def test_flower_in_dev_mode_without_auth_uses_generated_credentials(
    processes: Processes, settings: Settings
):
    from cli.embedded import free_port

    port = free_port()
    proc = processes.start(
        "flower",
        env={"FLOWER_PORT": str(port), "FLOWER_BASIC_AUTH": "", "ATOM_DEV": "1"},
        name="flower-dev",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_flower(url, proc)
        user, _, password = (
            (settings.data_dir / "dev-flower-auth").read_text().strip().partition(":")
        )
        assert user == "atom" and len(password) >= 20
        assert oct((settings.data_dir / "dev-flower-auth").stat().st_mode & 0o777) == "0o600"
        assert requests.get(url + "/api/workers", timeout=10).status_code == 401
        assert (
            requests.get(url + "/api/workers", auth=(user, password), timeout=30).status_code == 200
        )
        assert password not in Path(proc.log_path).read_text()
    finally:
        processes.stop(proc)
