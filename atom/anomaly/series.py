"""A series as ``POST /api/anomaly/detect`` takes it, checked in one pass.

``[{timestamp, value}]``: a timestamp is epoch seconds (a number) or ISO 8601 text (without a
zone it is UTC); timestamps are in order (equal ones allowed); a ``null`` value is a gap. No
NumPy here: the API process parses, the ML pool scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from atom.errors import InvalidInput

MAX_POINTS = 25_000
"""The most points one call scores."""
MAX_PROBLEMS = 20
"""Problems listed one by one; past this many, the answer counts the rest."""


@dataclass(frozen=True)
class Series:
    """A checked series: epoch seconds and values (``None`` for a gap), point by point."""

    timestamps: list[float]
    values: list[float | None]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(value: Any) -> float | None:
    """``value`` as a finite float, or None (an integer past float's range included)."""
    if not _is_number(value):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def epoch_seconds(value: Any) -> float:
    """A timestamp as epoch seconds; ValueError saying why it is not one."""
    if _is_number(value):
        number = _finite(value)
        if number is None:
            raise ValueError("must be a finite number")
        return number
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
        except (ValueError, OverflowError):
            raise ValueError(f"is not ISO 8601 or epoch seconds: {value[:40]!r}") from None
    raise ValueError("must be ISO 8601 text or epoch seconds")


def _point(i: int, point: Any) -> tuple[float | None, float | None, list[tuple[str, str]]]:
    """One point's timestamp and value, and its problems as ``(where, what)``."""
    if not isinstance(point, dict):
        return None, None, [(f"series[{i}]", "must be an object {timestamp, value}")]
    problems = []
    unknown = set(point) - {"timestamp", "value"}
    if unknown:
        names = ", ".join(sorted(map(str, unknown)))
        problems.append((f"series[{i}]", f"unknown field(s): {names}"))
    timestamp = None
    if "timestamp" not in point:
        problems.append((f"series[{i}].timestamp", "is required"))
    else:
        try:
            timestamp = epoch_seconds(point["timestamp"])
        except ValueError as e:
            problems.append((f"series[{i}].timestamp", str(e)))
    value = _finite(point.get("value"))
    if "value" not in point:
        problems.append((f"series[{i}].value", "is required (null for a gap)"))
    elif point["value"] is not None and value is None:
        problems.append((f"series[{i}].value", "must be a finite number or null"))
    return timestamp, value, problems


def parse(series: Any) -> Series:
    """Check ``series``; InvalidInput naming every problem by point (the first
    ``MAX_PROBLEMS``), the first point out of order, or the size limit."""
    if not isinstance(series, list):
        raise InvalidInput({"series": ["must be a list of {timestamp, value} objects"]})
    if len(series) > MAX_POINTS:
        raise InvalidInput({"series": [f"has {len(series)} points; at most {MAX_POINTS} per call"]})
    found: list[tuple[str, str]] = []
    timestamps: list[float] = []
    values: list[float | None] = []
    for i, point in enumerate(series):
        timestamp, value, problems = _point(i, point)
        found += problems
        if timestamp is not None and not found:
            if timestamps and timestamp < timestamps[-1]:
                where = f"series[{i}].timestamp"
                found.append((where, f"is before point {i - 1}'s; timestamps must be in order"))
            timestamps.append(timestamp)
            values.append(value)
    if found:
        listed: dict[str, list[str]] = {}
        for where, what in found[:MAX_PROBLEMS]:
            listed.setdefault(where, []).append(what)
        if len(found) > MAX_PROBLEMS:
            listed.setdefault("series", []).append(f"... and {len(found) - MAX_PROBLEMS} more")
        raise InvalidInput(listed)
    return Series(timestamps, values)
