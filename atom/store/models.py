"""The database schema as SQLAlchemy 2.0 typed mappings. Alembic migrations follow this file.

Every row that belongs to a customer carries ``tenant_id``; every query filters by it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from atom.statuses import (
    AlertStatus,
    ExecutionStatus,
    FireStatus,
    SessionStatus,
    StepStatus,
    values,
)

# Stable constraint names, so Alembic migrations name things the same way every time.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONType = JSON().with_variant(JSONB(), "postgresql")


def status_column(enum: type[Any], length: int) -> Enum:
    """A status typed as its enum in Python and stored as the same plain string as before.

    ``native_enum=False`` and no CHECK constraint: the column stays ``VARCHAR(length)``, so
    the schema is unchanged (no migration) and a raw SQL filter on the string still works.
    """
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=values,
        validate_strings=True,
    )


class Base(DeclarativeBase):
    """Declarative base with the naming convention."""

    metadata = MetaData(naming_convention=NAMING)


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


class Tenant(Base):
    """A customer: owns keys, workflows and executions."""

    __tablename__ = "tenants"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    settings: Mapped[dict[str, Any]] = mapped_column(
        JSONType, default=dict, server_default=text("'{}'::jsonb")
    )
    """Tenant settings an admin changes (``PUT /api/settings``): ``email_allowed_domains``."""


class ApiKey(Base):
    """An API key; only its SHA-256 hash is stored."""

    __tablename__ = "api_keys"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Workflow(Base):
    """A named workflow; its definitions are immutable versions."""

    __tablename__ = "workflows"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer, default=1)
    trigger_kind: Mapped[str] = mapped_column(String(20), default="manual")
    event_type: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_workflows_tenant_name", "tenant_id", "name"),)


class WorkflowVersion(Base):
    """One immutable definition of a workflow, with its compiled plan."""

    __tablename__ = "workflow_versions"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSONType)
    plan: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("workflow_id", "version", name="uq_workflow_versions_workflow_version"),
    )


class Execution(Base):
    """One run of one workflow version."""

    __tablename__ = "executions"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflow_versions.id"))
    workflow_version: Mapped[int] = mapped_column(Integer)
    status: Mapped[ExecutionStatus] = mapped_column(
        status_column(ExecutionStatus, 20), default=ExecutionStatus.QUEUED
    )
    input: Mapped[Any] = mapped_column(JSONType, default=dict)
    output: Mapped[Any | None] = mapped_column(JSONType)
    error: Mapped[Any | None] = mapped_column(JSONType)
    trigger: Mapped[Any] = mapped_column(JSONType, default=dict)
    epoch: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    """The client's ``Idempotency-Key`` of ``execute``: a retry with it never starts a second
    run (unique per tenant)."""
    troubleshooting_session_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    """The troubleshooting session that looks after this run (atom.troubleshoot)."""
    policy_overrides: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """Per-node changes to retry, timeout and config for this run only, as an automatic
    resolution set them: ``{node_id: {"retry": {...}, "timeout": s, "config": {...}}}``."""

    __table_args__ = (
        Index("uq_executions_idempotency_key", "tenant_id", "idempotency_key", unique=True),
        Index("ix_executions_tenant_created", "tenant_id", "created_at"),
        Index("ix_executions_workflow", "workflow_id"),
        Index("ix_executions_status", "status"),
        Index(
            "ix_executions_active",
            "status",
            "updated_at",
            postgresql_where=text("status IN ('queued', 'running')"),
        ),
    )


class StepRun(Base):
    """The state of one node in one execution."""

    __tablename__ = "step_runs"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    execution_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    node_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    action_type: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[StepStatus] = mapped_column(
        status_column(StepStatus, 20), default=StepStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    input: Mapped[Any | None] = mapped_column(JSONType)
    output: Mapped[Any | None] = mapped_column(JSONType)
    error: Mapped[Any | None] = mapped_column(JSONType)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    task_id: Mapped[str | None] = mapped_column(String(64))
    """The Celery task id of the delivery running (or last running) this step."""
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """Refreshed while the step runs; a stale heartbeat means its worker died."""
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When a failed attempt will be retried (a parked retry is re-dispatched then)."""

    __table_args__ = (
        UniqueConstraint("execution_id", "node_id", name="uq_step_runs_execution_node"),
    )


class Schedule(Base):
    """A clock that starts a workflow: a 5-field cron in an IANA timezone, or an interval."""

    __tablename__ = "schedules"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    cron: Mapped[str | None] = mapped_column(String(120))
    interval_seconds: Mapped[int | None] = mapped_column(Integer)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    input: Mapped[Any] = mapped_column(JSONType, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    overlap: Mapped[str] = mapped_column(String(10), default="skip")
    catchup: Mapped[bool] = mapped_column(default=False)
    max_catchup: Mapped[int] = mapped_column(Integer, default=10)
    anchor: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """Interval schedules fire at anchor + k * interval_seconds."""
    checked_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    """Every fire time up to here is accounted for in schedule_fires (the sweeper's mark)."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_schedules_tenant", "tenant_id", "created_at"),)


class ScheduleFire(Base):
    """One fire time of a schedule: the run it started, or why none did. Unique per time."""

    __tablename__ = "schedule_fires"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    schedule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    fire_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[FireStatus] = mapped_column(status_column(FireStatus, 20))
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(20), default="beat")
    execution_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("executions.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        UniqueConstraint("schedule_id", "fire_time", name="uq_schedule_fires_schedule_time"),
    )


class Webhook(Base):
    """The secret URL that starts a workflow; only a hash of its token is stored."""

    __tablename__ = "webhooks"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE"), unique=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AlertRule(Base):
    """When to raise an alert: a metric compared with a threshold over a window."""

    __tablename__ = "alert_rules"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    workflow_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE")
    )
    """None: the rule is about the whole tenant (or the platform, for queues and workers)."""
    name: Mapped[str] = mapped_column(String(200))
    metric: Mapped[str] = mapped_column(String(40))
    comparison: Mapped[str] = mapped_column(String(2))
    threshold: Mapped[float] = mapped_column(Float)
    window: Mapped[str] = mapped_column(String(16))
    severity: Mapped[str] = mapped_column(String(16))
    cooldown: Mapped[int] = mapped_column(Integer)
    """Seconds after a notified alert during which the rule fires silently."""
    channels: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    series: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """An ``anomaly`` rule's series selector ``{kind?, workflow_id?, name?}`` (else None)."""
    builtin: Mapped[str | None] = mapped_column(String(40))
    """The key of a built-in rule (one per tenant), None for a user's own."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_evaluated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("tenant_id", "builtin", name="uq_alert_rules_builtin"),
        Index("ix_alert_rules_tenant", "tenant_id"),
    )


class Alert(Base):
    """One firing of a rule about one subject, until it resolves."""

    __tablename__ = "alerts"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    rule_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(64), default="")
    """What the alert is about: a workflow id, or "" for the rule's whole scope."""
    workflow_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE")
    )
    status: Mapped[AlertStatus] = mapped_column(
        status_column(AlertStatus, 16), default=AlertStatus.FIRING
    )
    severity: Mapped[str] = mapped_column(String(16))
    value: Mapped[float | None] = mapped_column(Float)
    """The metric's value when the alert fired."""
    last_value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text, default="")
    notify: Mapped[bool] = mapped_column(Boolean, default=True)
    """False when it fired within the cooldown of an earlier notified alert: it stays silent."""
    notifications: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    """Delivery results: ``{event, channel, target (redacted), ok, error, at}``."""
    details: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """An anomaly alert's point: ``{series, at, value, expected, score, through}``."""
    fired_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_alerts_tenant_fired", "tenant_id", "fired_at"),
        Index("ix_alerts_rule_subject", "rule_id", "subject", "fired_at"),
        # De-duplication: at most one firing alert per rule and subject.
        Index(
            "uq_alerts_firing",
            "rule_id",
            "subject",
            unique=True,
            postgresql_where=text("status = 'firing'"),
        ),
    )


class Credential(Base):
    """A secret a tenant's steps use (``{{ credentials.NAME }}``), encrypted with Fernet."""

    __tablename__ = "credentials"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32), default="secret")
    description: Mapped[str] = mapped_column(Text, default="")
    ciphertext: Mapped[str] = mapped_column(Text)
    """A Fernet token of the JSON value; the plaintext is never stored nor returned."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_credentials_tenant_name"),)


class AuditEntry(Base):
    """One change or command: who (key), what (action, target), when, from where, outcome."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    key_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(200))
    client: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_audit_log_tenant_at", "tenant_id", "at"),)


class TroubleshootingSession(Base):
    """A diagnosis of one execution, the resolutions tried and every decision taken."""

    __tablename__ = "troubleshooting_sessions"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    workflow_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("workflows.id", ondelete="CASCADE"))
    execution_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("executions.id", ondelete="SET NULL")
    )
    status: Mapped[SessionStatus] = mapped_column(
        status_column(SessionStatus, 20), default=SessionStatus.OPEN
    )
    """open | resolved | needs_attention."""
    origin: Mapped[str] = mapped_column(String(10), default="api")
    """api (a person asked) | auto (a failed execution opened it)."""
    auto_resolve: Mapped[bool] = mapped_column(Boolean, default=False)
    summary: Mapped[str] = mapped_column(Text, default="")
    issues: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    logs: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    """The user's ``error_logs`` lines, each ``{line, category, confidence}``."""
    decisions: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    """Every decision the session took, in order: ``{at, decision, detail}``."""
    auto_retries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_troubleshooting_sessions_tenant_created", "tenant_id", "created_at"),
        Index("ix_troubleshooting_sessions_execution", "execution_id"),
    )


# Run statistics select executions by the time they finished (atom.monitoring).
Index("ix_executions_tenant_finished", Execution.tenant_id, Execution.finished_at)
# Run-metric series read every tenant's finished runs and steps by finish time (atom.anomaly).
Index("ix_executions_finished", Execution.finished_at)
Index("ix_step_runs_finished", StepRun.finished_at)


class MLModel(Base):
    """A tenant's named decision model: its action set, reward kind and active version."""

    __tablename__ = "ml_models"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    actions: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    """The action names, fixed when the model is created."""
    reward: Mapped[str] = mapped_column(String(16), default="reward")
    """``reward`` (a number per outcome) or ``success`` (true/false, learned as 1/0)."""
    active_version: Mapped[int | None] = mapped_column(Integer)
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    outcomes: Mapped[int] = mapped_column(Integer, default=0)
    """Outcomes received in all."""
    outcomes_at_training: Mapped[int] = mapped_column(Integer, default=0)
    """``outcomes`` when the last training was asked for: the retraining trigger counts from it."""
    last_training: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """What the last training did: ``{version, published, reason, at}``."""
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_ml_models_tenant_name"),)


class ModelVersion(Base):
    """One immutable trained version of a model (LightGBM boosters as text)."""

    __tablename__ = "ml_model_versions"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ml_models.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    """candidate | active | retired."""
    boosters: Mapped[str] = mapped_column(Text)
    """JSON ``{action: [model_to_string() of each bootstrap head]}``."""
    feature_schema: Mapped[dict[str, Any]] = mapped_column(JSONType)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    holdout_samples: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """Holdout metrics of this version, and of the champion on the same holdout."""
    reason: Mapped[str] = mapped_column(Text, default="")
    trained_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_ml_model_versions_version"),)


class Decision(Base):
    """One decision: what was known, what was offered, what was chosen and with what odds."""

    __tablename__ = "decisions"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("ml_models.id", ondelete="CASCADE"))
    model_version: Mapped[int | None] = mapped_column(Integer)
    context: Mapped[dict[str, Any]] = mapped_column(JSONType)
    features: Mapped[dict[str, Any]] = mapped_column(JSONType)
    """The flattened context (``a.b`` names), as the model saw it."""
    actions: Mapped[list[Any]] = mapped_column(JSONType)
    """The actions offered."""
    chosen: Mapped[str] = mapped_column(String(200))
    scores: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    propensity: Mapped[float] = mapped_column(Float)
    explored: Mapped[bool] = mapped_column(Boolean)
    confidence: Mapped[float | None] = mapped_column(Float)
    execution_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    reward: Mapped[float | None] = mapped_column(Float)
    success: Mapped[bool | None] = mapped_column(Boolean)
    outcome_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_decisions_model_outcome", "model_id", "outcome_at"),
        Index("ix_decisions_tenant_created", "tenant_id", "created_at"),
    )


class UserEvent(Base):
    """An event ATOM received for a user (``POST /api/events`` with a user id): the history
    user-behaviour predictions learn from."""

    __tablename__ = "user_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_user_events_tenant_user_at", "tenant_id", "user_id", "at"),
        Index("ix_user_events_tenant_at", "tenant_id", "at"),
    )


class MetricSeries(Base):
    """A metric series: a tenant's custom metric, one of its run metrics, or (no tenant) a
    platform queue's depth."""

    __tablename__ = "metric_series"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE")
    )
    """None for the platform's series (queue depths), which every tenant's rules may watch."""
    kind: Mapped[str] = mapped_column(String(24))
    """workflow_duration, workflow_error_rate, queue_depth, step_duration or custom."""
    workflow_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(200), default="")
    """The custom metric's name, the action type, or the queue ("" for workflow series)."""
    key: Mapped[str] = mapped_column(String(400), unique=True)
    """tenant|kind|workflow|name: one series per key (NULLs could not be unique)."""
    unit: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_point_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_metric_series_tenant_kind", "tenant_id", "kind"),)


class MetricPoint(Base):
    """One point of a series, with its anomaly score once the ML pool has scored it."""

    __tablename__ = "metric_points"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    series_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("metric_series.id", ondelete="CASCADE"))
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE")
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    value: Mapped[float] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float)
    """0..1 (None: the detector gave none, e.g. a cold start); set with ``scored_at``."""
    expected_low: Mapped[float | None] = mapped_column(Float)
    expected_high: Mapped[float | None] = mapped_column(Float)
    scored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_metric_points_series_at", "series_id", "at"),
        Index("ix_metric_points_at", "at"),
        Index(
            "ix_metric_points_unscored",
            "series_id",
            postgresql_where=text("scored_at IS NULL"),
        ),
    )


class MetricCursor(Base):
    """How far the derivation of run-metric series has read (one row per source)."""

    __tablename__ = "metric_cursors"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    through: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OptimizationResult(Base):
    """One optimizer analysis: its baseline, suggestions, optimized definition, prediction."""

    __tablename__ = "optimization_results"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=_uuid)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    workflow_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("workflows.id", ondelete="CASCADE")
    )
    """None for an analysis of an inline definition (which cannot be applied)."""
    workflow_version: Mapped[int | None] = mapped_column(Integer)
    """The version analysed."""
    strategy: Mapped[str] = mapped_column(String(20))
    origin: Mapped[str] = mapped_column(String(10), default="api")
    """api (a person asked) | beat (the periodic analysis)."""
    baseline: Mapped[dict[str, Any]] = mapped_column(JSONType)
    suggestions: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    optimized: Mapped[dict[str, Any]] = mapped_column(JSONType)
    predicted: Mapped[dict[str, Any]] = mapped_column(JSONType)
    trade_offs: Mapped[list[Any] | None] = mapped_column(JSONType)
    applied_version: Mapped[int | None] = mapped_column(Integer)
    """The workflow version ``apply`` saved ``optimized`` as."""
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_optimization_results_tenant_created", "tenant_id", "created_at"),
        Index("ix_optimization_results_workflow", "workflow_id"),
    )
