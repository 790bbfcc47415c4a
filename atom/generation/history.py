"""The tenant's own history: which catalogue services its workflows already use. A generic
word ("email") then means the service this tenant uses, not the most common one."""

from __future__ import annotations

import uuid
from collections import Counter

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from atom.catalogue import Catalogue
from atom.store.models import Workflow, WorkflowVersion

RECENT = 200
"""How many of the tenant's newest workflows are read."""


def _prefixes(catalogue: Catalogue, base_url: str | None) -> list[tuple[str, str]]:
    pairs = []
    for service in catalogue.services.values():
        if service.base_url and service.base_url != "https://example.com":
            pairs.append((service.base_url.rstrip("/") + "/", service.slug))
        if base_url:
            pairs.append((f"{base_url.rstrip('/')}/{service.slug}/", service.slug))
    # Longest first: a sandbox base may be a prefix of another service's URL.
    return sorted(pairs, key=lambda p: -len(p[0]))


def service_usage(
    session: Session, tenant_id: uuid.UUID, catalogue: Catalogue, base_url: str | None = None
) -> dict[str, int]:
    """How many of the tenant's recent workflows use each service (by slug)."""
    rows = session.execute(
        select(Workflow.event_type, WorkflowVersion.definition)
        .join(
            WorkflowVersion,
            and_(
                WorkflowVersion.workflow_id == Workflow.id,
                WorkflowVersion.version == Workflow.version,
                WorkflowVersion.tenant_id == tenant_id,
            ),
        )
        .where(Workflow.tenant_id == tenant_id, Workflow.deleted_at.is_(None))
        .order_by(Workflow.created_at.desc())
        .limit(RECENT)
    ).all()
    prefixes = _prefixes(catalogue, base_url)
    counts: Counter[str] = Counter()
    for event_type, definition in rows:
        used: set[str] = set()
        slug = (event_type or "").split(".", 1)[0]
        if slug in catalogue.services:
            used.add(slug)
        for node in (definition or {}).get("nodes", []):
            url = str((node.get("config") or {}).get("url", ""))
            match = next((s for p, s in prefixes if url.startswith(p)), None)
            if match:
                used.add(match)
        counts.update(used)
    return dict(counts)
