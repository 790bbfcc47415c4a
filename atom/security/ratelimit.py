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

With Redis unreachable the limits fail open (logged once per outage): a rate limit protects
the platform, it does not decide what is correct, and execute must still take runs (202,
sent when the broker is back) rather than answer 500 (issue 10, fault 7).

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
import uuid
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import redis
from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import FixedWindowRateLimiter

from atom.config import Settings
from atom.errors import TooManyRequests

logger = logging.getLogger(__name__)
# What the limits' Redis storage raises when Redis is down (OSError: a refused socket).
STORAGE_ERRORS = (redis.RedisError, OSError)


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

    _outage = False

    def _storage_down(self, error: Exception) -> None:
        if not self._outage:
            logger.warning(
                "rate limits: Redis unreachable (%s); requests are not limited until it is back",
                type(error).__name__,
            )
        self._outage = True

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

    def _hit(self, *budgets: tuple[str, tuple[str, ...]]) -> Verdict | None:
        """Count one request against each budget in order, in one Redis round trip; stop at
        the first that is spent (later ones are not charged). The tightest verdict; None
        while Redis is unreachable (fail open)."""
        items = [self.items[name] for name, _ in budgets]
        args: list[int] = [1]
        for item in items:
            args += [item.amount, item.get_expiry()]
        try:
            answer = self._hit_script(keys=[self._key(n, *i) for n, i in budgets], args=args)
        except STORAGE_ERRORS as e:
            self._storage_down(e)
            return None
        self._outage = False
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
        try:
            values = self._redis.mget(keys)
            if int(values[0] or 0) >= item.amount:
                stats = self._limiter.get_window_stats(item, "atom", "auth_failures", client)
            else:
                stats = None
        except STORAGE_ERRORS as e:
            self._storage_down(e)
            return object() if also else None  # a value never seen: nothing cached is trusted
        if stats is not None:
            raise TooManyRequests(
                "Too many failed authentications from this address; try again later.",
                headers=headers(Verdict(item.amount, 0, stats.reset_time), refused=True),
            )
        return values[1] if also else None

    def auth_failed(self, client: str) -> None:
        """Count a failed authentication from ``client``."""
        if not self.enabled:
            return
        try:
            self._limiter.hit(self.items["auth_failures"], "atom", "auth_failures", client)
        except STORAGE_ERRORS as e:
            self._storage_down(e)

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


STREAM_TTL_S = 60
"""A stream's slot in Redis lives this long without a heartbeat (a crashed process's
streams free their slots after it)."""
STREAM_HEARTBEAT_S = 15
"""How often an open stream renews its slot (its keep-alive comments come as often)."""

# KEYS[1]: the key's sorted set of open streams (member: stream id, score: expiry time).
# ARGV: cap, ttl seconds, stream id. Expired members (their process died) are dropped first.
_ACQUIRE = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
_RENEW = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


@dataclass
class StreamLease:
    """One open stream's place under the caps."""

    key_id: str
    stream_id: str
    renewed_at: float


class StreamCaps:
    """Open event streams: at most ``per_key`` per API key across every API process (counted
    in Redis, each stream renewing a slot with a TTL, so a crashed process leaks nothing for
    longer than ``ttl`` seconds) and ``total`` in this process, so streams can never take
    every request thread (health checks included).

    Without Redis the per-key count falls back to this process alone (logged); the
    per-process cap always holds."""

    def __init__(
        self,
        per_key: int,
        total: int,
        redis_url: str | None = None,
        ttl: int = STREAM_TTL_S,
        heartbeat: float = STREAM_HEARTBEAT_S,
    ):
        self.per_key, self.total = per_key, total
        self.redis_url, self.ttl, self.heartbeat = redis_url, ttl, heartbeat
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    @cached_property
    def _redis(self) -> Any:
        import redis

        assert self.redis_url
        return redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)

    @staticmethod
    def _slots(key_id: str) -> str:
        return f"atom:sse:{key_id}"

    def _refuse(self, which: str) -> TooManyRequests:
        return TooManyRequests(
            f"Too many open event streams ({which}); close one, or poll "
            "GET /api/executions/{id} instead.",
            headers={"Retry-After": "5"},
        )

    def _take_global(self, key_id: str, stream_id: str) -> bool:
        """A slot among the key's streams in every process; True also when Redis is away."""
        if not self.redis_url:
            return True
        try:
            taken = self._redis.eval(
                _ACQUIRE, 1, self._slots(key_id), self.per_key, self.ttl, stream_id
            )
        except Exception as e:  # Redis down: the per-process caps still hold
            logger.warning("event streams: Redis unavailable, per-key cap is per process: %s", e)
            return True
        return bool(taken)

    def acquire(self, key_id: str) -> StreamLease:
        """Count a new stream of ``key_id``; TooManyRequests past a cap."""
        with self._lock:
            mine = self._open.get(key_id, 0)
            if mine >= self.per_key:
                raise self._refuse(f"{self.per_key} per API key")
            if sum(self._open.values()) >= self.total:
                raise self._refuse(f"{self.total} per API process")
            self._open[key_id] = mine + 1
        lease = StreamLease(key_id, uuid.uuid4().hex, time.monotonic())
        if not self._take_global(key_id, lease.stream_id):
            self._drop_local(key_id)
            raise self._refuse(f"{self.per_key} per API key, across API processes")
        return lease

    def renew(self, lease: StreamLease) -> None:
        """Keep the stream's slot (call while it is open; cheap when called often)."""
        if not self.redis_url or time.monotonic() - lease.renewed_at < self.heartbeat:
            return
        lease.renewed_at = time.monotonic()
        try:
            self._redis.eval(_RENEW, 1, self._slots(lease.key_id), self.ttl, lease.stream_id)
        except Exception as e:
            logger.warning("event streams: could not renew a slot: %s", e)

    def release(self, lease: StreamLease) -> None:
        """The stream closed: free its slot here and in Redis."""
        self._drop_local(lease.key_id)
        if self.redis_url:
            try:
                self._redis.zrem(self._slots(lease.key_id), lease.stream_id)
            except Exception as e:  # its TTL frees it
                logger.warning("event streams: could not free a slot: %s", e)

    def _drop_local(self, key_id: str) -> None:
        with self._lock:
            left = self._open.get(key_id, 0) - 1
            if left > 0:
                self._open[key_id] = left
            else:
                self._open.pop(key_id, None)

    def count(self) -> int:
        """Streams open now in this process."""
        with self._lock:
            return sum(self._open.values())
