"""Every status the platform stores, as typed enums; the terminal sets are defined here once.

Members are ``StrEnum`` (a ``str, Enum``): they compare equal to, hash like and format as the
strings stored in the database and sent over the API, so a status read from a row, a JSON
document or a Celery message can be compared with a member directly. No dependencies: the
HTTP client and the CLI use these as well.
"""

from __future__ import annotations

from enum import StrEnum


class ExecutionStatus(StrEnum):
    """The state of a run: queued -> running -> succeeded | failed | cancelled (or paused)."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    """The state of one step: pending -> running -> succeeded | failed | skipped | cancelled."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class FireStatus(StrEnum):
    """What became of one fire time of a schedule."""

    PENDING = "pending"
    STARTED = "started"
    SKIPPED = "skipped"
    MISSED = "missed"
    FAILED = "failed"


class AlertStatus(StrEnum):
    """An alert fires, then resolves."""

    FIRING = "firing"
    RESOLVED = "resolved"


class SessionStatus(StrEnum):
    """A troubleshooting session: open while ATOM works on it, then resolved or not."""

    OPEN = "open"
    RESOLVED = "resolved"
    NEEDS_ATTENTION = "needs_attention"


TERMINAL_EXECUTION: frozenset[ExecutionStatus] = frozenset(
    {ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)
"""A run in one of these states never changes again (except by an explicit retry)."""

ACTIVE_EXECUTION: frozenset[ExecutionStatus] = frozenset(
    {ExecutionStatus.QUEUED, ExecutionStatus.RUNNING, ExecutionStatus.PAUSED}
)
"""The states of a run that has not finished."""

TERMINAL_STEP: frozenset[StepStatus] = frozenset(
    {StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED}
)
"""A step in one of these states is done."""


def values(enum: type[StrEnum]) -> list[str]:
    """The stored strings of an enum, in declaration order (``sa.Enum(values_callable=...)``)."""
    return [member.value for member in enum]
