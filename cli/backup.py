"""``atom backup`` and ``atom restore``: a tenant's (or every tenant's) configuration in one
archive, and back (``atom.backup.archive`` says what is in it)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

from atom.backup import archive
from atom.config import Settings


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    """Write the archive; print what it holds."""
    from atom.store.db import make_engine, make_sessionmaker
    from cli.main import one_off_database

    output = Path(args.output or f"atom-backup-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json.gz")
    with one_off_database(settings) as url:
        engine = make_engine(url)
        try:
            with make_sessionmaker(engine)() as session:
                content = archive.dump(session, args.tenant or None)
        except archive.ArchiveError as e:
            print(f"atom backup: {e}", file=sys.stderr)
            return 2
        finally:
            engine.dispose()
    archive.write(output, content)
    counts = ", ".join(f"{len(rows)} {name}" for name, rows in content["tables"].items())
    print(f"wrote {output}: {counts}")
    return 0


def cmd_restore(settings: Settings, args: argparse.Namespace) -> int:
    """Load the archive; rows already there are left alone."""
    from atom.store.db import make_engine, make_sessionmaker, transaction
    from atom.store.migrations import upgrade
    from cli.main import one_off_database

    try:
        content = archive.read(Path(args.file))
    except archive.ArchiveError as e:
        print(f"atom restore: {e}", file=sys.stderr)
        return 2
    with one_off_database(settings) as url:
        upgrade(url)  # an empty installation gets its schema first
        engine = make_engine(url)
        try:
            with transaction(make_sessionmaker(engine)) as session:
                report = archive.restore(session, content)
        finally:
            engine.dispose()
    for name, inserted in report.inserted.items():
        print(f"  {name:<20} {inserted} restored, {report.present[name]} already there")
    print(f"restored {args.file}; beat rebuilds the schedules' entries from PostgreSQL")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``atom backup`` and ``atom restore``."""
    backup = sub.add_parser("backup", help="write workflows, schedules, ... to one archive")
    backup.add_argument(
        "--tenant", action="append", help="a tenant's name (repeat for more; default: all)"
    )
    backup.add_argument("--output", "-o", help="the archive (default: atom-backup-<time>.json.gz)")
    restore = sub.add_parser("restore", help="load an archive; nothing is duplicated")
    restore.add_argument("file")
