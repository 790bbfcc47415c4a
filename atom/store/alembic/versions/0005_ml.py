"""ml: decision models, their versions, decisions, and user events

Revision ID: 0005_ml
Revises: 0007_troubleshoot
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_ml"
down_revision = "0006_security"
branch_labels = None
depends_on = None


def _uuid(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, postgresql.UUID(as_uuid=True), nullable=nullable)


def _now(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "ml_models",
        _uuid("id"),
        _uuid("tenant_id"),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("actions", postgresql.JSONB(), nullable=False),
        sa.Column("reward", sa.String(length=16), nullable=False),
        sa.Column("active_version", sa.Integer(), nullable=True),
        sa.Column("latest_version", sa.Integer(), nullable=False),
        sa.Column("outcomes", sa.Integer(), nullable=False),
        sa.Column("outcomes_at_training", sa.Integer(), nullable=False),
        sa.Column("last_training", postgresql.JSONB(), nullable=True),
        _now("created_at"),
        _now("updated_at"),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ml_models_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ml_models")),
        sa.UniqueConstraint("tenant_id", "name", name="uq_ml_models_tenant_name"),
    )
    op.create_table(
        "ml_model_versions",
        _uuid("id"),
        _uuid("model_id"),
        _uuid("tenant_id"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("boosters", sa.Text(), nullable=False),
        sa.Column("feature_schema", postgresql.JSONB(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("holdout_samples", sa.Integer(), nullable=False),
        sa.Column("metrics", postgresql.JSONB(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        _now("trained_at"),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["ml_models.id"],
            name=op.f("fk_ml_model_versions_model_id_ml_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ml_model_versions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ml_model_versions")),
        sa.UniqueConstraint("model_id", "version", name="uq_ml_model_versions_version"),
    )
    op.create_table(
        "decisions",
        _uuid("id"),
        _uuid("tenant_id"),
        _uuid("model_id"),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("context", postgresql.JSONB(), nullable=False),
        sa.Column("features", postgresql.JSONB(), nullable=False),
        sa.Column("actions", postgresql.JSONB(), nullable=False),
        sa.Column("chosen", sa.String(length=200), nullable=False),
        sa.Column("scores", postgresql.JSONB(), nullable=False),
        sa.Column("propensity", sa.Float(), nullable=False),
        sa.Column("explored", sa.Boolean(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        _uuid("execution_id", nullable=True),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=True),
        sa.Column("outcome_at", sa.DateTime(timezone=True), nullable=True),
        _now("created_at"),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["ml_models.id"],
            name=op.f("fk_decisions_model_id_ml_models"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_decisions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    op.create_table(
        "user_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        _uuid("tenant_id"),
        sa.Column("user_id", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=200), nullable=False),
        _now("at"),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_user_events_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_events")),
    )
    op.create_index("ix_user_events_tenant_user_at", "user_events", ["tenant_id", "user_id", "at"])
    op.create_index("ix_user_events_tenant_at", "user_events", ["tenant_id", "at"])
    op.create_index("ix_decisions_model_outcome", "decisions", ["model_id", "outcome_at"])
    op.create_index("ix_decisions_tenant_created", "decisions", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_decisions_tenant_created", table_name="decisions")
    op.drop_index("ix_decisions_model_outcome", table_name="decisions")
    op.drop_table("user_events")
    op.drop_table("decisions")
    op.drop_table("ml_model_versions")
    op.drop_table("ml_models")
