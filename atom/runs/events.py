"""Live events: every execution and step transition, published on Redis pub/sub.

The engine and the lifecycle functions call ``emit`` as they change a state; the event is
published once the transaction has committed (a rolled-back change is never announced), on
one channel per execution. Publishing is best effort: PostgreSQL stays the record, and
``follow`` re-reads it whenever the channel is quiet, so a lost event delays a follower but
never strands it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from atom.statuses import TERMINAL_EXECUTION
from atom.store.db import after_commit

logger = logging.getLogger(__name__)

PUBLISHER = "atom.events"
"""The key of the publisher in ``Session.info`` (see ``atom.db.make_sessionmaker``)."""
CHANNEL_PREFIX = "atom:events:execution:"
TERMINAL = TERMINAL_EXECUTION


def channel(execution_id: uuid.UUID | str) -> str:
    """The pub/sub channel of one execution."""
    return f"{CHANNEL_PREFIX}{execution_id}"


class Publisher:
    """Publishes events to Redis; a Redis failure is logged, never raised."""

    def __init__(self, redis_url: str):
        import redis  # loaded by the processes that publish, not by importing the core

        self._client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._warned_at = 0.0

    def publish(self, event: dict[str, Any]) -> None:
        """Publish ``event`` on its execution's channel."""
        import redis

        try:
            self._client.publish(channel(event["execution_id"]), json.dumps(event, default=str))
        except redis.RedisError as e:
            if time.monotonic() - self._warned_at > 60:  # at most one warning a minute
                self._warned_at = time.monotonic()
                logger.warning("could not publish a live event: %s", e)

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def emit(session: Session, event: dict[str, Any]) -> None:
    """Publish ``event`` once the session's transaction commits (if it has a publisher)."""
    publisher = session.info.get(PUBLISHER)
    if publisher is not None:
        after_commit(session, lambda: publisher.publish(event))


def step_event(
    execution_id: uuid.UUID,
    node_id: str,
    status: str,
    *,
    attempts: int,
    action_type: str | None = None,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    error: Any = None,
) -> dict[str, Any]:
    """The event of a step changing state."""
    duration = None
    if started_at and finished_at:
        duration = int((finished_at - started_at).total_seconds() * 1000)
    return {
        "type": "step",
        "execution_id": str(execution_id),
        "node_id": node_id,
        "status": status,
        "attempts": attempts,
        "action_type": action_type,
        "started_at": _iso(started_at),
        "finished_at": _iso(finished_at),
        "duration_ms": duration,
        "error": error,
        "at": time.time(),
    }


def execution_event(
    execution_id: uuid.UUID, status: str, *, epoch: int | None = None, error: Any = None
) -> dict[str, Any]:
    """The event of an execution changing state."""
    return {
        "type": "execution",
        "execution_id": str(execution_id),
        "status": status,
        "epoch": epoch,
        "error": error,
        "at": time.time(),
    }


Snapshot = Callable[[Session], dict[str, Any]]


def follow(
    factory: sessionmaker[Session],
    redis_url: str,
    execution_id: uuid.UUID,
    snapshot: Snapshot,
    *,
    quiet_seconds: float = 15.0,
) -> Iterator[tuple[str, dict[str, Any]] | None]:
    """Yield an execution's events until it ends: ``(name, data)``, or None while quiet.

    First ``("snapshot", view)`` (taken after subscribing, so nothing falls in between; an
    event may repeat what the snapshot shows), then each ``("step"|"execution", event)`` as
    it is published, and last ``("end", view)`` once the execution is terminal. Whenever the
    channel stays quiet for ``quiet_seconds`` the record is read again (an event may have
    been lost) and None is yielded, so a caller can send a keep-alive.
    """
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(channel(execution_id))

        def read() -> dict[str, Any]:
            with factory() as session:
                return snapshot(session)

        view = read()
        yield "snapshot", view
        if view["status"] in TERMINAL:
            yield "end", view
            return
        quiet_since = time.monotonic()
        while True:
            message = pubsub.get_message(timeout=quiet_seconds)
            if message is None or message.get("type") != "message":
                if time.monotonic() - quiet_since < quiet_seconds:
                    continue
                quiet_since = time.monotonic()
                view = read()
                if view["status"] in TERMINAL:
                    yield "end", view
                    return
                yield None
                continue
            quiet_since = time.monotonic()
            try:
                event = json.loads(message["data"])
            except ValueError:
                continue
            yield event["type"], event
            if event["type"] == "execution" and event["status"] in TERMINAL:
                yield "end", read()
                return
    finally:
        pubsub.close()
        client.close()
