"""The models and the migrations describe the same schema: typed status columns need none."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from atom.statuses import ExecutionStatus, StepStatus
from atom.store.models import Base


def test_the_migrated_database_matches_the_models(database_url: str):
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert diff == []
            columns = dict(
                conn.execute(
                    text(
                        "SELECT table_name, data_type || '(' || character_maximum_length || ')' "
                        "FROM information_schema.columns WHERE column_name = 'status' "
                        "AND table_name IN ('executions', 'step_runs', 'schedule_fires', 'alerts')"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    # The statuses are stored as the same plain strings as before (no native enum type).
    assert columns == {
        "executions": "character varying(20)",
        "step_runs": "character varying(20)",
        "schedule_fires": "character varying(20)",
        "alerts": "character varying(16)",
    }
    assert max(len(s) for s in [*ExecutionStatus, *StepStatus]) <= 20
