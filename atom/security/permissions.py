"""Per-workflow permissions: ``metadata.permissions`` in a definition says who may ``view``,
``run`` and ``edit`` that workflow, on top of the role each endpoint needs.

Each kind is a list of entries: a role (``viewer``, ``operator``, ``editor``, ``admin``), an
API key as ``key:<key id>``, and, in ``run`` only, ``webhook`` (deliveries to the workflow's
webhook URL, which carry no key). A caller is allowed when its role or its own key entry is
listed; a kind that is not listed is open to every role the endpoint admits; ``admin`` keys
are always allowed, so a workflow can never be locked away from its tenant.

A key that may not ``view`` a workflow gets 404 on it (its existence does not leak) and never
sees it, its executions, schedules, fires, troubleshooting sessions, alerts or per-workflow
figures in any list: lists are filtered in SQL (``visible``), so pagination counts stay true.
A key that may view but not ``run``/``edit`` gets 403. ``POST /api/events`` starts only the
workflows the calling key may run; a webhook delivery runs a workflow only when its ``run``
is open or lists ``webhook``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, Text, and_, cast, or_, select, true, type_coerce
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, array
from sqlalchemy.orm import Session

from atom.errors import DefinitionError, Forbidden, NotFound, Problem
from atom.store.models import ApiKey, Execution, Workflow, WorkflowVersion
from atom.workflow.definition import KEY_ENTRY_PREFIX, WEBHOOK_ENTRY

ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who asks: an API key (its role and id), or a webhook delivery (no key)."""

    role: str | None
    key_id: uuid.UUID | None = None

    @property
    def entries(self) -> list[str]:
        """The ``metadata.permissions`` entries that name this caller."""
        if self.role is None:
            return [WEBHOOK_ENTRY]
        found = [self.role]
        if self.key_id is not None:
            found.append(f"{KEY_ENTRY_PREFIX}{self.key_id}")
        return found

    @property
    def unrestricted(self) -> bool:
        """Admin keys see and do everything in their tenant."""
        return self.role == ADMIN


WEBHOOK = Principal(role=None)
"""A delivery to ``/api/hooks/{token}``."""


def allowed(definition: dict[str, Any] | None, kind: str, who: Principal) -> bool:
    """True if ``who`` may ``kind`` (view, run, edit) the workflow of this definition."""
    if who.unrestricted:
        return True
    permissions = ((definition or {}).get("metadata") or {}).get("permissions") or {}
    listed = permissions.get(kind)
    if listed is None:
        return who.role is not None or kind == "run"
    return any(entry in listed for entry in who.entries)


def _allows_sql(kind: str, who: Principal) -> ColumnElement[bool]:
    """SQL: the current version's definition lets ``who`` ``kind`` the workflow."""
    listed = type_coerce(WorkflowVersion.definition, JSONB)["metadata"]["permissions"][kind]
    return or_(listed.is_(None), listed.has_any(cast(array(who.entries), ARRAY(Text))))


def visible(tenant_id: uuid.UUID, who: Principal, *kinds: str) -> Select:
    """The ids of the tenant's workflows (deleted ones included: their executions stay
    readable) that ``who`` may view and every one of ``kinds``, as a subquery."""
    query = select(Workflow.id).where(Workflow.tenant_id == tenant_id)
    if who.unrestricted:
        return query
    query = query.join(
        WorkflowVersion,
        and_(
            WorkflowVersion.workflow_id == Workflow.id,
            WorkflowVersion.version == Workflow.version,
        ),
    )
    wanted = kinds if who.role is None else ("view", *kinds)  # a webhook never views
    for kind in dict.fromkeys(wanted):
        query = query.where(_allows_sql(kind, who))
    return query


def restrict(query: Select, column: Any, tenant_id: uuid.UUID, who: Principal | None) -> Select:
    """``query`` limited to rows whose workflow (``column``) ``who`` may view; rows without a
    workflow (``column`` NULL, e.g. a tenant-wide alert rule) stay."""
    if who is None or who.unrestricted:
        return query
    return query.where(or_(column.is_(None), column.in_(visible(tenant_id, who))))


def runnable(tenant_id: uuid.UUID, who: Principal) -> ColumnElement[bool]:
    """SQL: ``Workflow.id`` is one ``who`` may view and run."""
    if who.unrestricted:
        return true()
    return Workflow.id.in_(visible(tenant_id, who, "run"))


def _definition(session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> Any:
    return session.scalar(
        select(WorkflowVersion.definition)
        .join(Workflow, Workflow.id == WorkflowVersion.workflow_id)
        .where(
            Workflow.id == workflow_id,
            Workflow.tenant_id == tenant_id,
            WorkflowVersion.version == Workflow.version,
        )
    )


def workflow_of_execution(
    session: Session, tenant_id: uuid.UUID, execution_id: uuid.UUID
) -> uuid.UUID | None:
    """The workflow an execution of the tenant's belongs to."""
    return session.scalar(
        select(Execution.workflow_id).where(
            Execution.id == execution_id, Execution.tenant_id == tenant_id
        )
    )


def check(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID | None,
    who: Principal,
    *kinds: str,
) -> None:
    """NotFound if ``who`` may not view the workflow, Forbidden if it may not do one of
    ``kinds`` (view, run, edit) with it. An unknown workflow passes: the caller answers 404."""
    if workflow_id is None or who.unrestricted:
        return
    definition = _definition(session, tenant_id, workflow_id)
    if definition is None:
        return
    if who.role is not None and not allowed(definition, "view", who):
        raise NotFound(f"workflow {workflow_id} not found")
    for kind in kinds:
        if kind != "view" and not allowed(definition, kind, who):
            subject = "webhook deliveries" if who.role is None else f"this key ({who.role})"
            raise Forbidden(f"This workflow's permissions do not let {subject} {kind} it.")


def check_key_entries(
    session: Session, tenant_id: uuid.UUID, permissions: dict[str, tuple[str, ...]]
) -> None:
    """DefinitionError naming every ``key:<id>`` entry that is not one of the tenant's keys."""
    named: dict[uuid.UUID, list[str]] = {}
    for kind, entries in permissions.items():
        for i, entry in enumerate(entries):
            if entry.startswith(KEY_ENTRY_PREFIX):
                where = f"metadata.permissions.{kind}[{i}]"
                named.setdefault(uuid.UUID(entry[len(KEY_ENTRY_PREFIX) :]), []).append(where)
    if not named:
        return
    known = set(
        session.scalars(
            select(ApiKey.id).where(ApiKey.tenant_id == tenant_id, ApiKey.id.in_(list(named)))
        )
    )
    problems = [
        Problem(where, f"key {key_id} is not an API key of this tenant (GET /api/keys)")
        for key_id, places in named.items()
        if key_id not in known
        for where in places
    ]
    if problems:  # in the shape of the definition's other problems
        raise DefinitionError(problems)


def visible_ids(session: Session, tenant_id: uuid.UUID, who: Principal) -> list[str] | None:
    """The ids of the workflows ``who`` may view, for raw-SQL statistics; None when ``who``
    sees every workflow of the tenant (admin)."""
    if who.unrestricted:
        return None
    return [str(i) for i in session.scalars(visible(tenant_id, who))]
