"""``atom backup`` and ``atom restore``: a tenant's (or every tenant's) configuration in one
archive, and back (``atom.backup.archive`` says what is in it); ``atom import``: n8n exports
and AuraOS documents as ATOM definitions."""

from __future__ import annotations

import argparse
import json
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
    from atom.store.db import make_engine, make_sessionmaker
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
            with make_sessionmaker(engine).begin() as session:
                report = archive.restore(session, content)
        finally:
            engine.dispose()
    for name, inserted in report.inserted.items():
        print(f"  {name:<20} {inserted} restored, {report.present[name]} already there")
    print(f"restored {args.file}; beat rebuilds the schedules' entries from PostgreSQL")
    return 0


def _detect(document: object) -> str:
    """n8n exports keep connections in a mapping by node name; ATOM/AuraOS in a list."""
    if isinstance(document, dict) and isinstance(document.get("connections"), dict):
        return "n8n"
    return "auraos"


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    """Convert FILE; the definition goes to --output (or stdout), the report to stderr."""
    from atom.errors import DefinitionError
    from atom.importers import n8n
    from atom.workflow.definition import parse_definition

    try:
        document = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as e:
        print(f"atom import: cannot read {args.file}: {e}", file=sys.stderr)
        return 2
    source = args.source or _detect(document)
    try:
        if source == "n8n":
            conversion = n8n.convert(document)
            definition, skipped = conversion.definition, conversion.skipped
        else:
            parse_definition(document)  # AuraOS spellings load as they are
            definition, skipped = document, []
    except DefinitionError as e:
        print("atom import: the converted workflow is not valid:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem.location}: {problem.message}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"atom import: {e}", file=sys.stderr)
        return 2
    text = json.dumps(definition, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    else:
        print(text)
    count = len(definition["nodes"])
    print(f"atom import: {source}, {count} nodes, {len(skipped)} not converted", file=sys.stderr)
    for item in skipped:
        print(f"  - {item.node!r} ({item.type}): {item.reason}", file=sys.stderr)
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
    imports = sub.add_parser("import", help="convert an n8n export or AuraOS document")
    imports.add_argument("file")
    imports.add_argument("--from", dest="source", choices=["n8n", "auraos"], help="default: guess")
    imports.add_argument("--output", "-o", help="write the ATOM definition here (default: stdout)")
