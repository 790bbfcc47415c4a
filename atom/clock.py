"""The clock: one place that says what time it is (timezone-aware UTC).

Two clocks, on purpose. :func:`now` is this process's own clock, for times nobody compares
with another process's (an API key's ``last_used_at``, a log line). :func:`db_now` is
PostgreSQL's, for every time that another process compares or subtracts: a step's start and
end, heartbeats, ``retry_at``, the reconciler's ages, when a schedule may fire. A worker or
beat whose clock is off (30 s, say) then writes no negative duration and fires nothing
early: only the database server's clock decides (docs/operations.md, "Clock skew").
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

DB_CLOCK = func.clock_timestamp
"""The database's wall clock as a SQL expression, for values written in an UPDATE."""


def now() -> datetime:
    """This process's current time, timezone-aware UTC (not for times other processes
    compare: see :func:`db_now`)."""
    return datetime.now(UTC)


def db_now(session: Session) -> datetime:
    """PostgreSQL's current time (``clock_timestamp()``: the real time of the call, not the
    start of the transaction), timezone-aware UTC."""
    return session.execute(select(DB_CLOCK())).scalar_one().astimezone(UTC)
