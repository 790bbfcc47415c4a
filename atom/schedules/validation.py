"""A schedule document checked by a marshmallow schema; every problem is listed, by field.

The same schemas are the API's request bodies (``api/schedules.py``), so the OpenAPI document
says what the server accepts. What a JSON Schema cannot say (that a cron expression is valid
and fires at all, that a zone name is in the IANA database) is checked by the field validators
here and stated in the fields' descriptions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, croniter
from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from atom.errors import InvalidInput, Problem, flatten

OVERLAP = ("skip", "allow")
MAX_CRON_LENGTH = 120
MAX_INTERVAL = 366 * 86400
MAX_CATCHUP = 1000

FIVE_FIELDS = (
    "must have 5 fields: minute hour day-of-month month day-of-week, e.g. '*/15 9-17 * * 1-5'"
)
EXACTLY_ONE = "give exactly one of cron and interval_seconds"
INTERVAL = f"must be a whole number of seconds from 1 to {MAX_INTERVAL}"
ZONE = "must be an IANA time zone name such as 'Europe/Berlin'"
OVERLAP_PROBLEM = "must be skip or allow"
CATCHUP = f"must be a whole number from 0 to {MAX_CATCHUP}"

CRON_PATTERN = r"^\s*\S+(\s+\S+){4}\s*$"
"""Five whitespace-separated fields: the part of the cron check a JSON Schema can state."""


def _cron(value: str) -> None:
    if len(value) > MAX_CRON_LENGTH:
        return  # the Length validator says so
    if len(value.split()) != 5:
        raise ValidationError(FIVE_FIELDS)
    if not croniter.is_valid(value):
        raise ValidationError(
            f"{value!r} is not a valid cron expression (a field is out of range or malformed)"
        )
    try:
        croniter(value, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except CroniterBadDateError:
        raise ValidationError(
            f"{value!r} never fires (no such date, such as 30 February)"
        ) from None


def _zone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"{value!r} is not an IANA time zone name (such as 'UTC' or 'America/New_York')"
        ) from None


class ScheduleTimingSchema(Schema):
    """When a schedule fires: exactly one of ``cron`` and ``interval_seconds``, in a zone."""

    class Meta:
        unknown = INCLUDE

    cron = fields.String(
        allow_none=True,
        validate=[validate.Length(max=MAX_CRON_LENGTH, error=FIVE_FIELDS), _cron],
        error_messages={"invalid": FIVE_FIELDS},
        metadata={
            "description": "5 fields, e.g. '0 9 * * 1-5' (validated by croniter: each field "
            "in range, and the expression must fire at least once)",
            "pattern": CRON_PATTERN,
            "example": "0 9 * * 1-5",
        },
    )
    interval_seconds = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(1, MAX_INTERVAL, error=INTERVAL),
        error_messages={"invalid": INTERVAL},
        metadata={"description": "instead of cron; 1 s or more"},
    )
    timezone = fields.String(
        load_default="UTC",
        validate=_zone,
        error_messages={"invalid": ZONE, "null": ZONE},
        metadata={"description": "IANA name (checked against the IANA database)"},
    )

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _exactly_one(
        self, data: dict[str, Any], original: Any, partial: Any = None, **kwargs: Any
    ) -> None:
        if partial or not isinstance(original, dict):
            return  # a PATCH: the merged schedule is checked by the core (``crud``)
        if (original.get("cron") is None) == (original.get("interval_seconds") is None):
            raise ValidationError({"cron": [EXACTLY_ONE]})

    def handle_error(self, error: ValidationError, data: Any, **kwargs: Any) -> None:
        """Every problem, by field, in the API's 422 shape (not webargs' by location)."""
        raise InvalidInput(flatten(error.messages)) from error


class ScheduleInSchema(ScheduleTimingSchema):
    """A schedule to create; everything but workflow_id and cron or interval is optional."""

    workflow_id = fields.UUID(required=True)
    input = fields.Raw(load_default=dict, metadata={"description": "the runs' input"})
    enabled = fields.Boolean(load_default=True)
    overlap = fields.String(
        load_default="skip",
        validate=validate.OneOf(OVERLAP, error=OVERLAP_PROBLEM),
        error_messages={"invalid": OVERLAP_PROBLEM, "null": OVERLAP_PROBLEM},
    )
    catchup = fields.Boolean(load_default=False)
    max_catchup = fields.Integer(
        strict=True,
        load_default=10,
        validate=validate.Range(0, MAX_CATCHUP, error=CATCHUP),
        error_messages={"invalid": CATCHUP, "null": CATCHUP},
    )


class SchedulePatchSchema(ScheduleInSchema):
    """Fields to change; the merged schedule must still have exactly one of cron and interval."""

    class Meta:
        unknown = RAISE
        exclude = ("workflow_id",)

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("partial", True)
        super().__init__(**kwargs)


def check_timing(cron: Any, interval_seconds: Any, timezone: Any) -> list[Problem]:
    """Every problem with a schedule's timing fields (the schema's answer, as problems)."""
    try:
        ScheduleTimingSchema().load(
            {"cron": cron, "interval_seconds": interval_seconds, "timezone": timezone}
        )
    except InvalidInput as e:
        return e.problems
    return []


def check_merged(values: dict[str, Any]) -> list[Problem]:
    """A whole schedule (a stored one with a PATCH applied): every problem."""
    try:
        ScheduleInSchema(exclude=("workflow_id",)).load(
            {k: v for k, v in values.items() if k != "workflow_id"}
        )
    except InvalidInput as e:
        return e.problems
    return []
