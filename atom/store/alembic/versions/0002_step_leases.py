"""step leases: task id, heartbeat and retry time on step runs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("step_runs", sa.Column("task_id", sa.String(length=64), nullable=True))
    op.add_column("step_runs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("step_runs", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_executions_active",
        "executions",
        ["status", "updated_at"],
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_active", table_name="executions")
    op.drop_column("step_runs", "retry_at")
    op.drop_column("step_runs", "heartbeat_at")
    op.drop_column("step_runs", "task_id")
