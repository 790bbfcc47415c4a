"""metrics: metric series and points with anomaly scores, derivation cursors, anomaly rules

Revision ID: 0009_metrics
Revises: 0008_reliability
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_metrics"
down_revision = "0008_reliability"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_series",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("workflow_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("last_point_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_metric_series_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name="fk_metric_series_workflow_id_workflows",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_metric_series"),
        sa.UniqueConstraint("key", name="uq_metric_series_key"),
    )
    op.create_index("ix_metric_series_tenant_kind", "metric_series", ["tenant_id", "kind"])
    op.create_table(
        "metric_points",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("series_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("expected_low", sa.Float(), nullable=True),
        sa.Column("expected_high", sa.Float(), nullable=True),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["series_id"],
            ["metric_series.id"],
            name="fk_metric_points_series_id_metric_series",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_metric_points_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_metric_points"),
    )
    op.create_index("ix_metric_points_series_at", "metric_points", ["series_id", "at"])
    op.create_index("ix_metric_points_at", "metric_points", ["at"])
    op.create_index(
        "ix_metric_points_unscored",
        "metric_points",
        ["series_id"],
        postgresql_where=sa.text("scored_at IS NULL"),
    )
    op.create_table(
        "metric_cursors",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("through", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_metric_cursors"),
    )
    op.create_index("ix_executions_finished", "executions", ["finished_at"])
    op.create_index("ix_step_runs_finished", "step_runs", ["finished_at"])
    op.add_column("alert_rules", sa.Column("series", postgresql.JSONB(), nullable=True))
    op.add_column("alerts", sa.Column("details", postgresql.JSONB(), nullable=True))


def downgrade() -> None:
    op.drop_column("alerts", "details")
    op.drop_column("alert_rules", "series")
    op.drop_index("ix_step_runs_finished", table_name="step_runs")
    op.drop_index("ix_executions_finished", table_name="executions")
    op.drop_table("metric_cursors")
    op.drop_table("metric_points")
    op.drop_table("metric_series")
