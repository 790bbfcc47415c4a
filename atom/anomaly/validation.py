"""What a recorded metric point and an anomaly rule's series selector may say, checked by
marshmallow schemas (also the API's request bodies), every problem listed by field."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from atom.errors import InvalidInput, flatten

KINDS = ("workflow_duration", "workflow_error_rate", "queue_depth", "step_duration", "custom")
"""Series kinds: a workflow's run durations (ms) and error rate (failed / finished per
bucket), a broker queue's depth (the platform's), an action type's step durations (ms), and
the custom metrics a tenant records."""
PLATFORM_KINDS = ("queue_depth",)
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,199}$")
MAX_VALUE = 1e15
MAX_FUTURE = timedelta(minutes=5)
"""How far ahead of the server's clock a point's timestamp may be (clock skew)."""
MAX_BATCH = 1000
_EPOCH = re.compile(r"^\s*\d{1,11}(\.\d{1,9})?\s*$")


class FiniteNumber(fields.Float):
    """A finite JSON number (not a numeric string, not a boolean), at most 1e15 in size."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationError("must be a number")
        if not math.isfinite(value) or abs(value) > MAX_VALUE:
            raise ValidationError(f"must be a finite number up to {MAX_VALUE:g} in size")
        return float(value)


class Timestamp(fields.Field):
    """ISO 8601 (no zone: UTC) or epoch seconds, as an aware UTC datetime."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> datetime:
        if isinstance(value, bool):
            raise ValidationError("must be ISO 8601 or epoch seconds")
        if isinstance(value, int | float):
            if not math.isfinite(value) or not 0 <= value < 1e11:
                raise ValidationError("epoch seconds must be a finite number from 0")
            return datetime.fromtimestamp(value, UTC)
        if not isinstance(value, str) or len(value) > 64:
            raise ValidationError("must be ISO 8601 or epoch seconds")
        if _EPOCH.match(value):  # a query string's epoch seconds
            return self._deserialize(float(value), attr, data, **kwargs)
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        except (ValueError, OverflowError):
            raise ValidationError("must be ISO 8601 or epoch seconds") from None

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> Any:
        return value.isoformat() if isinstance(value, datetime) else value


def _no_controls(value: str) -> None:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError("must not hold control characters")


class _Problems:
    """Every problem, by field, in the API's 422 shape (not webargs' by location)."""

    def handle_error(self, error: ValidationError, data: Any, **kwargs: Any) -> None:
        """Raise the problems as InvalidInput."""
        raise InvalidInput(flatten(error.messages)) from error


class MetricPointFields(Schema):
    """One custom metric point: ``{name, value, unit?, workflow_id?, timestamp?}``."""

    class Meta:
        unknown = RAISE

    name = fields.String(
        required=True,
        validate=validate.Regexp(
            NAME_RE,
            error="1 to 200 characters: a letter or _ first, then letters, digits, _ . : / or -",
        ),
        metadata={"example": "orders.processed", "pattern": NAME_RE.pattern},
    )
    value = FiniteNumber(
        required=True,
        metadata={"description": "a finite number", "minimum": -MAX_VALUE, "maximum": MAX_VALUE},
    )
    unit = fields.String(
        load_default="",
        validate=[validate.Length(max=32), _no_controls],
        metadata={"example": "ms"},
    )
    workflow_id = fields.UUID(
        load_default=None, allow_none=True, metadata={"description": "a workflow of yours"}
    )
    timestamp = Timestamp(
        load_default=None,
        allow_none=True,
        metadata={
            "description": "ISO 8601 or epoch seconds; default now; at most 5 minutes ahead",
            "oneOf": [{"type": "string"}, {"type": "number"}],
        },
    )

    @validates_schema(skip_on_field_errors=True)
    def _not_in_the_future(self, data: dict[str, Any], **kwargs: Any) -> None:
        at = data.get("timestamp")
        if at is not None and at > datetime.now(UTC) + MAX_FUTURE:
            raise ValidationError(
                {"timestamp": ["is more than 5 minutes ahead of the server's clock"]}
            )


class MetricPointInSchema(_Problems, MetricPointFields):
    """One custom metric point, as the API takes it."""


class MetricBatchInSchema(_Problems, Schema):
    """Up to 1000 points at once: ``{points: [...]}``."""

    class Meta:
        unknown = RAISE

    points = fields.List(
        fields.Nested(MetricPointFields),
        required=True,
        validate=validate.Length(1, MAX_BATCH),
    )


class SeriesSelectorSchema(Schema):
    """Which series an ``anomaly`` rule watches: ``{kind?, workflow_id?, name?, action_type?,
    queue?}``. No kind: every series of the tenant's own (not the platform's queues);
    ``action_type`` means kind step_duration, ``queue`` kind queue_depth."""

    class Meta:
        unknown = RAISE

    kind = fields.String(validate=validate.OneOf(KINDS))
    workflow_id = fields.UUID(allow_none=True)
    name = fields.String(validate=validate.Regexp(NAME_RE, error="not a metric name"))
    action_type = fields.String(validate=validate.Length(1, 64))
    queue = fields.String(validate=[validate.Length(1, 200), _no_controls])

    @validates_schema(skip_on_field_errors=True)
    def _consistent(self, data: dict[str, Any], **kwargs: Any) -> None:
        problems: dict[str, list[str]] = {}
        implied = {"action_type": "step_duration", "queue": "queue_depth"}
        named = [k for k in ("name", "action_type", "queue") if k in data]
        if len(named) > 1:
            problems[named[1]] = [f"give one of name, action_type, queue (not {named[0]} too)"]
        kind = data.get("kind")
        for key, wanted in implied.items():
            if key in data and kind not in (None, wanted):
                problems[key] = [f"selects kind {wanted}, not {kind}"]
        kind = kind or next((implied[k] for k in implied if k in data), None)
        if data.get("workflow_id") and kind in ("queue_depth", "step_duration"):
            problems["workflow_id"] = [f"{kind} series are not about one workflow"]
        if "name" in data and kind in ("workflow_duration", "workflow_error_rate"):
            problems["name"] = [f"{kind} series have no name; select them by workflow_id"]
        if problems:
            raise ValidationError(problems)


def canonical_selector(data: dict[str, Any]) -> dict[str, Any]:
    """A checked selector as stored: ``{kind?, workflow_id?, name?}`` (ids as strings)."""
    kind = data.get("kind")
    name = data.get("name")
    if "action_type" in data:
        kind, name = "step_duration", data["action_type"]
    if "queue" in data:
        kind, name = "queue_depth", data["queue"]
    out: dict[str, Any] = {}
    if kind:
        out["kind"] = kind
    if data.get("workflow_id"):
        out["workflow_id"] = str(data["workflow_id"])
    if name:
        out["name"] = name
    return out
