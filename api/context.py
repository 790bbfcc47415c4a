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
from atom.observe import logs
from atom.observe.probe import Probe
from atom.security.auth import Role, authenticate


@dataclass(frozen=True)
class AppState:
    """What every request of one app shares."""

    settings: Settings
    factory: sessionmaker[Session]
    celery: Celery
    probe: Probe
    metrics: Any
    """The prometheus_client registry ``/metrics`` renders."""


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


def require(role: Role) -> Callable:
    """Decorator: the view needs an API key of at least ``role``; sets the request's tenant."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            db = session()
            record = authenticate(db, _key_from_request(), role)
            g.tenant_id, g.role = record.tenant_id, record.role
            logs.update(tenant=str(record.tenant_id))
            db.rollback()  # end the read-only auth transaction before the view's own work
            guard.check_request(state().settings.webhook_max_bytes)
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
