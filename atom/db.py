"""Engine and session factory. The request or task that opens a session owns its commit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine that checks connections before use, so a restarted PostgreSQL heals."""
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=10,
                         pool_recycle=1800, future=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    with factory() as session, session.begin():
        yield session
