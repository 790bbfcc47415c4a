"""troubleshooting: sessions, and an execution's link to its session and policy overrides

Revision ID: 0007_troubleshoot
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007_troubleshoot"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "troubleshooting_sessions",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("workflow_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("execution_id", postgresql.UUID(as_uuid=True), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("origin", sa.String(length=10), nullable=False),
        sa.Column("auto_resolve", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("issues", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("logs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("decisions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("auto_retries", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_troubleshooting_sessions_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workflow_id"],
            ["workflows.id"],
            name=op.f("fk_troubleshooting_sessions_workflow_id_workflows"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name=op.f("fk_troubleshooting_sessions_execution_id_executions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_troubleshooting_sessions")),
    )
    op.create_index(
        "ix_troubleshooting_sessions_tenant_created",
        "troubleshooting_sessions",
        ["tenant_id", "created_at"],
    )
    op.create_index(
        "ix_troubleshooting_sessions_execution", "troubleshooting_sessions", ["execution_id"]
    )
    op.add_column(
        "executions",
        sa.Column("troubleshooting_session_id", postgresql.UUID(as_uuid=True), nullable=True),
    )
    op.add_column(
        "executions",
        sa.Column("policy_overrides", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("executions", "policy_overrides")
    op.drop_column("executions", "troubleshooting_session_id")
    op.drop_index("ix_troubleshooting_sessions_execution", table_name="troubleshooting_sessions")
    op.drop_index(
        "ix_troubleshooting_sessions_tenant_created", table_name="troubleshooting_sessions"
    )
    op.drop_table("troubleshooting_sessions")
