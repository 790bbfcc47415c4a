"""Tenants, API keys and roles. Keys are random tokens; only their SHA-256 hash is stored."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from atom.clock import now
from atom.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from atom.store.models import ApiKey, Tenant

KEY_PREFIX = "atom_"


class Role(str, Enum):
    """What a key may do; each role includes the ones below it."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    EDITOR = "editor"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in viewer < operator < editor < admin."""
        return list(Role).index(self)


def hash_key(key: str) -> str:
    """The stored form of a key (keys are 256-bit random, so a plain hash is enough)."""
    return hashlib.sha256(key.encode()).hexdigest()


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    """The tenant with this name, created if new."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(
    session: Session,
    tenant: Tenant,
    role: Role,
    name: str = "",
    expires_at: datetime | None = None,
) -> str:
    """Create a key for ``tenant``; the plaintext is returned once and never stored."""
    return issue_key(session, tenant.id, role, name, expires_at)[1]


def issue_key(
    session: Session,
    tenant_id: uuid.UUID,
    role: Role,
    name: str = "",
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key record and its plaintext (shown once, never stored)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        role=role.value,
        name=name,
        key_hash=hash_key(key),
        prefix=key[:12],
        expires_at=expires_at,
    )
    session.add(record)
    session.flush()
    return record, key


MAX_KEY_LIFETIME = timedelta(days=3650)
FUTURE_TIME_FORMAT = "future-date-time"
"""The OpenAPI ``format`` of ``expires_at``: an RFC 3339 date-time that lies in the future
(a window a JSON Schema cannot state; the name says it)."""


def _expiry(doc: dict[str, Any], problems: dict[str, list[str]]) -> datetime | None:
    """``expires_at`` from ``expires_at`` (ISO 8601) or ``expires_in`` (seconds)."""
    expires_at: datetime | None = None
    if "expires_at" in doc and "expires_in" in doc:
        problems.setdefault("expires_at", []).append("give expires_at or expires_in, not both")
    elif doc.get("expires_at") is not None:
        try:
            expires_at = datetime.fromisoformat(str(doc["expires_at"]).replace("Z", "+00:00"))
            if expires_at.tzinfo is None:
                raise ValueError("no timezone")
        except ValueError:
            problems.setdefault("expires_at", []).append(
                "must be an ISO 8601 time with a timezone, e.g. 2027-01-31T00:00:00Z"
            )
        else:
            if expires_at <= now():
                problems.setdefault("expires_at", []).append("must be in the future")
    elif doc.get("expires_in") is not None:
        seconds = doc["expires_in"]
        if (
            not isinstance(seconds, int)
            or isinstance(seconds, bool)
            or not 1 <= seconds <= MAX_KEY_LIFETIME.total_seconds()
        ):
            problems.setdefault("expires_in", []).append(
                "must be a whole number of seconds, 1 to 10 years"
            )
        else:
            expires_at = now() + timedelta(seconds=seconds)
    return expires_at


def parse_key_request(doc: Any) -> tuple[str, Role, datetime | None]:
    """``(name, role, expires_at)`` of a ``POST /api/keys`` body; InvalidInput otherwise."""
    problems: dict[str, list[str]] = {}
    if not isinstance(doc, dict):
        raise InvalidInput({"body": ["must be an object {name, role, expires_at? | expires_in?}"]})
    for key in set(doc) - {"name", "role", "expires_at", "expires_in"}:
        problems.setdefault(key, []).append("is not a field of a key")
    name = doc.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        problems.setdefault("name", []).append("must be a string of at most 200 characters")
    role = doc.get("role")
    if role not in [r.value for r in Role]:
        problems.setdefault("role", []).append(f"must be one of {', '.join(r.value for r in Role)}")
    expires_at = _expiry(doc, problems)
    if problems:
        raise InvalidInput(problems)
    return name, Role(role), expires_at


def key_view(record: ApiKey) -> dict[str, Any]:
    """A key as the API lists it: never the secret, only its first characters."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": str(record.id),
        "name": record.name,
        "role": record.role,
        "prefix": record.prefix,
        "created_at": iso(record.created_at),
        "expires_at": iso(record.expires_at),
        "last_used_at": iso(record.last_used_at),
        "revoked": record.revoked_at is not None,
        "revoked_at": iso(record.revoked_at),
    }


def list_query(tenant_id: uuid.UUID) -> Select:
    """The tenant's keys, newest first."""
    return (
        select(ApiKey)
        .where(ApiKey.tenant_id == tenant_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id)
    )


def get_key(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    """The tenant's key ``key_id``; NotFound otherwise."""
    record = session.get(ApiKey, key_id)
    if record is None or record.tenant_id != tenant_id:
        raise NotFound(f"no key {key_id}")
    return record


def revoke_key(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey:
    """Revoke a key: it is refused from its next request on."""
    record = get_key(session, tenant_id, key_id)
    if record.revoked_at is None:
        record.revoked_at = now()
        session.flush()
    return record


# last_used_at is written at most this often per key, so reads stay reads.
LAST_USED_RESOLUTION = timedelta(seconds=60)

REVOCATIONS_KEY = "atom:keys:revocations"
"""A Redis counter every key revocation increments; API processes read it with the
failed-authentication check and empty their key cache when it changes (``KeyCache``)."""


@dataclass(frozen=True)
class Grant:
    """What a request needs of its API key: a snapshot of the record, safe to keep."""

    id: uuid.UUID
    tenant_id: uuid.UUID
    role: str
    expires_at: datetime | None

    @classmethod
    def of(cls, record: ApiKey) -> Grant:
        """The snapshot of a key record."""
        return cls(record.id, record.tenant_id, record.role, record.expires_at)


def _no_key() -> Unauthorized:
    return Unauthorized(
        "An API key is required: send it as X-API-Key or 'Authorization: Bearer <key>'."
    )


def _admit(grant: Grant | ApiKey, needed: Role, stamp: datetime) -> None:
    if grant.expires_at is not None and grant.expires_at <= stamp:
        raise Unauthorized("The API key has expired; ask an admin for a new one.")
    if Role(grant.role).rank < needed.rank:
        raise Forbidden(f"This needs the {needed.value} role; the key has {grant.role}.")


def authenticate(session: Session, key: str | None, needed: Role) -> ApiKey:
    """The key record for ``key``, checked against the role an endpoint needs."""
    if not key:
        raise _no_key()
    record = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
    if record is None:
        raise Unauthorized("The API key is unknown or revoked.")
    stamp = now()
    _admit(record, needed, stamp)
    if record.last_used_at is None or stamp - record.last_used_at > LAST_USED_RESOLUTION:
        record.last_used_at = stamp
        session.commit()
    return record


class KeyCache:
    """Keys this API process found valid recently, so a request with a known key costs no
    database round trip (``ATOM_KEY_CACHE_SECONDS``; 0 turns the cache off).

    Safe because it is bounded three ways:
    - **Revocation** increments a Redis counter (``REVOCATIONS_KEY``) after its commit. Every
      request reads that counter in the same Redis round trip as the failed-authentication
      check, and a process that sees it change empties its cache before using it: a revoked
      key is refused from the next request on, in every process.
    - **Age.** An entry is trusted for ``ttl`` seconds at most, then looked up again; that
      bounds a revocation whose counter bump was lost (Redis down at that moment) or a key
      revoked directly in SQL.
    - **Expiry and role** are checked on every request, from the snapshot.
    Only valid keys are cached (unknown ones always reach PostgreSQL, and count as failed
    authentications); entries are keyed by the key's SHA-256, never the key itself.
    ``last_used_at`` is refreshed when an entry is looked up again (so to within
    ``ttl`` + 60 s).
    """

    def __init__(self, ttl: float, size: int = 10_000):
        self.ttl, self.size = ttl, size
        self._entries: dict[str, tuple[Grant, float]] = {}
        self._epoch: object = None
        self._lock = threading.Lock()

    def authenticate(
        self, session: Session, key: str | None, needed: Role, epoch: object = None
    ) -> Grant:
        """The grant of ``key`` for an endpoint needing ``needed``; ``epoch`` is the current
        value of the revocation counter."""
        if not key:
            raise _no_key()
        digest = hash_key(key)
        with self._lock:
            if epoch != self._epoch:
                self._entries.clear()
                self._epoch = epoch
            found = self._entries.get(digest)
        if found is not None and time.monotonic() - found[1] < self.ttl:
            _admit(found[0], needed, now())
            return found[0]
        grant = Grant.of(authenticate(session, key, needed))
        if self.ttl > 0:
            with self._lock:
                if self._epoch == epoch:  # no revocation seen meanwhile
                    if len(self._entries) >= self.size:
                        self._entries.clear()
                    self._entries[digest] = (grant, time.monotonic())
        return grant

    def holds(self, key: str) -> bool:
        """Whether ``key`` would be trusted now without a database lookup."""
        with self._lock:
            found = self._entries.get(hash_key(key))
        return found is not None and time.monotonic() - found[1] < self.ttl

    def forget_all(self) -> None:
        """Drop every entry (this process revoked a key)."""
        with self._lock:
            self._entries.clear()
