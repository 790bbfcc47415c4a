"""``http_request``'s response cache (``cache_ttl``) on a real worker, a real Redis and a real
loopback service: a repeated read is answered from the cache with the same output, entries are
per tenant and per credential, and only 2xx answers are kept."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis

from atom.client import Client
from atom.config import Settings
from tests.integration.helpers import action, by_node, trigger, workflow
from tests.integration.loopback import LoopbackService

TTL = 60


@pytest.fixture
def tenant_client(api_url: str, make_key: Callable[..., str], worker) -> Callable[[], Client]:
    """An admin client of a new tenant, its name on ``client.tenant``."""

    def make() -> Client:
        name = f"httpcache-{uuid.uuid4().hex[:10]}"
        client = Client(api_url, make_key("admin", tenant=name))
        client.tenant = name  # type: ignore[attr-defined]
        return client

    return make


def _counting(service: LoopbackService, path: str, status: int = 200) -> None:
    service.route(
        f"GET {path}(\\?.*)?",
        lambda req, m: (status, {"call": len(service.calls("GET", path))}),
    )


def _cached_get(url: str, **config: Any) -> dict[str, Any]:
    return workflow(
        f"cached-{uuid.uuid4().hex[:6]}",
        [trigger(), action("fetch", "http_request", url=url, cache_ttl=TTL, **config)],
        [("start", "fetch")],
    )


def _run(client: Client, workflow_id: str, payload: dict | None = None) -> dict[str, Any]:
    done = client.wait(client.execute(workflow_id, payload or {})["id"])
    return {"status": done["status"], **by_node(done)["fetch"]}


def test_a_repeated_read_is_answered_from_the_cache_per_tenant(
    tenant_client, service: LoopbackService, settings: Settings
):
    path = f"/items/{uuid.uuid4().hex[:8]}"
    _counting(service, path)
    doc = _cached_get(service.url + path, params={"token": "query-s3cret"})
    acme = tenant_client()
    wf = acme.create_workflow(doc)["id"]

    first, second = _run(acme, wf), _run(acme, wf)
    assert first["status"] == second["status"] == "succeeded", (first, second)
    assert len(service.calls("GET", path)) == 1
    # The same output (the server's Date header included), marked as an HTTP cache does.
    hit = second["output"]
    assert hit["headers"].pop("X-Atom-Cache") == "hit"
    assert 0 <= int(hit["headers"].pop("Age")) <= 2
    assert hit == first["output"] and "X-Atom-Cache" not in first["output"]["headers"]
    assert set(first["output"]) == {"status_code", "headers", "body"}
    assert first["output"]["body"] == {"call": 1}

    # The entry: the tenant in clear, the request only as a hash, the output as JSON.
    r = redis.Redis.from_url(settings.events_redis)
    keys = [k.decode() for k in r.scan_iter(f"atom:httpcache:{acme.tenant}:*")]
    assert len(keys) == 1 and "s3cret" not in keys[0]
    assert json.loads(r.get(keys[0]) or b"") == first["output"]
    assert 0 < r.pttl(keys[0]) <= TTL * 1000

    # Another tenant with the same request gets its own call and its own entry.
    globex = tenant_client()
    theirs = _run(globex, globex.create_workflow(doc)["id"])
    assert theirs["status"] == "succeeded"
    assert theirs["output"]["body"] == {"call": 2}
    assert len(service.calls("GET", path)) == 2
    assert len(list(r.scan_iter(f"atom:httpcache:{globex.tenant}:*"))) == 1
    r.close()


def test_different_credentials_are_different_entries_and_none_is_kept_in_clear(
    tenant_client, service: LoopbackService, settings: Settings
):
    path = f"/me/{uuid.uuid4().hex[:8]}"
    service.route(
        f"GET {path}",
        lambda req, m: (
            200,
            {"call": len(service.calls("GET", path)), "seen": req.headers["Authorization"]},
            {"Set-Cookie": "session=cookie-s3cret"},
        ),
    )
    client = tenant_client()
    doc = _cached_get(service.url + path, headers={"Authorization": "Bearer {{ input.token }}"})
    wf = client.create_workflow(doc)["id"]

    runs = [_run(client, wf, {"token": t}) for t in ("alice-token", "bob-token") * 2]
    assert [r["status"] for r in runs] == ["succeeded"] * 4
    assert [r["output"]["body"]["call"] for r in runs] == [1, 2, 1, 2]
    for hit, first in ((runs[2], runs[0]), (runs[3], runs[1])):
        assert hit["output"]["headers"].pop("X-Atom-Cache") == "hit"
        hit["output"]["headers"].pop("Age")
        assert hit["output"] == first["output"]
    sent = [c.headers["Authorization"] for c in service.calls("GET", path)]
    assert sent == ["Bearer alice-token", "Bearer bob-token"]

    # The entries hold what the steps record: the echoed token and the cookie masked.
    r = redis.Redis.from_url(settings.events_redis)
    keys = list(r.scan_iter(f"atom:httpcache:{client.tenant}:*"))
    values = [r.get(k) or b"" for k in keys]
    r.close()
    assert len(keys) == 2
    for raw in (*keys, *values):
        assert b"alice-token" not in raw and b"bob-token" not in raw
        assert b"cookie-s3cret" not in raw
    assert sorted(json.loads(v)["body"]["call"] for v in values) == [1, 2]


def test_an_answer_that_is_not_2xx_is_not_cached(tenant_client, service: LoopbackService):
    path = f"/gone/{uuid.uuid4().hex[:8]}"
    _counting(service, path, status=404)
    client = tenant_client()
    wf = client.create_workflow(_cached_get(service.url + path))["id"]

    first, second = _run(client, wf), _run(client, wf)
    assert first["status"] == second["status"] == "failed"
    assert "answered 404" in first["error"]["message"]
    assert len(service.calls("GET", path)) == 2
