"""Workflows and their immutable versions: create, read, change, delete. Tenant-scoped."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from atom.clock import now
from atom.errors import DefinitionError, NotFound, Problem
from atom.security import netguard, permissions, vault
from atom.store.models import Workflow, WorkflowVersion
from atom.workflow.compiler import compile_plan
from atom.workflow.definition import Definition, parse_definition, unknown_step_references


def validate(
    document: Any, http_allowlist: tuple[str, ...] | None = None
) -> tuple[Definition, dict[str, Any]]:
    """Parse and compile a document; raises DefinitionError listing every problem.

    A document being saved is held to more than one that loads: a template must not read a
    step the workflow does not have, and with ``http_allowlist`` given (``ATOM_HTTP_ALLOWLIST``)
    an ``http_request`` to an address the outbound guard will refuse is a problem now, not a
    failed run later."""
    definition = parse_definition(document)
    problems = unknown_step_references(definition)
    if http_allowlist is not None:
        problems += _refused_targets(definition, http_allowlist)
    if problems:
        raise DefinitionError(problems)
    return definition, compile_plan(definition)


def _refused_targets(definition: Definition, allowlist: tuple[str, ...]) -> list[Problem]:
    problems = []
    for node in definition.nodes:
        url = node.config.get("url")
        if node.action_type != "http_request" or not isinstance(url, str):
            continue
        if reason := netguard.refused_before_running(url, allowlist):
            problems.append(Problem(f"nodes[{node.id}].config.url", reason, node.id))
    return problems


def _describe(workflow: Workflow, definition: Definition) -> None:
    workflow.name = definition.name
    workflow.description = definition.description
    workflow.trigger_kind = definition.trigger_kind.value
    workflow.event_type = definition.event_type


def create_workflow(
    session: Session,
    tenant_id: uuid.UUID,
    document: Any,
    http_allowlist: tuple[str, ...] | None = None,
) -> tuple[Workflow, WorkflowVersion]:
    """Validate, compile and store a new workflow at version 1 (``validate`` says what
    ``http_allowlist`` adds)."""
    definition, plan = validate(document, http_allowlist)
    vault.check_references(session, tenant_id, list(definition.nodes))
    permissions.check_key_entries(session, tenant_id, definition.permissions)
    workflow = Workflow(id=uuid.uuid4(), tenant_id=tenant_id, version=1)
    _describe(workflow, definition)
    session.add(workflow)
    session.flush()
    version = WorkflowVersion(
        tenant_id=tenant_id,
        workflow_id=workflow.id,
        version=1,
        definition=definition.to_dict(),
        plan=plan,
    )
    session.add(version)
    session.flush()
    return workflow, version


def list_query(tenant_id: uuid.UUID, name: str | None = None) -> Select:
    """The tenant's live workflows, newest first, optionally filtered by name."""
    query = select(Workflow).where(Workflow.tenant_id == tenant_id, Workflow.deleted_at.is_(None))
    if name:
        query = query.where(Workflow.name.ilike(f"%{name}%"))
    return query.order_by(Workflow.created_at.desc(), Workflow.id)


def get_workflow(
    session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID, *, for_update: bool = False
) -> Workflow:
    """The tenant's live workflow, or NotFound."""
    query = select(Workflow).where(
        Workflow.id == workflow_id, Workflow.tenant_id == tenant_id, Workflow.deleted_at.is_(None)
    )
    workflow = session.scalar(query.with_for_update() if for_update else query)
    if workflow is None:
        raise NotFound(f"workflow {workflow_id} not found")
    return workflow


def get_version(session: Session, workflow: Workflow, number: int | None = None) -> WorkflowVersion:
    """A version of the workflow (default: the current one)."""
    version = session.scalar(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id == workflow.id,
            WorkflowVersion.tenant_id == workflow.tenant_id,
            WorkflowVersion.version == (number or workflow.version),
        )
    )
    if version is None:
        raise NotFound(f"version {number} of workflow {workflow.id} not found")
    return version


def versions_of(session: Session, workflows: list[Workflow]) -> dict[uuid.UUID, WorkflowVersion]:
    """The current version of each workflow, in one query."""
    if not workflows:
        return {}
    wanted = {(w.id, w.version) for w in workflows}
    rows = session.scalars(
        select(WorkflowVersion).where(
            WorkflowVersion.workflow_id.in_([w.id for w in workflows]),
            WorkflowVersion.tenant_id == workflows[0].tenant_id,
        )
    )
    return {v.workflow_id: v for v in rows if (v.workflow_id, v.version) in wanted}


def update_workflow(
    session: Session,
    tenant_id: uuid.UUID,
    workflow_id: uuid.UUID,
    document: Any,
    http_allowlist: tuple[str, ...] | None = None,
) -> tuple[Workflow, WorkflowVersion]:
    """Store a new version; executions already running keep the version they started on."""
    definition, plan = validate(document, http_allowlist)
    vault.check_references(session, tenant_id, list(definition.nodes))
    permissions.check_key_entries(session, tenant_id, definition.permissions)
    workflow = get_workflow(session, tenant_id, workflow_id, for_update=True)
    workflow.version += 1
    workflow.updated_at = now()
    _describe(workflow, definition)
    version = WorkflowVersion(
        tenant_id=tenant_id,
        workflow_id=workflow.id,
        version=workflow.version,
        definition=definition.to_dict(),
        plan=plan,
    )
    session.add(version)
    session.flush()
    return workflow, version


def delete_workflow(session: Session, tenant_id: uuid.UUID, workflow_id: uuid.UUID) -> None:
    """Soft delete: the workflow disappears from the API, its executions stay."""
    workflow = get_workflow(session, tenant_id, workflow_id, for_update=True)
    workflow.deleted_at = now()
    session.flush()


def workflow_view(workflow: Workflow, version: WorkflowVersion | None) -> dict[str, Any]:
    """A workflow as the API shows it."""
    return {
        "id": str(workflow.id),
        "name": workflow.name,
        "description": workflow.description,
        "version": workflow.version,
        "trigger_kind": workflow.trigger_kind,
        "event_type": workflow.event_type,
        "definition": version.definition if version else None,
        "created_at": workflow.created_at.isoformat() if workflow.created_at else None,
        "updated_at": workflow.updated_at.isoformat() if workflow.updated_at else None,
    }
