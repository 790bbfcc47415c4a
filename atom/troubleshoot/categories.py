"""The failure categories of the troubleshooting contract, and which of them are transient."""

from __future__ import annotations

from enum import Enum


class Category(str, Enum):
    """Why a step (or a line of a user's log) failed; API.md "Troubleshooting"."""

    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"
    UPSTREAM_5XX = "upstream_5xx"
    CONNECTION = "connection"
    AUTH = "auth"
    NOT_FOUND = "not_found"
    BAD_REQUEST = "bad_request"
    DATA_SHAPE = "data_shape"
    WORKER_LOST = "worker_lost"
    DATABASE = "database"
    VERSION_REGRESSION = "version_regression"
    UNKNOWN = "unknown"


TRANSIENT = frozenset(
    {
        Category.TIMEOUT,
        Category.RATE_LIMITED,
        Category.UPSTREAM_5XX,
        Category.CONNECTION,
        Category.WORKER_LOST,
        Category.DATABASE,
    }
)
"""Causes that go away by themselves: a retry with an adjusted policy may resolve them.
Everything else is permanent: retrying it unchanged fails the same way."""
