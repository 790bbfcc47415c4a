"""Dependencies point inward: the core never loads the process folders, Flask or Celery."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESS_FOLDERS = ("api", "workers", "beat")
STATIC_IMPORT = re.compile(r"^\s*(import|from)\s+(api|workers|beat)\b", re.MULTILINE)


def loaded_after(imports: list[str], prefixes: list[str]) -> list[str]:
    """Run a fresh interpreter that imports ``imports``; the loaded modules under ``prefixes``."""
    code = (
        "import importlib, sys\n"
        f"for name in {imports!r}:\n"
        "    importlib.import_module(name)\n"
        f"print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_core_does_not_load_the_process_folders():
    core = ["atom.definition", "atom.compiler", "atom.graph", "atom.templating", "atom.engine",
            "atom.workflows", "atom.config", "atom.errors", "atom.cli"]
    assert loaded_after(core, list(PROCESS_FOLDERS)) == []


def test_the_pure_core_loads_neither_flask_nor_celery():
    pure = ["atom.definition", "atom.compiler", "atom.graph", "atom.templating"]
    assert loaded_after(pure, ["flask", "celery", "kombu", *PROCESS_FOLDERS]) == []


def test_the_check_itself_sees_a_loaded_module():
    assert loaded_after(["atom.celery_app"], ["celery"]) != []


def atom_sources() -> list[Path]:
    return sorted((ROOT / "atom").glob("*.py"))


def test_no_atom_module_imports_a_process_folder():
    offenders = [f"{path.name}: {match.group(0).strip()}" for path in atom_sources()
                 for match in STATIC_IMPORT.finditer(path.read_text())]
    assert offenders == []


@pytest.mark.parametrize("path", atom_sources(), ids=lambda p: p.name)
def test_no_import_statement_anywhere_names_a_process_folder(path):
    tree = ast.parse(path.read_text())
    named = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            named.append(node.module)
    assert [n for n in named if n.split(".")[0] in PROCESS_FOLDERS] == []


def test_cli_loads_the_processes_by_name():
    from atom import cli

    assert set(cli.PROCESSES.values()) == {"api.main", "workers.main", "beat.main"}
    source = (ROOT / "atom" / "cli.py").read_text()
    assert "importlib.import_module(" in source
    assert STATIC_IMPORT.search(source) is None


@pytest.mark.parametrize("folder", PROCESS_FOLDERS)
def test_the_process_folders_do_not_import_each_other(folder):
    others = "|".join(f for f in PROCESS_FOLDERS if f != folder)
    pattern = re.compile(rf"^\s*(import|from)\s+({others})\b", re.MULTILINE)
    offenders = [str(path.relative_to(ROOT)) for path in sorted((ROOT / folder).rglob("*.py"))
                 if pattern.search(path.read_text())]
    assert offenders == []
