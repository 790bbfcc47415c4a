"""User events for behaviour predictions: recorded from ``POST /api/events`` (no LightGBM)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from atom.clock import now
from atom.errors import InvalidInput
from atom.store.models import UserEvent

TIMEFRAME = re.compile(r"([0-9]{1,4})([mhd])")
MAX_TIMEFRAME = timedelta(days=30)
TIMEFRAME_PATTERN = (
    "^((0{0,3}[1-9]|0{0,2}[1-9][0-9]|0?[1-9][0-9]{2}|[1-9][0-9]{3})m"
    "|(0{0,3}[1-9]|0{0,2}[1-9][0-9]|0?[1-6][0-9]{2}|0?7[01][0-9]|0?720)h"
    "|(0{0,3}[1-9]|0{0,2}[12][0-9]|0{0,2}30)d)$"
)
"""``parse_timeframe``'s accepted texts as a regular expression (1m to 30d), for the document."""
MAX_EVENTS = 50_000
"""Most recent events of a tenant a prediction reads."""


def user_of(event: dict[str, Any]) -> str | None:
    """The user an event is about: ``user_id``/``userId`` beside ``type`` or in the payload."""
    payload = event.get("payload")
    candidates = [event.get("user_id"), event.get("userId")]
    if isinstance(payload, dict):
        candidates += [payload.get("user_id"), payload.get("userId")]
    for value in candidates:
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()[:200]
    return None


def record(
    db: Session, tenant_id: uuid.UUID, user_id: str, type_: str, at: datetime | None
) -> None:
    """Keep one user event (``at`` defaults to now; a time in the future is refused)."""
    moment = at or now()
    if moment > now() + timedelta(minutes=5):
        raise InvalidInput({"timestamp": ["must not be in the future"]})
    db.add(UserEvent(tenant_id=tenant_id, user_id=user_id, type=type_[:200], at=moment))
    db.flush()


def parse_timeframe(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d`` (at most 30 days); 422 otherwise."""
    match = TIMEFRAME.fullmatch(text or "")
    if not match:
        raise InvalidInput({"timeframe": ["must be a number and a unit m, h or d, e.g. 24h"]})
    amount, unit = int(match[1]), match[2]
    span = {"m": timedelta(minutes=amount), "h": timedelta(hours=amount)}.get(
        unit, timedelta(days=amount)
    )
    if not timedelta(minutes=1) <= span <= MAX_TIMEFRAME:
        raise InvalidInput({"timeframe": ["must be between 1m and 30d"]})
    return span


def tenant_events(db: Session, tenant_id: uuid.UUID) -> list[tuple[str, str, float]]:
    """The tenant's latest events as (user, type, epoch seconds), oldest first."""
    rows = db.execute(
        select(UserEvent.user_id, UserEvent.type, UserEvent.at)
        .where(UserEvent.tenant_id == tenant_id)
        .order_by(UserEvent.at.desc())
        .limit(MAX_EVENTS)
    ).all()
    return [(r.user_id, r.type, r.at.timestamp()) for r in reversed(rows)]
