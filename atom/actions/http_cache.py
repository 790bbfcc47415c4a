"""The response cache of ``http_request`` steps that set ``cache_ttl``: idempotent reads (GET,
HEAD) answered from Redis for a while instead of calling the service again.

An entry is ``atom:httpcache:<tenant>:<sha256>`` in the events Redis (``REDIS_URL``): the hash
covers the fully rendered request (method, URL, params, JSON body and every header but
``Idempotency-Key``, credentials included, so two credentials never share an entry and no
secret is stored in clear), and the value is the step's output as JSON, as the handler
returned it; a hit answers it with two headers added, ``Age`` and ``X-Atom-Cache: hit``, so a
run shows which answers came from the cache. Only 2xx outputs of at most
:data:`MAX_ENTRY_BYTES` are stored.

The cache is best effort: a Redis error is logged (at most once a minute) and the step calls
the service as if there were no cache; after an error this process leaves Redis alone for
:data:`BACKOFF_SECONDS`, so an unreachable Redis costs a step at most one connect timeout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

logger = logging.getLogger(__name__)

KEY_PREFIX = "atom:httpcache:"
HIT_HEADER = "X-Atom-Cache"
"""Added (value ``hit``) to the headers of an output the cache answered."""
MAX_TTL_SECONDS = 86400
MAX_ENTRY_BYTES = 1024 * 1024
CACHEABLE_METHODS = ("GET", "HEAD")
BACKOFF_SECONDS = 30.0
WARN_EVERY = 60.0
# Per call: a slow Redis must not hold a step much longer than its own request would.
SOCKET_TIMEOUT = 2.0
_EXCLUDED_HEADERS = {"idempotency-key"}  # differs per execution by design
_OUTPUT_KEYS = {"status_code", "headers", "body"}

# This process's client (made after the prefork fork) and its outage state.
_process: dict[str, Any] = {}


def cache_key(tenant: str, method: str, url: str, config: dict[str, Any]) -> str | None:
    """The Redis key of one rendered request of ``tenant``; None when the request cannot be
    keyed (it holds a value JSON cannot encode), so it is not cached."""
    headers = sorted(
        [str(k).lower(), str(v)]
        for k, v in (config.get("headers") or {}).items()
        if str(k).lower() not in _EXCLUDED_HEADERS
    )
    request: dict[str, Any] = {
        "method": method,
        "url": url,
        "params": config.get("params") or None,
        "headers": headers,
    }
    if "json" in config:  # "json": null sends a body; no "json" sends none
        request["json"] = [config["json"]]
    try:
        canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return f"{KEY_PREFIX}{tenant}:{digest}"


def _client(redis_url: str) -> Any:
    if _process.get("pid") != os.getpid() or _process.get("url") != redis_url:
        import redis  # loaded by a step that caches, not by validating a definition

        _process.update(
            pid=os.getpid(),
            url=redis_url,
            client=redis.Redis.from_url(
                redis_url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
            ),
            down_until=0.0,
        )
    return _process["client"]


def _available(redis_url: str) -> Any:
    client = _client(redis_url)
    return None if time.monotonic() < _process["down_until"] else client


def _failed(error: Exception, what: str, shown_url: str) -> None:
    now = time.monotonic()
    _process["down_until"] = now + BACKOFF_SECONDS
    if now - _process.get("warned_at", -WARN_EVERY) >= WARN_EVERY:  # not one per step
        _process["warned_at"] = now
        logger.warning(
            "http_request: response cache: could not %s (%s); calling %s without the cache "
            "(Redis left alone for %g s)",
            what,
            type(error).__name__,
            shown_url,
            BACKOFF_SECONDS,
        )


def lookup(redis_url: str, key: str, ttl: float, shown_url: str) -> dict[str, Any] | None:
    """The stored output under ``key``, or None (a miss, a bad entry, or Redis failing).

    A hit says so in its headers, as an HTTP cache does: ``Age`` (seconds since it was
    stored, RFC 9111) and ``X-Atom-Cache: hit`` (what the optimizer counts as no call)."""
    import redis

    client = _available(redis_url)
    if client is None:
        return None
    try:
        with client.pipeline(transaction=False) as pipe:
            raw, left_ms = pipe.get(key).pttl(key).execute()
    except (redis.RedisError, OSError) as e:
        _failed(e, "read an entry", shown_url)
        return None
    if raw is None:
        return None
    try:
        output = json.loads(raw)
    except ValueError:
        output = None
    if not isinstance(output, dict) or set(output) != _OUTPUT_KEYS:
        logger.warning("http_request: response cache: ignoring a malformed entry for %s", shown_url)
        return None
    age = max(0, round(ttl - max(0, left_ms or 0) / 1000))
    headers = output["headers"] if isinstance(output["headers"], dict) else {}
    output["headers"] = {**headers, "Age": str(age), HIT_HEADER: "hit"}
    return output


def store(redis_url: str, key: str, output: dict[str, Any], ttl: float, shown_url: str) -> None:
    """Keep a 2xx ``output`` under ``key`` for ``ttl`` seconds (if it is small enough)."""
    import redis

    if not 200 <= output["status_code"] < 300:
        return
    data = json.dumps(output, separators=(",", ":")).encode()
    if len(data) > MAX_ENTRY_BYTES:
        return
    client = _available(redis_url)
    if client is None:
        return
    try:
        # Milliseconds, so a fractional cache_ttl is honoured rather than truncated.
        client.set(key, data, px=max(1, round(ttl * 1000)))
    except (redis.RedisError, OSError) as e:
        _failed(e, "store an entry", shown_url)
