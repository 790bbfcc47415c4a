"""Per-app state (settings, sessions, Celery) and the per-request tenant and key."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from celery import Celery
from flask import current_app, g, request
from flask_smorest import abort
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, sessionmaker

from api import guard
from atom.config import Settings
from atom.errors import Unauthorized
from atom.observe import logs
from atom.observe.probe import Probe
from atom.security import audit, permissions
from atom.security.auth import REVOCATIONS_KEY, KeyCache, Role
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
    keys: KeyCache
    """API keys this process found valid recently (bounded; see ``KeyCache``)."""


# Seconds a client is told to wait when the step queue is full.
BACKLOG_RETRY_AFTER_S = 5


def refuse_when_saturated() -> None:
    """Backpressure on every route that starts runs (execute, webhooks, events): past
    ``ATOM_MAX_QUEUE_DEPTH`` step messages waiting in the broker, answer 429 with
    ``Retry-After`` and start nothing, so Redis holds a bounded number of messages under a
    flood. An unreachable broker is not saturation: runs are then accepted and sent later."""
    app_state = state()
    limit = app_state.settings.max_queue_depth
    backlog = app_state.probe.step_backlog() if limit else None
    if backlog is not None and backlog >= limit:
        abort(
            429,
            message=f"{backlog} steps are waiting for a worker (ATOM_MAX_QUEUE_DEPTH is "
            f"{limit}); nothing was started. Try again later.",
            headers={"Retry-After": str(BACKLOG_RETRY_AFTER_S)},
        )


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


def principal() -> permissions.Principal:
    """The request's key as ``metadata.permissions`` sees it (its role and id)."""
    return permissions.Principal(role=g.role, key_id=g.key_id)


def check_workflow(workflow_id: uuid.UUID | None, *kinds: str) -> None:
    """404 if the request's key may not view the workflow, 403 if it may not do one of
    ``kinds`` (run, edit) with it; for routes whose workflow comes in the body or through
    another object (a schedule, a session)."""
    db = session()
    try:
        permissions.check(db, tenant_id(), workflow_id, principal(), *kinds)
    finally:
        db.rollback()


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


def _check_workflow_permissions(db: Session, tenant: uuid.UUID, who: permissions.Principal) -> None:
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
        permissions.check(db, tenant, workflow_id, who, kind)
    finally:
        db.rollback()


def require(role: Role) -> Callable:
    """Decorator: the view needs an API key of at least ``role``; sets the request's tenant
    and key, and spends the key's rate-limit budget."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            db = session()
            app = state()
            limits = app.limits
            # One Redis round trip: the address's failed authentications, and the key
            # revocation counter that tells whether this process's key cache is current.
            revocations = limits.auth_blocked(client_address(), also=REVOCATIONS_KEY)
            try:
                record = app.keys.authenticate(db, _key_from_request(), role, revocations)
            except Unauthorized:
                limits.auth_failed(client_address())
                raise
            g.tenant_id, g.role, g.key_id = record.tenant_id, record.role, record.id
            logs.update(tenant=str(record.tenant_id))
            db.rollback()  # end the read-only auth transaction (if any) before the view's work
            g.rate_verdict = limits.check(budget(), str(record.id), str(record.tenant_id))
            guard.check_request(state().settings)
            _check_workflow_permissions(db, record.tenant_id, principal())
            return view(*args, **kwargs)

        setattr(wrapper, guard.AUTHENTICATED, True)

        wrapper.__dict__.setdefault("_apidoc", {})
        wrapper._apidoc.setdefault("manual_doc", {}).setdefault(
            "security", [{"ApiKeyHeader": []}, {"BearerAuth": []}]
        )
        return wrapper

    return decorator


def audit_with(db: Session, status: int, created_id: str | None = None) -> None:
    """Add this request's audit entry to the view's own transaction (one commit instead of a
    second one after the answer); ``api.app`` records it separately only if the answer's
    status turns out other than ``status``."""
    assert request.url_rule is not None
    action, target_type, target_id = audit.describe(
        request.method, request.url_rule.rule, request.view_args or {}, created_id
    )
    audit.record(
        db,
        tenant_id=g.tenant_id,
        key_id=g.key_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        client=client_address(),
        status=status,
    )
    g.audited = status


def page_of(db: Session, query: Select, pagination: Any) -> list[Any]:
    """One page of an ordered query; sets the total for flask-smorest's X-Pagination."""
    pagination.item_count = db.scalar(
        select(func.count()).select_from(query.order_by(None).subquery())
    )
    return list(db.scalars(query.offset(pagination.first_item).limit(pagination.page_size)))
