"""optimizer: stored analyses (atom.optimize)

Revision ID: 0010_optimizer
Revises: 0008_reliability
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010_optimizer"
down_revision = "0009_metrics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "optimization_results",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("workflow_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("workflow_version", sa.Integer(), nullable=True),
        sa.Column("strategy", sa.String(length=20), nullable=False),
        sa.Column("origin", sa.String(length=10), nullable=False),
        sa.Column("baseline", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("suggestions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("optimized", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("predicted", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("trade_offs", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("applied_version", sa.Integer(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_optimization_results_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_optimization_results_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_optimization_results")),
    )
    op.create_index(
        "ix_optimization_results_tenant_created",
        "optimization_results",
        ["tenant_id", "created_at"],
    )
    op.create_index("ix_optimization_results_workflow", "optimization_results", ["workflow_id"])


def downgrade() -> None:
    op.drop_index("ix_optimization_results_workflow", table_name="optimization_results")
    op.drop_index("ix_optimization_results_tenant_created", table_name="optimization_results")
    op.drop_table("optimization_results")
