"""A rule document checked and completed with defaults by a marshmallow schema; every problem
is listed, by field (a channel's problems under ``channels[i]``).

The same schema is the API's request body (``api/resources``), so the OpenAPI document says
exactly what the server accepts.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any
from urllib.parse import urlsplit

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from atom.alerts.spec import (
    CHANNEL_TYPES,
    COMPARISONS,
    MAX_CHANNELS,
    MAX_COOLDOWN,
    METRICS,
    SEVERITIES,
)
from atom.anomaly.validation import SeriesSelectorSchema, canonical_selector
from atom.errors import InvalidInput, PermanentError, flatten
from atom.observe.stats import WINDOW_RE, parse_window
from atom.security.netguard import REDACTED, parse

_EMAIL = re.compile(r"^[^@\s,;<>\"]+@[^@\s,;<>\"]+\.[^@\s,;<>\"]+$")
MAX_THRESHOLD = 1e15
MAX_RECIPIENTS = 20
ANOMALY_WINDOW = "1h"
"""An anomaly rule's default window: how recent an anomalous point must be to open an alert,
and how long a new level must hold before it counts as normal."""


class StrictBoolean(fields.Boolean):
    """true or false, not "yes" or 1."""

    def __init__(self, **kwargs: Any):
        super().__init__(truthy={True}, falsy={False}, **kwargs)


class JsonNumber(fields.Float):
    """A finite JSON number (not a numeric string, not a boolean)."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        if not math.isfinite(value) or abs(value) > MAX_THRESHOLD:
            raise ValidationError(f"a finite number up to {MAX_THRESHOLD:g} in size")
        return float(value)


def _parses(url: str) -> None:
    """urllib must be able to take the URL apart, port included (``h:99999`` cannot)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as e:
        raise ValidationError("must be an http(s) URL") from e
    if REDACTED in url:
        raise ValidationError("is a redacted one from an answer; send the full URL")
    try:  # what the outbound guard refuses before any lookup (userinfo, backslashes ...)
        parse(url, "url")
    except PermanentError as e:
        raise ValidationError(str(e)) from e


def _addresses(value: Any) -> None:
    addresses = value if isinstance(value, list) else [value]
    if (
        not addresses
        or len(addresses) > MAX_RECIPIENTS
        or not all(isinstance(a, str) and _EMAIL.match(a) for a in addresses)
    ):
        raise ValidationError(f"must be an email address, or a list of up to {MAX_RECIPIENTS}")
    for address in addresses:
        validate.Email(error="must be an email address")(address)


class UrlChannelSchema(Schema):
    """A webhook or Slack channel: ``{type, url}``."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(["webhook", "slack"]))
    url = fields.URL(
        required=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=[validate.Length(max=2000), _parses],
        error_messages={"invalid": "must be an http(s) URL"},
    )


class EmailChannelSchema(Schema):
    """An email channel: ``{type: email, to}``, one address or a list of up to 20."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.Equal("email"))
    to = fields.Raw(
        required=True,
        validate=_addresses,
        metadata={"description": "an address, or a list of up to 20"},
    )


class Channel(fields.Field):
    """One channel, checked by the schema its ``type`` names; its problems as one list."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dict[str, Any]:
        if not isinstance(value, dict) or value.get("type") not in CHANNEL_TYPES:
            raise ValidationError(f"type must be one of {', '.join(CHANNEL_TYPES)}")
        schema = EmailChannelSchema() if value["type"] == "email" else UrlChannelSchema()
        try:
            return schema.load(value)
        except ValidationError as e:
            problems = flatten(e.messages)
            raise ValidationError(
                [
                    f"{field} {m}" if field != "_schema" else m
                    for field, ms in problems.items()
                    for m in ms
                ]
            ) from e

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> Any:
        return value


def _window(value: str) -> None:
    try:
        parse_window(value)
    except ValueError as e:
        raise ValidationError(str(e)) from e


def _name(value: str) -> None:
    if not 1 <= len(value.strip()) <= 200:
        raise ValidationError("required: 1 to 200 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValidationError(
            "must not hold control characters (a newline would end an email's Subject header)"
        )


class AlertRuleInSchema(Schema):
    """An alert rule as a user writes it. Defaults: comparison ``>`` (``<`` for workers),
    window 5m (1h for anomaly), severity medium, cooldown 300 s, no channels, enabled."""

    class Meta:
        unknown = RAISE

    name = fields.String(
        required=True,
        validate=_name,
        metadata={"example": "Checkout failing", "minLength": 1, "maxLength": 200},
    )
    metric = fields.String(required=True, validate=validate.OneOf(list(METRICS)))
    comparison = fields.String(validate=validate.OneOf(list(COMPARISONS)))
    threshold = JsonNumber(
        metadata={
            "description": "error_rate is a fraction (0.1 = 10 %), anomaly a score in [0, 1]; "
            "required unless the metric has a default (performance_degradation 2, workers 1, "
            "anomaly 0.9)"
        }
    )
    window = fields.String(
        validate=_window,
        metadata={
            "description": "a number and s, m, h or d, 1s .. 30d; default 5m (1h for anomaly)",
            "pattern": WINDOW_RE.pattern,
        },
    )
    severity = fields.String(load_default="medium", validate=validate.OneOf(SEVERITIES))
    cooldown = fields.Integer(
        strict=True, load_default=300, validate=validate.Range(0, MAX_COOLDOWN)
    )
    channels = fields.List(
        Channel(
            metadata={
                "type": "object",
                "description": '{"type": "webhook"|"slack", "url": ...} or '
                '{"type": "email", "to": ...}',
            }
        ),
        load_default=list,
        validate=validate.Length(max=MAX_CHANNELS),
    )
    workflow_id = fields.UUID(
        load_default=None, allow_none=True, metadata={"description": "only this workflow's runs"}
    )
    enabled = StrictBoolean(load_default=True)
    series = fields.Nested(
        SeriesSelectorSchema,
        allow_none=True,
        metadata={
            "description": "metric anomaly only: which series to watch, {kind?, workflow_id?, "
            "name?, action_type?, queue?} (none: every series of your own)"
        },
    )

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _metric_rules(
        self, data: dict[str, Any], original: Any, partial: Any = None, **kwargs: Any
    ) -> None:
        """What depends on the metric: the threshold's default and range, the scope."""
        spec = METRICS.get(data.get("metric", ""))
        if spec is None or not isinstance(original, dict):
            return  # an unknown or (in a PATCH) absent metric: nothing to check against
        problems: dict[str, list[str]] = {}
        threshold = data.get("threshold", spec.threshold)
        if threshold is None and not partial and "threshold" not in original:
            problems["threshold"] = ["required for this metric"]
        elif threshold is not None and spec.fraction and not 0 <= threshold <= 1:
            problems["threshold"] = [
                "a score between 0 and 1"
                if data["metric"] == "anomaly"
                else "a fraction between 0 and 1 (0.1 is 10 %)"
            ]
        elif threshold is not None and threshold < 0:
            problems["threshold"] = ["zero or more"]
        if data.get("workflow_id") is not None and not spec.per_workflow:
            problems["workflow_id"] = [f"{data['metric']} is about the platform, not a workflow"]
        if data["metric"] == "anomaly":
            problems.update(_anomaly_problems(data))
        elif data.get("series") is not None:
            problems["series"] = ["only a rule with metric anomaly selects series"]
        if problems:
            raise ValidationError(problems)

    def handle_error(self, error: ValidationError, data: Any, **kwargs: Any) -> None:
        """Every problem, by field, in the API's 422 shape (not webargs' by location)."""
        raise InvalidInput(flatten(error.messages)) from error


def _anomaly_problems(data: dict[str, Any]) -> dict[str, list[str]]:
    """An anomaly rule's comparison is >= (the score reaches the threshold) and its
    ``workflow_id``, if any, agrees with its series selector."""
    problems: dict[str, list[str]] = {}
    if data.get("comparison", ">=") != ">=":
        problems["comparison"] = ["an anomaly rule compares the score with >="]
    selector = data.get("series") or {}
    ours, theirs = data.get("workflow_id"), selector.get("workflow_id")
    if ours is not None and theirs is not None and ours != theirs:
        problems["workflow_id"] = ["differs from series.workflow_id"]
    kind = selector.get("kind") or (
        "step_duration"
        if "action_type" in selector
        else "queue_depth"
        if "queue" in selector
        else None
    )
    if ours is not None and kind in ("queue_depth", "step_duration"):
        problems["workflow_id"] = [f"{kind} series are not about one workflow"]
    return problems


class AlertRuleChangesSchema(AlertRuleInSchema):
    """A PATCH of a rule: any of its fields; the merged rule is checked as a whole."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("partial", True)
        super().__init__(**kwargs)


def validate_rule(doc: Any) -> dict[str, Any]:
    """A rule document checked and completed with defaults; InvalidInput lists every problem."""
    fields_ = AlertRuleInSchema().load(doc)
    spec = METRICS[fields_["metric"]]
    fields_["name"] = fields_["name"].strip()
    default_window = ANOMALY_WINDOW if fields_["metric"] == "anomaly" else "5m"
    # Stored in its plain form ("5m"): whitespace inside would not fit the column.
    number, unit = WINDOW_RE.match(fields_.get("window", default_window)).groups()  # type: ignore[union-attr]
    fields_["window"] = f"{int(number)}{unit}"
    fields_.setdefault("comparison", spec.comparison)
    fields_["threshold"] = float(fields_.get("threshold", spec.threshold))
    if fields_["metric"] == "anomaly":
        selector = dict(fields_.get("series") or {})
        if fields_.get("workflow_id") and not selector.get("workflow_id"):
            selector["workflow_id"] = fields_["workflow_id"]
        fields_["series"] = canonical_selector(selector)
        wf = fields_["series"].get("workflow_id")
        fields_["workflow_id"] = uuid.UUID(wf) if wf else None
    else:
        fields_["series"] = None
    return fields_
