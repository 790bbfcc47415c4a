"""What ``atom backup`` archives, checked against the models: every table it names exists, and
each comes after every table it references (a restore inserts them in that order)."""

from __future__ import annotations

from atom.backup import archive
from atom.store.models import Base


def test_every_archived_table_exists_and_follows_what_it_references():
    tables = Base.metadata.tables
    assert set(archive.TABLES) <= set(tables), set(archive.TABLES) - set(tables)
    order = {name: i for i, name in enumerate(archive.TABLES)}
    for name in archive.TABLES:
        for key in tables[name].foreign_keys:
            parent = key.column.table.name
            assert parent in order, f"{name} references {parent}, which is not archived"
            assert order[parent] < order[name], f"{name} comes before {parent}"


def test_the_archive_holds_configuration_history_and_keys_but_never_a_raw_key():
    assert {"workflows", "workflow_versions", "schedules", "executions", "step_runs"} <= set(
        archive.TABLES
    )
    assert {"api_keys", "credentials", "ml_models", "ml_model_versions"} <= set(archive.TABLES)
    keys = set(Base.metadata.tables["api_keys"].c.keys())
    assert "key_hash" in keys and not {"key", "raw_key", "secret"} & keys
    for name, columns in archive.LEFT_OUT.items():
        assert set(columns) <= set(Base.metadata.tables[name].c.keys())
