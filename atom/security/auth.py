"""Tenants, API keys and roles. Keys are random tokens; only their SHA-256 hash is stored."""

from __future__ import annotations

import hashlib
import secrets
from enum import Enum

from sqlalchemy import select
from sqlalchemy.orm import Session

from atom.errors import Forbidden, Unauthorized
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


def create_key(session: Session, tenant: Tenant, role: Role, name: str = "") -> str:
    """Create a key for ``tenant``; the plaintext is returned once and never stored."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            tenant_id=tenant.id, role=role.value, name=name, key_hash=hash_key(key), prefix=key[:12]
        )
    )
    session.flush()
    return key


def authenticate(session: Session, key: str | None, needed: Role) -> ApiKey:
    """The key record for ``key``, checked against the role an endpoint needs."""
    if not key:
        raise Unauthorized(
            "An API key is required: send it as X-API-Key or 'Authorization: Bearer <key>'."
        )
    record = session.scalar(
        select(ApiKey).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
    if record is None:
        raise Unauthorized("The API key is unknown or revoked.")
    if Role(record.role).rank < needed.rank:
        raise Forbidden(f"This needs the {needed.value} role; the key has {record.role}.")
    return record
