"""Engine and session factory. The request or task that opens a session owns its commit:
``with factory.begin() as session`` commits when the block succeeds and rolls back when it
raises (SQLAlchemy's ``sessionmaker.begin``).

Work that must happen only once a change is durable (publishing a live event, counting a
finished step) is queued on the session with ``after_commit`` and runs right after the
commit; a rollback drops it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

_PENDING = "atom.after_commit"


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine that checks connections before use, so a restarted PostgreSQL heals."""
    return create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=10,
        pool_recycle=1800,
        future=True,
    )


def make_sessionmaker(engine: Engine, **info: Any) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit and run ``after_commit`` work.

    ``info`` lands in every session's ``Session.info`` (the events publisher, for one).
    """
    factory = sessionmaker(engine, expire_on_commit=False, info=info)
    event.listen(factory, "after_commit", _run_pending)
    event.listen(factory, "after_rollback", _drop_pending)
    return factory


def after_commit(session: Session, work: Callable[[], None]) -> None:
    """Run ``work`` once the session's current transaction has committed (never on rollback)."""
    session.info.setdefault(_PENDING, []).append(work)


def _run_pending(session: Session) -> None:
    pending = session.info.pop(_PENDING, None) or []
    for work in pending:
        try:
            work()
        except Exception:  # the commit stands; what follows it is best effort
            logger.exception("after-commit work failed")


def _drop_pending(session: Session) -> None:
    session.info.pop(_PENDING, None)
