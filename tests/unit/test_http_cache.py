"""``http_request``'s ``cache_ttl``: the save-time checks, the cache key's make-up, and a
step that still calls its service when Redis is unreachable (a real closed port, a real
loopback server). ``tests/integration/test_http_cache.py`` runs the cache on real workers."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from atom.actions import http_cache
from atom.actions.base import ActionContext
from atom.actions.http_request import run as http_run
from atom.config import Settings
from atom.errors import DefinitionError
from atom.workflow.definition import parse_definition
from tests.integration.loopback import LoopbackService


def _problems(config: dict[str, Any]) -> list[tuple[str, str]]:
    document = {
        "name": "cached",
        "nodes": [
            {"id": "start", "type": "trigger", "config": {"kind": "manual"}},
            {"id": "fetch", "type": "action", "config": {"action_type": "http_request", **config}},
        ],
        "connections": [{"source": "start", "target": "fetch"}],
    }
    try:
        parse_definition(document)
    except DefinitionError as e:
        return [(p.location, p.message) for p in e.problems]
    return []


URL = "https://api.example.test/items"


@pytest.mark.parametrize(
    "config",
    [
        {"cache_ttl": 60},
        {"cache_ttl": 0.25, "method": "HEAD"},
        {"cache_ttl": 86400, "method": "get"},
        {"cache_ttl": 5, "auth": {"credential": "crm"}, "params": {"q": "{{ input.q }}"}},
    ],
)
def test_a_read_with_a_ttl_within_a_day_is_accepted(config):
    assert _problems({"url": URL, **config}) == []


@pytest.mark.parametrize(
    ("ttl", "phrase"),
    [
        (0, "cache_ttl must be more than 0 and at most 86400 seconds (one day), not 0"),
        (-1, "cache_ttl must be more than 0 and at most 86400 seconds (one day), not -1"),
        (86400.5, "not 86400.5"),
        (10**9, "at most 86400 seconds"),
        ("{{ input.ttl }}", "cache_ttl must be a number of seconds, not a template"),
    ],
)
def test_a_ttl_out_of_range_or_templated_is_refused(ttl, phrase):
    problems = _problems({"url": URL, "cache_ttl": ttl})
    assert len(problems) == 1
    location, message = problems[0]
    assert location == "nodes[fetch].config" and phrase in message


@pytest.mark.parametrize("ttl", ["60", True, None, [60], {"s": 60}])
def test_a_ttl_that_is_not_a_number_is_a_type_problem(ttl):
    assert _problems({"url": URL, "cache_ttl": ttl}) == [
        ("nodes[fetch].config.cache_ttl", "must be a number")
    ]


@pytest.mark.parametrize("method", ["POST", "put", "PATCH", "DELETE", "OPTIONS"])
def test_a_ttl_on_a_method_that_is_not_a_read_is_refused(method):
    problems = _problems({"url": URL, "method": method, "cache_ttl": 60})
    assert problems == [
        (
            "nodes[fetch].config",
            f"cache_ttl is only for reads (GET or HEAD): a {method.upper()} request changes "
            "something, and answering it from the cache would skip the change",
        )
    ]


def test_a_ttl_with_a_template_method_is_refused_saying_why():
    problems = _problems({"url": URL, "method": "{{ input.method }}", "cache_ttl": 60})
    assert len(problems) == 1
    assert "cache_ttl needs a fixed method (GET or HEAD)" in problems[0][1]
    assert "could be answered from the cache" in problems[0][1]
    # Without cache_ttl, a template method is still fine.
    assert _problems({"url": URL, "method": "{{ input.method }}"}) == []


def test_every_problem_is_reported_at_once():
    messages = [m for _, m in _problems({"url": URL, "method": "POST", "cache_ttl": 0})]
    assert len(messages) == 2
    assert any("more than 0" in m for m in messages)
    assert any("only for reads" in m for m in messages)


# The key: tenant in clear, the request only as a hash.

BASE = {"url": URL, "params": {"q": "1"}, "headers": {"Accept": "application/json"}}


def _key(config: dict[str, Any], tenant: str = "acme", method: str = "GET") -> str | None:
    return http_cache.cache_key(tenant, method, str(config["url"]), config)


def test_the_key_names_the_tenant_and_hashes_the_request():
    key = _key(BASE)
    assert key is not None
    prefix, tenant, digest = key.rsplit(":", 2)
    assert prefix == "atom:httpcache" and tenant == "acme"
    assert re.fullmatch(r"[0-9a-f]{64}", digest), digest  # a sha256, hex
    assert key == _key(dict(BASE))  # stable


def test_the_idempotency_key_is_left_out_and_header_names_are_case_blind():
    one = {**BASE, "headers": {**BASE["headers"], "Idempotency-Key": "e1:fetch"}}
    two = {**BASE, "headers": {"accept": "application/json", "idempotency-key": "e2:fetch"}}
    assert _key(one) == _key(two) == _key(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"url": URL + "/2"},
        {"params": {"q": "2"}},
        {"params": None},
        {"headers": {"Accept": "text/plain"}},
        {"headers": {**BASE["headers"], "Authorization": "Bearer one"}},
        {"json": None},  # a JSON null body is still a body
        {"json": {"a": 1}},
    ],
)
def test_any_other_part_of_the_request_makes_another_key(change):
    assert _key({**BASE, **change}) != _key(BASE)


def test_credentials_tenants_and_methods_never_share_a_key():
    one = {**BASE, "headers": {"Authorization": "Bearer one"}}
    two = {**BASE, "headers": {"Authorization": "Bearer two"}}
    assert _key(one) != _key(two)
    assert "Bearer" not in (_key(one) or "") and "one" not in (_key(one) or "").split(":")[-1]
    assert _key(BASE, tenant="acme") != _key(BASE, tenant="globex")
    assert _key(BASE, method="GET") != _key(BASE, method="HEAD")


def test_a_request_json_cannot_encode_is_not_cached():
    assert _key({**BASE, "json": float("nan")}) is None


# Redis unreachable: the step calls through, and says so once without the URL's secrets.


@pytest.fixture
def service() -> Iterator[LoopbackService]:
    svc = LoopbackService().start()
    svc.route(r"GET /items\?.*", lambda r, m: (200, {"n": len(svc.received)}))
    yield svc
    svc.stop()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_redis_never_fails_the_step(service, caplog):
    http_cache._process.clear()
    settings = Settings(
        http_allowlist=("127.0.0.0/8",), redis_url=f"redis://127.0.0.1:{_closed_port()}/0"
    )
    ctx = ActionContext("e", "fetch", 1, settings, timeout=5, tenant="acme")
    config = {"url": service.url + "/items?token=s3cret", "cache_ttl": 60}
    with caplog.at_level(logging.WARNING, logger="atom.actions.http_cache"):
        first = http_run(config, ctx)
        second = http_run(config, ctx)
    assert first["status_code"] == second["status_code"] == 200
    assert (first["body"], second["body"]) == ({"n": 1}, {"n": 2})  # both went out
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings  # once per outage, not once per step
    assert "ConnectionError" in warnings[0] and f"{service.url}/***" in warnings[0]
    assert "s3cret" not in warnings[0] and "/items" not in warnings[0]
    http_cache._process.clear()
