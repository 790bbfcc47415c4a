"""Dependencies point inward (DESIGN.md §1): ``atom`` imports none of the process folders,
the process folders never import each other, the pure workflow core loads neither Flask nor
Celery, and importing a core module has no side effect on metrics or Redis.

The guard walks every module of every package (``pkgutil``), so a module in a
new subpackage is covered the day it is written; a test plants an offending module in a
temporary package and expects the guard to find it."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESS_FOLDERS = ("api", "workers", "beat", "cli")
PURE = "atom.workflow"


def modules_of(package: str, root: Path = ROOT) -> dict[str, Path]:
    """Every module of ``package``, walked recursively by ``pkgutil.iter_modules`` over the
    folders (``walk_packages`` would import each subpackage, and find the installed one)."""
    base = root / package.replace(".", "/")
    found = {package: base / "__init__.py"}
    for info in pkgutil.iter_modules([str(base)]):
        name = f"{package}.{info.name}"
        if info.ispkg:
            found.update(modules_of(name, root))
        else:
            found[name] = base / f"{info.name}.py"
    return found


def imported_names(path: Path, module: str) -> list[str]:
    """The absolute module names an import statement anywhere in ``path`` names (functions
    and conditional blocks included; relative imports resolved against ``module``)."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    named: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            named += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            named.append(mod)
            named += [f"{mod}.{alias.name}" for alias in node.names]
    return named


def violations(
    root: Path = ROOT, packages: tuple[str, ...] = ("atom", *PROCESS_FOLDERS)
) -> list[str]:
    """Every import that crosses a boundary, as ``module: imported``."""
    found = []
    for package in packages:
        forbidden = set(PROCESS_FOLDERS) - {package}
        for module, path in modules_of(package, root).items():
            for name in imported_names(path, module):
                top = name.split(".")[0]
                if top in forbidden:
                    found.append(f"{module}: {name}")
                elif (
                    module.startswith(PURE)
                    and top == "atom"
                    and not (
                        name.startswith(PURE)
                        or name in {"atom", "atom.errors", "atom.actions"}
                        or name.startswith("atom.errors.")
                        or name.startswith("atom.actions.")
                    )
                ):
                    found.append(f"{module}: {name}")
    return found


def test_no_module_anywhere_imports_across_a_boundary():
    assert violations() == []


def test_the_guard_walks_subpackages_and_catches_a_planted_import(tmp_path: Path):
    deep = tmp_path / "atom" / "newidea" / "deeper"
    deep.mkdir(parents=True)
    for folder in (tmp_path / "atom", deep.parent, deep):
        (folder / "__init__.py").write_text("")
    (deep / "bad.py").write_text(
        textwrap.dedent("""
        def later():
            from api import app  # hidden in a function
            return app
    """)
    )
    (tmp_path / "atom" / "workflow").mkdir()
    (tmp_path / "atom" / "workflow" / "__init__.py").write_text("from ..runs import engine\n")
    for folder in PROCESS_FOLDERS:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "workers" / "x.py").write_text("import beat.scheduler\n")
    assert sorted(violations(tmp_path)) == [
        "atom.newidea.deeper.bad: api",
        "atom.newidea.deeper.bad: api.app",
        "atom.workflow: atom.runs",
        "atom.workflow: atom.runs.engine",
        "workers.x: beat.scheduler",
    ]


def loaded_after(imports: list[str], prefixes: list[str]) -> list[str]:
    """Run a fresh interpreter that imports ``imports``; the loaded modules under ``prefixes``."""
    code = (
        "import importlib, sys\n"
        f"for name in {imports!r}:\n"
        "    importlib.import_module(name)\n"
        f"print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_no_core_module_loads_a_process_folder():
    core = [name for name in modules_of("atom") if "alembic" not in name]
    assert loaded_after(core, list(PROCESS_FOLDERS)) == []


def test_the_pure_core_loads_neither_flask_nor_celery():
    pure = list(modules_of(PURE))
    assert (
        loaded_after(pure, ["flask", "celery", "kombu", "redis", "sqlalchemy", *PROCESS_FOLDERS])
        == []
    )


def test_the_check_itself_sees_a_loaded_module():
    assert loaded_after(["atom.celery_app"], ["celery"]) != []


def test_cli_loads_the_processes_by_name():
    from cli import main

    assert set(main.PROCESSES.values()) == {"api.main", "workers.main", "beat.main"}


@pytest.mark.parametrize("folder", ["api", "workers", "beat"])
def test_every_process_folder_is_walked(folder):
    assert len(modules_of(folder)) >= 3


@pytest.mark.parametrize(
    "module", ["atom.store.workflows", "atom.runs.engine", "atom.runs.events", "atom.actions"]
)
def test_importing_a_core_module_has_no_side_effect_on_metrics_or_redis(module):
    # prometheus_client fixes its multiprocess mode when first imported; the processes
    # record metrics at their edge (api/, workers/), so the core must not load it.
    assert loaded_after([module], ["prometheus_client", "redis"]) == []


def test_the_engine_names_no_metrics_module():
    # step durations reach the metrics through Session.info (engine.STEP_OBSERVER), which
    # api/app.py and workers/tasks.py fill; tests/integration/test_metrics.py sees them.
    names = imported_names(ROOT / "atom/runs/engine.py", "atom.runs.engine")
    assert [n for n in names if "metrics" in n or "prometheus" in n] == []
