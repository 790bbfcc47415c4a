"""Rate limits per API key and per tenant, counted in Redis with the ``limits`` library (the
engine under flask-limiter), so every API process shares one budget.

Budgets (``ATOM_RATE_LIMIT_*``, in ``limits`` notation such as ``120/minute``):
- ``execute``: starting work (execute, retry, events) per key, and per tenant on top;
- ``webhooks``: per webhook token and client address (webhooks carry no key);
- ``reads``: GET per key; ``writes``: other changes per key.
A refused request is a 429 with ``Retry-After``; every limited answer carries
``RateLimit-Limit`` and ``RateLimit-Remaining``.

Failed authentication is counted per client address (``ATOM_AUTH_FAILURES_PER_MINUTE``);
past the budget the address gets 429 before its key is even looked at.

Cost per request: one Redis round trip for the failed-authentication check (which also reads
the key-revocation counter, ``atom.security.auth.KeyCache``) and one for the budgets (a Lua
script doing ``limits``' fixed-window hit on each counter and returning its TTL, where
``limits`` itself would take three round trips per counter).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from atom.config import Settings
from atom.errors import TooManyRequests

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What the tightest budget said about a request."""

    limit: int
    remaining: int
    reset_at: float


class RateLimits:
    """The platform's budgets over one Redis storage."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.enabled = settings.rate_limit_enabled

    @cached_property
    def _limiter(self) -> FixedWindowRateLimiter:
        # The storage connects lazily: creating the app needs no Redis.
        return FixedWindowRateLimiter(storage_from_string(self.settings.events_redis))

    @cached_property
    def items(self) -> dict[str, RateLimitItem]:
        """The parsed budgets by name."""
        s = self.settings
        return {
            "reads": parse(s.rate_limit_reads),
            "writes": parse(s.rate_limit_writes),
            "execute": parse(s.rate_limit_execute),
            "tenant_execute": parse(s.rate_limit_tenant_execute),
            "webhooks": parse(s.rate_limit_webhooks),
            "auth_failures": parse(f"{s.auth_failures_per_minute}/minute"),
        }

    @property
    def _storage(self) -> Any:
        """The ``limits`` Redis storage (its client, and its key naming)."""
        return self._limiter.storage

    @cached_property
    def _redis(self) -> Any:
        return self._storage.get_connection()

    @cached_property
    def _hit_script(self) -> Any:
        return self._redis.register_script(_HIT_LUA)

    def _key(self, budget: str, *identity: str) -> str:
        """The Redis key ``limits`` keeps this budget's counter under."""
        return self._storage.prefixed_key(self.items[budget].key_for("atom", budget, *identity))

    def _hit(self, *budgets: tuple[str, tuple[str, ...]]) -> Verdict:
        """Count one request against each budget in order, in one Redis round trip; stop at
        the first that is spent (later ones are not charged). The tightest verdict."""
        items = [self.items[name] for name, _ in budgets]
        args: list[int] = [1]
        for item in items:
            args += [item.amount, item.get_expiry()]
        answer = self._hit_script(keys=[self._key(n, *i) for n, i in budgets], args=args)
        clock = time.time()
        verdicts = []
        for k, item in enumerate(items[: len(answer) // 2]):
            count, ttl = int(answer[2 * k]), int(answer[2 * k + 1])
            verdict = Verdict(item.amount, max(0, item.amount - count), clock + max(ttl, 0))
            if count > item.amount:
                name = budgets[k][0]
                raise TooManyRequests(
                    f"Rate limit reached: {item.amount} per {_window(item)} for "
                    f"{name.replace('_', ' ')}; try again after Retry-After seconds.",
                    headers=headers(verdict, refused=True),
                )
            verdicts.append(verdict)
        return min(verdicts, key=lambda v: v.remaining)

    def check(self, budget: str, key_id: str, tenant_id: str) -> Verdict | None:
        """Count one request of ``budget`` for a key (and its tenant, for execute)."""
        if not self.enabled:
            return None
        if budget == "execute":
            return self._hit((budget, (key_id,)), ("tenant_execute", (tenant_id,)))
        return self._hit((budget, (key_id,)))

    def check_webhook(self, token: str, client: str) -> Verdict | None:
        """Count one webhook delivery for this token from this address."""
        if not self.enabled:
            return None
        digest = hashlib.sha256(token.encode()).hexdigest()[:32]
        return self._hit(("webhooks", (digest, client)))

    def auth_blocked(self, client: str, also: str | None = None) -> Any:
        """TooManyRequests if ``client`` has failed authentication too often this minute.

        Returns the value of the Redis key ``also`` (the key-revocation counter), read in the
        same round trip; with rate limits off it is read alone, and a Redis error reads as a
        value never seen before (so nothing cached is trusted).
        """
        if not self.enabled:
            if also is None:
                return None
            try:
                return self._redis.get(also)
            except Exception:
                return object()
        item = self.items["auth_failures"]
        keys = [self._key("auth_failures", client)] + ([also] if also else [])
        values = self._redis.mget(keys)
        if int(values[0] or 0) >= item.amount:
            stats = self._limiter.get_window_stats(item, "atom", "auth_failures", client)
            raise TooManyRequests(
                "Too many failed authentications from this address; try again later.",
                headers=headers(Verdict(item.amount, 0, stats.reset_time), refused=True),
            )
        return values[1] if also else None

    def auth_failed(self, client: str) -> None:
        """Count a failed authentication from ``client``."""
        if self.enabled:
            self._limiter.hit(self.items["auth_failures"], "atom", "auth_failures", client)

    def bump(self, key: str) -> None:
        """Increment the Redis counter ``key`` (a key revocation); best effort."""
        try:
            self._redis.incr(key)
        except Exception:  # the key cache's age bound still applies
            logger.warning("could not announce a key revocation in Redis", exc_info=True)


_HIT_LUA = """
-- KEYS: counters; ARGV: cost, then (limit, window seconds) per counter.
-- The fixed-window hit of ``limits`` (INCRBY, EXPIRE on the first hit) plus its TTL, for
-- each counter in order, stopping after the first one past its limit.
local cost = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCRBY', key, cost)
  if n == cost then redis.call('EXPIRE', key, ARGV[2 * i + 1]) end
  out[#out + 1] = n
  out[#out + 1] = redis.call('TTL', key)
  if n > tonumber(ARGV[2 * i]) then break end
end
return out
"""


def _window(item: RateLimitItem) -> str:
    return (
        f"{item.multiples} {item.GRANULARITY.name}" if item.multiples > 1 else item.GRANULARITY.name
    )


def headers(verdict: Verdict, refused: bool = False) -> dict[str, str]:
    """``RateLimit-*`` headers (and ``Retry-After`` when refused)."""
    reset = max(1, math.ceil(verdict.reset_at - time.time()))
    out = {
        "RateLimit-Limit": str(verdict.limit),
        "RateLimit-Remaining": str(0 if refused else verdict.remaining),
        "RateLimit-Reset": str(reset),
    }
    if refused:
        out["Retry-After"] = str(reset)
    return out


class StreamCaps:
    """Open event streams in this process: at most ``per_key`` per API key and ``total`` in
    all, so streams can never take every request thread (health checks included)."""

    def __init__(self, per_key: int, total: int):
        self.per_key, self.total = per_key, total
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, key_id: str) -> None:
        """Count a new stream of ``key_id``; TooManyRequests past a cap."""
        with self._lock:
            mine = self._open.get(key_id, 0)
            if mine >= self.per_key or sum(self._open.values()) >= self.total:
                which = (
                    f"{self.per_key} per API key"
                    if mine >= self.per_key
                    else f"{self.total} per API process"
                )
                raise TooManyRequests(
                    f"Too many open event streams ({which}); close one, or poll "
                    "GET /api/executions/{id} instead.",
                    headers={"Retry-After": "5"},
                )
            self._open[key_id] = mine + 1

    def release(self, key_id: str) -> None:
        """A stream of ``key_id`` closed."""
        with self._lock:
            left = self._open.get(key_id, 0) - 1
            if left > 0:
                self._open[key_id] = left
            else:
                self._open.pop(key_id, None)

    def count(self) -> int:
        """Streams open now."""
        with self._lock:
            return sum(self._open.values())
