"""reliability: an Idempotency-Key per execution, unique in its tenant

Revision ID: 0008_reliability
Revises: 0005_ml
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_reliability"
down_revision = "0005_ml"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("executions", sa.Column("idempotency_key", sa.String(length=200), nullable=True))
    op.create_index(
        "uq_executions_idempotency_key",
        "executions",
        ["tenant_id", "idempotency_key"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("uq_executions_idempotency_key", table_name="executions")
    op.drop_column("executions", "idempotency_key")
