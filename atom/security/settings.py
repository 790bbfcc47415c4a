"""Tenant settings an admin changes (``PUT /api/settings``), and the email allowlist.

``email_allowed_domains``: the domains the tenant's emails (the ``email`` action and alert
channels) may go to; none by default, so ATOM emails nobody until an admin says where.
A domain admits itself and its subdomains.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy.orm import Session

from atom.errors import InvalidInput, NotFound
from atom.store.models import Tenant

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN_PATTERN = rf"^{_LABEL}(\.{_LABEL})+$"
"""A domain as the API's document states it (no lookarounds: JSON Schema patterns are
ECMA-262); the server also takes it in any case and with surrounding dots or spaces."""
_DOMAIN = re.compile(DOMAIN_PATTERN)
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@([^@\s<>,;\"]+)$")
MAX_DOMAINS = 100
KNOWN = {"email_allowed_domains"}


def _normal(domain: str) -> str:
    return domain.strip().strip(".").lower()


def domain_ok(domain: Any) -> bool:
    """True if ``domain`` is a domain the allowlist takes."""
    return isinstance(domain, str) and bool(_DOMAIN.fullmatch(_normal(domain)))


def _tenant(session: Session, tenant_id: uuid.UUID) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("no such tenant")
    return tenant


def get(session: Session, tenant_id: uuid.UUID) -> dict[str, Any]:
    """The tenant's settings, with defaults filled in."""
    stored = _tenant(session, tenant_id).settings or {}
    return {"email_allowed_domains": list(stored.get("email_allowed_domains") or [])}


def put(session: Session, tenant_id: uuid.UUID, doc: Any) -> dict[str, Any]:
    """Replace the tenant's settings; InvalidInput names every problem."""
    if not isinstance(doc, dict):
        raise InvalidInput({"body": ["must be an object, e.g. {email_allowed_domains: [...]}"]})
    problems: dict[str, list[str]] = {}
    for key in set(doc) - KNOWN:
        problems.setdefault(key, []).append(f"is not a setting (known: {', '.join(KNOWN)})")
    domains = doc.get("email_allowed_domains", [])
    if not isinstance(domains, list) or len(domains) > MAX_DOMAINS:
        problems.setdefault("email_allowed_domains", []).append(
            f"must be a list of at most {MAX_DOMAINS} domains"
        )
    else:
        for i, domain in enumerate(domains):
            if not domain_ok(domain):
                problems.setdefault(f"email_allowed_domains[{i}]", []).append(
                    "must be a domain such as example.com"
                )
    if problems:
        raise InvalidInput(problems)
    tenant = _tenant(session, tenant_id)
    tenant.settings = {"email_allowed_domains": sorted({_normal(d) for d in domains})}
    session.flush()
    return get(session, tenant_id)


def allowed_domains(session: Session, tenant_id: uuid.UUID) -> tuple[str, ...]:
    """The tenant's email allowlist."""
    return tuple(get(session, tenant_id)["email_allowed_domains"])


def refused_recipients(to: list[str], domains: tuple[str, ...]) -> list[str]:
    """The addresses in ``to`` outside ``domains`` (malformed ones included)."""
    refused = []
    for address in to:
        match = _ADDRESS.match(address.strip()) if isinstance(address, str) else None
        domain = match.group(1).lower().rstrip(".") if match else None
        if domain is None or not any(domain == d or domain.endswith("." + d) for d in domains):
            refused.append(str(address))
    return refused


def allowlist_problem(to: list[str], domains: tuple[str, ...]) -> str | None:
    """A sentence naming the refused recipients and the allowlist, or None."""
    refused = refused_recipients(to, domains)
    if not refused:
        return None
    shown = ", ".join(domains) if domains else "none: an admin sets it with PUT /api/settings"
    return f"{', '.join(refused)} not in the tenant's email_allowed_domains ({shown})"
