"""Per-app state (settings, sessions, Celery) and the per-request tenant and key."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from celery import Celery
from flask import current_app, g, request
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from api import guard
from atom.config import Settings
from atom.errors import Unauthorized
from atom.observe import logs
from atom.observe.probe import Probe
from atom.security import permissions
from atom.security.auth import Role, authenticate
from atom.security.ratelimit import RateLimits, StreamCaps


@dataclass(frozen=True)
class AppState:
    """What every request of one app shares."""

    settings: Settings
    factory: sessionmaker[Session]
    celery: Celery
    probe: Probe
    metrics: Any
    """The prometheus_client registry ``/metrics`` renders."""
    limits: RateLimits
    streams: StreamCaps


def state() -> AppState:
    """The state of the app serving this request."""
    return current_app.extensions["atom"]


def session() -> Session:
    """The request's database session (closed at teardown)."""
    if "db" not in g:
        g.db = state().factory()
    return g.db


def tenant_id() -> uuid.UUID:
    """The tenant of the request's API key."""
    return g.tenant_id


def _key_from_request() -> str | None:
    key = request.headers.get("X-API-Key")
    if key:
        return key.strip()
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return None


def client_address() -> str:
    """The address the request came from (the peer; a proxy in front sets it right)."""
    return request.remote_addr or "unknown"


def budget() -> str:
    """Which rate-limit budget a request spends: reads, execute or writes."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return "reads"
    rule = request.url_rule.rule if request.url_rule else request.path
    if rule.endswith(("/execute", "/retry", "/resume")) or rule == "/api/events":
        return "execute"
    return "writes"


_RUN_ENDINGS = ("/execute", "/pause", "/resume", "/cancel", "/retry")


def _check_workflow_permissions(db: Session, tenant: uuid.UUID, role: str) -> None:
    """Apply the workflow's ``metadata.permissions`` to a request about one workflow or one
    of its executions (view for reads, run for commands, edit for changes)."""
    args = request.view_args or {}
    workflow_id = args.get("workflow_id")
    if workflow_id is None and args.get("execution_id") is not None:
        workflow_id = permissions.workflow_of_execution(db, tenant, args["execution_id"])
    if not isinstance(workflow_id, uuid.UUID):
        return
    rule = request.url_rule.rule if request.url_rule else ""
    if request.method in ("GET", "HEAD"):
        kind = "view"
    elif rule.endswith(_RUN_ENDINGS):
        kind = "run"
    else:
        kind = "edit"
    try:
        permissions.check(db, tenant, workflow_id, kind, role)
    finally:
        db.rollback()


def require(role: Role) -> Callable:
    """Decorator: the view needs an API key of at least ``role``; sets the request's tenant
    and key, and spends the key's rate-limit budget."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            db = session()
            limits = state().limits
            limits.auth_blocked(client_address())
            try:
                record = authenticate(db, _key_from_request(), role)
            except Unauthorized:
                limits.auth_failed(client_address())
                raise
            g.tenant_id, g.role, g.key_id = record.tenant_id, record.role, record.id
            logs.update(tenant=str(record.tenant_id))
            db.rollback()  # end the read-only auth transaction before the view's own work
            g.rate_verdict = limits.check(budget(), str(record.id), str(record.tenant_id))
            guard.check_request(state().settings)
            _check_workflow_permissions(db, record.tenant_id, record.role)
            return view(*args, **kwargs)

        setattr(wrapper, guard.AUTHENTICATED, True)

        wrapper.__dict__.setdefault("_apidoc", {})
        wrapper._apidoc.setdefault("manual_doc", {}).setdefault(
            "security", [{"ApiKeyHeader": []}, {"BearerAuth": []}]
        )
        return wrapper

    return decorator


def page_of(db: Session, query: Select, pagination: Any) -> list[Any]:
    """One page of an ordered query; sets the total for flask-smorest's X-Pagination."""
    pagination.item_count = db.scalar(
        select(func.count()).select_from(query.order_by(None).subquery())
    )
    return list(db.scalars(query.offset(pagination.first_item).limit(pagination.page_size)))
