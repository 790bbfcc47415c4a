"""A chord whose header holds a chain ending in a group is counted, never joined by polling.

Celery's Redis backend saves such a header's ``GroupResult`` when the chord is sent; the
worker then joins it with ``join_native``, which sleeps 0.5 s on the inner group's id before
the body may start (bench/joins.py). ATOM's backend saves nothing, so the body is sent from
the counter. Checked on a real Redis, on databases of their own that no worker reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from celery import Celery

from atom.celery_app import NoWaitRedisBackend, make_celery
from atom.config import Settings
from atom.runs.dispatch import build_canvas
from atom.workflow.compiler import compile_plan
from atom.workflow.definition import parse_definition
from tests.integration.helpers import action, trigger, workflow

# a -> (b || c) beside d, all joined by m: chord([chain(a, group(b, c)), d], chain(m, finalize))
NESTED = workflow(
    "nested-join",
    [trigger(), *(action(n, "transform", output={"n": n}) for n in "abcdm")],
    [("start", "a"), ("a", "b"), ("a", "c"), ("start", "d"), ("b", "m"), ("c", "m"), ("d", "m")],
)


def _db(url: str, number: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{number}"))


@pytest.fixture
def isolated(settings: Settings) -> Iterator[Settings]:
    """Settings whose broker and result databases (14, 15) no worker of the session reads."""
    isolated = replace(
        settings,
        broker_url=_db(settings.celery_broker, 14),
        result_backend=_db(settings.celery_broker, 15),
    )
    clients = [redis.Redis.from_url(_db(settings.celery_broker, n)) for n in (14, 15)]
    for client in clients:
        client.flushdb()
    yield isolated
    for client in clients:
        client.flushdb()
        client.close()


def _group_keys(settings: Settings) -> dict[str, list[str]]:
    """The result database's group keys by suffix: "" is a saved header, ".s" a chord size."""
    out: dict[str, list[str]] = {}
    with redis.Redis.from_url(settings.celery_backend) as client:
        for key in client.scan_iter("celery-taskset-meta-*"):
            name = key.decode().removeprefix("celery-taskset-meta-")
            out.setdefault(name[name.find(".") :] if "." in name else "", []).append(name)
    return out


def _send_nested(app: Celery) -> None:
    definition = parse_definition(NESTED)
    plan = compile_plan(definition)
    (chord,) = plan["canvas"]["tasks"][:1]
    assert chord["type"] == "chord"
    assert chord["header"][0]["tasks"][-1]["type"] == "group"  # the shape under test
    build_canvas(app, plan, definition, "00000000-0000-0000-0000-000000000000", 1).apply_async()


def test_nested_header_is_counted_not_saved_for_a_polling_join(isolated: Settings):
    # Positive control: Celery's stock Redis backend saves the nested header for a join.
    stock = Celery("stock", broker=isolated.celery_broker, backend=isolated.celery_backend)
    try:
        _send_nested(stock)
        keys = _group_keys(isolated)
        assert len(keys.get("", [])) == 1 and len(keys.get(".s", [])) == 1
    finally:
        stock.close()
    with redis.Redis.from_url(isolated.celery_backend) as client:
        client.flushdb()

    app = make_celery(isolated)
    try:
        assert isinstance(app.backend, NoWaitRedisBackend)
        _send_nested(app)
        keys = _group_keys(isolated)
        assert len(keys.get(".s", [])) == 1  # the chord is still counted
        assert "" not in keys  # but its header is not saved: no join, no 0.5 s poll
    finally:
        app.close()


def _nested_run(client, **extra) -> dict:
    doc = workflow(
        "nested-join-run",
        [
            trigger(),
            action("a", "transform", output="a"),
            action("b", "transform", output="{{ input.nothing.here }}"),  # fails
            action("c", "delay", seconds=0.2),
            action("d", "transform", output="d"),
            {**action("m", "transform", output="{{ steps.c.status }}"), **extra},
        ],
        [("start", "a"), ("a", "b"), ("a", "c"), ("start", "d")]
        + [("b", "m"), ("c", "m"), ("d", "m")],
        on_failure="continue",
    )
    return client.wait(client.execute(client.create_workflow(doc)["id"])["id"], timeout=60)


def test_a_failed_step_in_a_nested_header_still_reaches_the_body_on_a_real_worker(client):
    # The counted path hands over to the body after a failed step exactly like the join did:
    # the trigger rule, not Celery, decides whether the body's step runs.
    done = _nested_run(client, trigger_rule="all_done")
    steps = {s["node_id"]: s for s in done["steps"]}
    assert done["status"] == "failed" and done["error"]["node_id"] == "b"
    assert steps["b"]["status"] == "failed"
    assert steps["m"]["status"] == "succeeded" and steps["m"]["output"] == "succeeded"

    done = _nested_run(client)  # all_success: m is skipped, the run still finalizes
    steps = {s["node_id"]: s for s in done["steps"]}
    assert done["status"] == "failed"
    assert steps["m"]["status"] == "skipped"
    assert "upstream failed: b" in steps["m"]["error"]["message"]
