"""Schedules of a tenant: create, list, get, change (validated, every problem listed), and
how the API shows schedules and their fires."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from atom import clock
from atom.errors import InvalidInput, NotFound, Problem
from atom.schedules.timing import describe, timing_of
from atom.schedules.validation import check_merged
from atom.store import workflows
from atom.store.models import Schedule, ScheduleFire

logger = logging.getLogger(__name__)

FIELDS = (
    "cron",
    "interval_seconds",
    "timezone",
    "input",
    "enabled",
    "overlap",
    "catchup",
    "max_catchup",
)


def create_schedule(session: Session, tenant_id: uuid.UUID, values: dict[str, Any]) -> Schedule:
    """Validate and store a schedule (its RedBeat entry is the caller's next step)."""
    problems = check_merged(values)
    try:
        workflows.get_workflow(session, tenant_id, values["workflow_id"])
    except NotFound:
        problems.append(Problem("workflow_id", f"no workflow {values['workflow_id']} here"))
    if problems:
        raise InvalidInput(problems)
    stamp = clock.now()
    schedule = Schedule(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        workflow_id=values["workflow_id"],
        anchor=stamp.replace(microsecond=0),
        checked_until=stamp,
        **{k: values[k] for k in FIELDS if k in values},
    )
    session.add(schedule)
    session.flush()
    return schedule


def list_query(tenant_id: uuid.UUID, workflow_id: uuid.UUID | None = None) -> Select:
    """The tenant's schedules, newest first."""
    query = select(Schedule).where(Schedule.tenant_id == tenant_id)
    if workflow_id:
        query = query.where(Schedule.workflow_id == workflow_id)
    return query.order_by(Schedule.created_at.desc(), Schedule.id)


def get_schedule(
    session: Session, tenant_id: uuid.UUID, schedule_id: uuid.UUID, *, for_update: bool = False
) -> Schedule:
    """The tenant's schedule, or NotFound."""
    query = select(Schedule).where(Schedule.id == schedule_id, Schedule.tenant_id == tenant_id)
    schedule = session.scalar(query.with_for_update() if for_update else query)
    if schedule is None:
        raise NotFound(f"schedule {schedule_id} not found")
    return schedule


def update_schedule(
    session: Session, tenant_id: uuid.UUID, schedule_id: uuid.UUID, changes: dict[str, Any]
) -> Schedule:
    """Apply a PATCH; a change of timing or a re-enable starts counting from now."""
    schedule = get_schedule(session, tenant_id, schedule_id, for_update=True)
    merged = {k: getattr(schedule, k) for k in FIELDS}
    if "cron" in changes and changes["cron"] is not None:
        merged["interval_seconds"] = None
    if "interval_seconds" in changes and changes["interval_seconds"] is not None:
        merged["cron"] = None
    merged.update(changes)
    if problems := check_merged(merged):
        raise InvalidInput(problems)
    timing_changed = any(
        merged[k] != getattr(schedule, k) for k in ("cron", "interval_seconds", "timezone")
    )
    re_enabled = merged["enabled"] and not schedule.enabled
    for key in FIELDS:
        setattr(schedule, key, merged[key])
    stamp = clock.now()
    if timing_changed or re_enabled:
        schedule.checked_until = max(stamp, schedule.checked_until)
        if timing_changed:
            schedule.anchor = stamp.replace(microsecond=0)
    schedule.updated_at = stamp
    session.flush()
    return schedule


def fires_query(schedule: Schedule) -> Select:
    """The schedule's fires, newest first."""
    return (
        select(ScheduleFire)
        .where(
            ScheduleFire.schedule_id == schedule.id, ScheduleFire.tenant_id == schedule.tenant_id
        )
        .order_by(ScheduleFire.fire_time.desc())
    )


def schedule_view(schedule: Schedule, now: datetime | None = None) -> dict[str, Any]:
    """A schedule as the API shows it, with its description and next five fire times (in its
    timezone); values stay Python values, the API's schema dumps them."""
    timing = timing_of(schedule)
    upcoming = timing.next_runs(now or clock.now()) if schedule.enabled else []
    zone = ZoneInfo(schedule.timezone)
    return {
        "id": schedule.id,
        "workflow_id": schedule.workflow_id,
        "cron": schedule.cron,
        "interval_seconds": schedule.interval_seconds,
        "timezone": schedule.timezone,
        "input": schedule.input,
        "enabled": schedule.enabled,
        "overlap": schedule.overlap,
        "catchup": schedule.catchup,
        "max_catchup": schedule.max_catchup,
        "description": describe(schedule.cron, schedule.interval_seconds, schedule.timezone),
        "next_runs": [slot.astimezone(zone) for slot in upcoming],
        "created_at": schedule.created_at,
        "updated_at": schedule.updated_at,
    }


def fire_view(fire: ScheduleFire) -> dict[str, Any]:
    """A fire as the API shows it."""
    return {
        "fire_time": fire.fire_time,
        "status": fire.status,
        "reason": fire.reason,
        "source": fire.source,
        "execution_id": fire.execution_id,
        "recorded_at": fire.created_at,
    }
