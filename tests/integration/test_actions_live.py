"""The action contract on a real worker: every registered action runs one step of a workflow
submitted over HTTP, and its output is what its handler promises. A new action must add its
case here (the first test fails until it does)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from atom.actions import REGISTRY
from atom.client import Client
from atom.config import Settings
from tests.integration.helpers import action, by_node, trigger, workflow
from tests.integration.loopback import LoopbackService

# name -> (config for the step given the loopback service, check of the step's output)
Case = tuple[Callable[[LoopbackService], dict[str, Any]], Callable[[Any], bool]]
CASES: dict[str, Case] = {
    "http_request": (
        lambda svc: {
            "url": svc.url + "/contract",
            "method": "POST",
            "json": {"n": "{{ input.n }}"},
        },
        lambda out: out["status_code"] == 201 and out["body"] == {"echo": 7},
    ),
    "transform": (
        lambda svc: {"output": {"double": "{{ input.n * 2 }}"}},
        lambda out: out == {"double": 14},
    ),
    "delay": (lambda svc: {"seconds": 0.05}, lambda out: out["waited_seconds"] >= 0.05),
    "log": (
        lambda svc: {"message": "n is {{ input.n }}", "level": "warning"},
        lambda out: out == {"message": "n is 7", "level": "warning"},
    ),
    "python": (
        lambda svc: {"function": "add", "kwargs": {"a": "{{ input.n }}", "b": 1}},
        lambda out: out == {"sum": 8},
    ),
    "database_query": (
        lambda svc: {
            "credential": "contract_db",
            "query": "select CAST(:n AS int) * 2 as double",
            "params": {"n": "{{ input.n }}"},
        },
        lambda out: out["rows"] == [{"double": 14}] and out["columns"] == ["double"],
    ),
    "email": (
        lambda svc: {"to": ["ops@contract.example"], "subject": "n is {{ input.n }}"},
        lambda out: out == {"sent_to": ["ops@contract.example"]},
    ),
    "decision": (
        lambda svc: {"model": "contract", "context": {"n": "{{ input.n }}"}, "actions": ["a", "b"]},
        lambda out: out["action"] in {"a", "b"} and out["propensity"] == 0.5,
    ),
}


def _prepare(name: str, client: Client, settings: Settings, request: Any) -> None:
    """What database_query (a vault connection) and email (an allowed domain and an SMTP
    server) need before their workflow can be saved and run."""
    if name == "database_query":
        from sqlalchemy.engine import make_url

        host = make_url(settings.database_url or "").query["host"]
        value = {"host": host if isinstance(host, str) else host[0], "user": "postgres"}
        client.request(
            "POST",
            "/api/credentials",
            json={"name": "contract_db", "value": value | {"dbname": "postgres"}},
        )
    if name == "email":
        from aiosmtpd.controller import Controller

        from tests.integration.test_alerts import Inbox

        client.request("PUT", "/api/settings", json={"email_allowed_domains": ["contract.example"]})
        controller = Controller(Inbox(), hostname="127.0.0.1", port=settings.smtp_port)
        controller.start()
        request.addfinalizer(controller.stop)


def test_every_registered_action_has_a_live_case():
    assert set(CASES) == set(REGISTRY)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_action_runs_on_a_real_worker(
    name: str,
    client: Client,
    service: LoopbackService,
    settings: Settings,
    request: Any,
    ml_worker,
):
    service.route(r"POST /contract", lambda req, m: (201, {"echo": req.body["n"]}))
    _prepare(name, client, settings, request)
    config, check = CASES[name]
    doc = workflow(
        f"contract-{name}",
        [trigger(), action("step", name, **config(service))],
        [("start", "step")],
    )
    created = client.create_workflow(doc)
    done = client.wait(client.execute(created["id"], {"n": 7})["id"])
    step = by_node(done)["step"]
    assert done["status"] == "succeeded", done
    assert step["status"] == "succeeded" and step["attempts"] == 1
    assert check(step["output"]), step["output"]
