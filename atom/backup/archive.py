"""One archive with every workflow (all its versions), execution (with its steps), schedule,
webhook, alert rule, model, API key (its hash only) and (still encrypted) credential of some
tenants or all, and its restore.

The archive is gzip-compressed JSON: ``{format, version, schema, created_at, tables}`` where
``tables`` maps a table name to its rows, columns by name, ids kept. Restoring inserts each
row unless a row with its id (or another unique key) is already there (``ON CONFLICT DO
NOTHING``), so restoring into an empty installation gives everything back, and restoring twice,
or into the live installation it came from, duplicates nothing. A tenant that exists under the
same name with another id is joined: the archive's rows are attached to the existing tenant.

- API keys are stored as their SHA-256 hashes, and so are they archived: the raw key is never
  in the archive, and a key authenticates again after a restore.
- Step runs are archived without their numeric id (a sequence of the database they came from);
  their key is (execution, node).
- An execution that was running when the archive was written is restored as it was; the
  reconciler re-drives it after ``ATOM_STALL_SECONDS`` (steps that succeeded do not run again).
- Fires of schedules, alerts, decisions, the audit log and troubleshooting sessions are not in
  the archive (back PostgreSQL up with ``pg_dump`` to keep everything).
- Credentials stay encrypted: restore them where the same ``ATOM_SECRET_KEY`` is set.
"""

from __future__ import annotations

import gzip
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Table, select, text
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.orm import Session

from atom.store.models import Base

FORMAT = "atom-backup"
VERSION = 1
# Parents before children. Tables another part of ATOM has not created yet are skipped.
TABLES = (
    "tenants",
    "api_keys",
    "workflows",
    "workflow_versions",
    "schedules",
    "webhooks",
    "alert_rules",
    "credentials",
    "ml_models",
    "ml_model_versions",
    "executions",
    "step_runs",
)
# Columns left out: a step run's id comes from the sequence of the database it is restored to.
LEFT_OUT = {"step_runs": ("id",)}


class ArchiveError(ValueError):
    """The file is not an ATOM backup this version can restore."""


@dataclass
class Report:
    """What a restore did, per table: rows inserted and rows already there."""

    inserted: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)


def _tables() -> list[Table]:
    return [Base.metadata.tables[name] for name in TABLES if name in Base.metadata.tables]


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _schema_revision(session: Session) -> str | None:
    try:
        return session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception:  # no alembic table: not an ATOM database
        return None


def dump(session: Session, tenants: list[str] | None = None) -> dict[str, Any]:
    """The archive's content for the named tenants (every tenant when None)."""
    tenant_table = Base.metadata.tables["tenants"]
    query = select(tenant_table)
    if tenants:
        query = query.where(tenant_table.c.name.in_(tenants))
    tenant_rows = session.execute(query).mappings().all()
    found = {row["name"] for row in tenant_rows}
    if tenants and (missing := sorted(set(tenants) - found)):
        raise ArchiveError(f"no tenant named {', '.join(missing)}")
    ids = [row["id"] for row in tenant_rows]
    tables: dict[str, list[dict[str, Any]]] = {}
    for table in _tables():
        column = table.c.id if table.name == "tenants" else table.c.tenant_id
        rows = session.execute(
            select(table).where(column.in_(ids)).order_by(*table.primary_key.columns)
        ).mappings()
        left_out = LEFT_OUT.get(table.name, ())
        tables[table.name] = [
            {k: _plain(v) for k, v in row.items() if k not in left_out} for row in rows
        ]
    return {
        "format": FORMAT,
        "version": VERSION,
        "schema": _schema_revision(session),
        "created_at": datetime.now(UTC).isoformat(),
        "tables": tables,
    }


def write(path: Path, content: dict[str, Any]) -> None:
    """Write the archive (gzip JSON), readable by its owner only: it holds secrets' hashes
    and encrypted credentials."""
    path.touch(mode=0o600)
    with gzip.open(path, "wt", encoding="utf-8") as out:
        json.dump(content, out)


def read(path: Path) -> dict[str, Any]:
    """Read an archive written by ``write`` (``ArchiveError`` when it is not one)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as source:
            content = json.load(source)
    except (OSError, ValueError) as e:
        raise ArchiveError(f"{path} is not an ATOM backup: {e}") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise ArchiveError(f"{path} is not an ATOM backup")
    if content.get("version") != VERSION:
        raise ArchiveError(
            f"{path} is backup format {content.get('version')}; this reads {VERSION}"
        )
    return content


def _typed(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in row.items():
        if name not in table.c:
            continue  # a column a newer ATOM added; this schema does not have it
        kind = table.c[name].type
        if value is not None and isinstance(kind, UUID):
            value = uuid.UUID(value)
        elif value is not None and isinstance(kind, DateTime):
            value = datetime.fromisoformat(value)
        out[name] = value
    return out


def restore(session: Session, content: dict[str, Any]) -> Report:
    """Insert every row of the archive that is not there yet; the caller commits."""
    report = Report()
    tenant_table = Base.metadata.tables["tenants"]
    # A tenant already here under the same name keeps its id; its rows follow it.
    remap: dict[str, uuid.UUID] = {}
    for row in content["tables"].get("tenants", []):
        existing = session.execute(
            select(tenant_table.c.id).where(tenant_table.c.name == row["name"])
        ).scalar()
        if existing is not None and str(existing) != row["id"]:
            remap[row["id"]] = existing
    for table in _tables():
        rows = content["tables"].get(table.name, [])
        inserted = 0
        for row in rows:
            values = _typed(table, row)
            if table.name == "tenants" and row["id"] in remap:
                continue
            if "tenant_id" in values and str(values["tenant_id"]) in remap:
                values["tenant_id"] = remap[str(values["tenant_id"])]
            statement = insert(table).values(**values).on_conflict_do_nothing()
            inserted += len(session.execute(statement.returning(*table.primary_key)).all())
        report.inserted[table.name] = inserted
        report.present[table.name] = len(rows) - inserted
    return report
