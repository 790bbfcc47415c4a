"""Marshmallow schemas: the OpenAPI description of requests and answers.

Workflow definitions are validated by ``atom.definition`` (every problem at once), so their
request schema accepts any JSON and only documents the shape.
"""

from __future__ import annotations

from marshmallow import INCLUDE, Schema, fields, validate

EXECUTION_STATUSES = ["queued", "running", "paused", "succeeded", "failed", "cancelled"]


class DefinitionSchema(Schema):
    """A workflow definition: name, description, nodes, connections (see README)."""

    class Meta:
        unknown = INCLUDE

    name = fields.Raw(metadata={"description": "Workflow name", "example": "Onboarding"})
    description = fields.Raw(metadata={"description": "What it does"})
    on_failure = fields.Raw(metadata={"description": "fail_fast (default) or continue"})
    nodes = fields.Raw(metadata={"description": "List of {id, type, name, config, retry, "
                                                "timeout, trigger_rule, queue}"})
    connections = fields.Raw(metadata={"description": "List of {source, target, when}"})


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
    metrics = fields.Nested(ExecutionMetricsSchema)
    steps = fields.List(fields.Nested(StepSchema))


class ExecutionListArgs(Schema):
    """Filters for the execution list."""

    workflow_id = fields.UUID()
    status = fields.String(validate=validate.OneOf(EXECUTION_STATUSES))
