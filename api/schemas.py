"""Marshmallow schemas: the OpenAPI description of requests and answers.

Workflow definitions are validated by ``atom.definition`` (every problem at once), so their
request schema accepts any JSON and only documents the shape.
"""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

# Request bodies checked by the core's own schemas: one source for the server and the document.
from atom.alerts.validation import AlertRuleChangesSchema as AlertRuleChangesSchema
from atom.alerts.validation import AlertRuleInSchema as AlertRuleInSchema
from atom.anomaly.validation import KINDS, Timestamp
from atom.anomaly.validation import MetricBatchInSchema as MetricBatchInSchema
from atom.anomaly.validation import MetricPointInSchema as MetricPointInSchema
from atom.observe.stats import WINDOW_RE
from atom.statuses import AlertStatus, ExecutionStatus, values

EXECUTION_STATUSES = values(ExecutionStatus)


class DefinitionSchema(Schema):
    """A workflow definition: name, description, nodes, connections (see README)."""

    class Meta:
        unknown = INCLUDE

    name = fields.Raw(metadata={"description": "Workflow name", "example": "Onboarding"})
    description = fields.Raw(metadata={"description": "What it does"})
    on_failure = fields.Raw(metadata={"description": "fail_fast (default) or continue"})
    nodes = fields.Raw(
        metadata={
            "description": "List of {id, type, name, config, retry, timeout, trigger_rule, queue}"
        }
    )
    connections = fields.Raw(metadata={"description": "List of {source, target, when, ordered}"})


class WorkflowSchema(Schema):
    """A stored workflow with its current definition."""

    id = fields.UUID()
    name = fields.String()
    description = fields.String()
    version = fields.Integer()
    trigger_kind = fields.String()
    event_type = fields.String(allow_none=True)
    definition = fields.Dict(allow_none=True)
    created_at = fields.String()
    updated_at = fields.String()


class WorkflowListArgs(Schema):
    """Filters for the workflow list."""

    name = fields.String(metadata={"description": "Part of the name, case-insensitive"})


class ValidationResultSchema(Schema):
    """A definition that validated, with its compiled plan."""

    valid = fields.Boolean()
    plan = fields.Dict()


class PlanSchema(Schema):
    """A compiled plan: a chain/chord/step tree and the barriers the compiler added."""

    workflow_id = fields.UUID()
    version = fields.Integer()
    canvas = fields.Dict()
    barriers_added = fields.List(fields.Dict())
    series_parallel = fields.Boolean()
    steps = fields.Integer()


class ExecuteSchema(Schema):
    """What to run a workflow with."""

    input = fields.Dict(load_default=dict, metadata={"description": "Seen by templates as input"})


class StepSchema(Schema):
    """One step of an execution."""

    node_id = fields.String()
    name = fields.String()
    action_type = fields.String(allow_none=True)
    status = fields.String()
    attempts = fields.Integer()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    duration_ms = fields.Integer(allow_none=True)
    input = fields.Raw(allow_none=True)
    output = fields.Raw(allow_none=True)
    error = fields.Raw(allow_none=True)


class ExecutionMetricsSchema(Schema):
    """Counts and timing of one execution."""

    execution_time_ms = fields.Integer(allow_none=True)
    steps_total = fields.Integer()
    steps_succeeded = fields.Integer()
    steps_failed = fields.Integer()
    steps_skipped = fields.Integer()
    steps_cancelled = fields.Integer()


class ExecutionSchema(Schema):
    """The state of a run and (on GET of one) of every step."""

    id = fields.UUID()
    workflow_id = fields.UUID()
    workflow_version = fields.Integer()
    status = fields.String(validate=validate.OneOf(EXECUTION_STATUSES))
    input = fields.Raw(allow_none=True)
    output = fields.Raw(allow_none=True)
    error = fields.Raw(allow_none=True)
    trigger = fields.Raw(allow_none=True)
    created_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    troubleshooting_session_id = fields.UUID(allow_none=True)
    metrics = fields.Nested(ExecutionMetricsSchema)
    steps = fields.List(fields.Nested(StepSchema))


class ExecutionListArgs(Schema):
    """Filters for the execution list."""

    workflow_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(EXECUTION_STATUSES))


# ---------------------------------------------------------------------------------------------
# Monitoring


WINDOW_PATTERN = WINDOW_RE.pattern


def _window(value: str) -> None:
    from marshmallow import ValidationError

    from atom.observe.stats import parse_window

    try:
        parse_window(value)
    except ValueError as e:
        raise ValidationError(str(e)) from e


class WindowArgs(Schema):
    """The period statistics cover: a number and s, m, h or d (1s .. 30d)."""

    window = fields.String(
        load_default="1h",
        validate=_window,
        metadata={
            "description": "like 5m, 1h, 7d (1s .. 30d)",
            "example": "1h",
            "pattern": WINDOW_PATTERN,
        },
    )


class WorkflowHealthArgs(Schema):
    """The period a workflow's health covers."""

    window = fields.String(
        load_default="24h",
        validate=_window,
        metadata={
            "description": "like 1h, 24h, 7d (1s .. 30d)",
            "example": "24h",
            "pattern": WINDOW_PATTERN,
        },
    )


class HealthSchema(Schema):
    """The platform's health: ok, degraded (no worker or no beat) or down (503)."""

    status = fields.String(validate=validate.OneOf(["ok", "degraded", "down"]))
    components = fields.Dict(
        metadata={
            "description": "database, broker, workers {count}, beat {status, last_seen, age_s}"
        }
    )


class MonitoringMetricsSchema(Schema):
    """The tenant's run statistics over a window (see README 'Monitoring')."""

    class Meta:
        ordered = True

    window = fields.String()
    window_seconds = fields.Integer()
    from_ = fields.String(data_key="from")
    to = fields.String()
    executions = fields.Dict(
        metadata={"description": "total, by_status (runs created in the window)"}
    )
    finished = fields.Dict(
        metadata={"description": "succeeded, failed, cancelled (runs that finished in the window)"}
    )
    success_rate = fields.Float(allow_none=True)
    duration_ms = fields.Dict(metadata={"description": "p50, p95, p99 of finished runs"})
    workflows = fields.List(fields.Dict())
    workflows_truncated = fields.Boolean()
    queues = fields.Dict(metadata={"description": "messages waiting, by queue"})
    workers = fields.Dict(metadata={"description": "count of workers answering a ping"})


class AlertRuleSchema(Schema):
    """An alert rule (channel URLs redacted)."""

    id = fields.UUID()
    name = fields.String()
    metric = fields.String()
    comparison = fields.String()
    threshold = fields.Float()
    window = fields.String()
    severity = fields.String()
    cooldown = fields.Integer()
    channels = fields.List(fields.Dict())
    workflow_id = fields.UUID(allow_none=True)
    enabled = fields.Boolean()
    series = fields.Dict(
        allow_none=True, metadata={"description": "anomaly rules: {kind?, workflow_id?, name?}"}
    )
    builtin = fields.String(allow_none=True)
    created_at = fields.DateTime(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)
    last_evaluated_at = fields.DateTime(allow_none=True)


class AlertSchema(Schema):
    """One firing (or resolved) alert."""

    id = fields.UUID()
    rule_id = fields.UUID()
    rule = fields.String()
    metric = fields.String()
    comparison = fields.String()
    window = fields.String()
    status = fields.String(validate=validate.OneOf(values(AlertStatus)))
    severity = fields.String()
    subject = fields.String()
    workflow_id = fields.UUID(allow_none=True)
    value = fields.Float(allow_none=True)
    last_value = fields.Float(allow_none=True)
    threshold = fields.Float()
    message = fields.String()
    notified = fields.Boolean()
    notifications = fields.List(fields.Dict())
    fired_at = fields.DateTime(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True)
    anomaly = fields.Dict(
        allow_none=True,
        metadata={
            "description": "anomaly alerts: the series, the anomalous point (at, value, "
            "expected [low, high], score) and the latest point (last)"
        },
    )


class AlertsSchema(Schema):
    """Firing alerts, recently resolved ones, and the rules."""

    active = fields.List(fields.Nested(AlertSchema))
    recent = fields.List(fields.Nested(AlertSchema))
    rules = fields.List(fields.Nested(AlertRuleSchema))


class MonitorStatusSchema(Schema):
    """The monitor itself."""

    enabled = fields.Boolean()
    interval_s = fields.Float()
    last_evaluation = fields.Dict(allow_none=True)
    rules = fields.Dict()
    alerts = fields.Dict()


class WorkflowHealthSchema(Schema):
    """A workflow's health score and the factors it is made of."""

    workflow_id = fields.UUID()
    window_seconds = fields.Integer()
    score = fields.Integer()
    status = fields.String(validate=validate.OneOf(["healthy", "warning", "critical"]))
    factors = fields.Dict()


# ---------------------------------------------------------------------------------------------
# Custom metrics and metric series


class MetricPointSchema(Schema):
    """A point of a series, with its anomaly score once scored."""

    class Meta:
        ordered = True

    id = fields.Integer()
    series_id = fields.UUID()
    kind = fields.String(validate=validate.OneOf(KINDS))
    name = fields.String()
    workflow_id = fields.UUID(allow_none=True)
    unit = fields.String()
    timestamp = fields.DateTime()
    value = fields.Float()
    scored = fields.Boolean(metadata={"description": "whether the detector has seen it"})
    score = fields.Float(allow_none=True, metadata={"description": "0..1, null until scored"})
    expected = fields.List(
        fields.Float(),
        allow_none=True,
        metadata={"description": "[low, high] the detector expected, from earlier points"},
    )


class RecordedPointSchema(Schema):
    """A point as recorded (it is scored later)."""

    class Meta:
        ordered = True

    series_id = fields.UUID()
    kind = fields.String()
    name = fields.String()
    workflow_id = fields.UUID(allow_none=True)
    unit = fields.String()
    timestamp = fields.DateTime()
    value = fields.Float()


class RecordedMetricsSchema(Schema):
    """What was recorded."""

    recorded = fields.Integer()
    points = fields.List(fields.Nested(RecordedPointSchema))


class MetricPointsArgs(Schema):
    """Which series to read, and which of its points."""

    kind = fields.String(load_default="custom", validate=validate.OneOf(KINDS))
    name = fields.String(
        validate=validate.Length(1, 200),
        metadata={"description": "the custom metric, the action type or the queue"},
    )
    workflow_id = fields.UUID()
    since = Timestamp(
        metadata={"type": "string", "description": "ISO 8601 or epoch seconds (inclusive)"}
    )
    until = Timestamp(
        metadata={"type": "string", "description": "ISO 8601 or epoch seconds (exclusive)"}
    )
    min_score = fields.Float(
        validate=validate.Range(0, 1), metadata={"description": "only points scored this high"}
    )

    @validates_schema(skip_on_field_errors=True)
    def _names_a_series(self, data: dict, **kwargs) -> None:
        kind = data["kind"]
        if kind in ("workflow_duration", "workflow_error_rate"):
            if "workflow_id" not in data:
                raise ValidationError({"workflow_id": [f"required for {kind}"]})
        elif "name" not in data:
            raise ValidationError({"name": [f"required for {kind}"]})
        if data.get("since") and data.get("until") and data["until"] <= data["since"]:
            raise ValidationError({"until": ["must be after since"]})


class MetricSeriesArgs(Schema):
    """Filters for the series list."""

    kind = fields.String(validate=validate.OneOf(KINDS))
    name = fields.String(validate=validate.Length(1, 200))
    workflow_id = fields.UUID()


class MetricSeriesSchema(Schema):
    """A metric series."""

    class Meta:
        ordered = True

    id = fields.UUID()
    kind = fields.String(validate=validate.OneOf(KINDS))
    name = fields.String()
    workflow_id = fields.UUID(allow_none=True)
    unit = fields.String()
    platform = fields.Boolean(metadata={"description": "a platform series (queue depth)"})
    created_at = fields.DateTime()
    last_point_at = fields.DateTime(allow_none=True)
