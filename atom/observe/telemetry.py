"""How a process is set up to be observed: its logging, and its Prometheus folder.

Nothing here imports prometheus_client: it chooses multiprocess mode from
``PROMETHEUS_MULTIPROC_DIR`` when it is first imported, so the folder must be set before
(``cli`` calls ``setup_process`` before it loads a process's code).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import psutil

from atom.config import Settings
from atom.observe import logs

PROCESS_DIR = re.compile(r"^(api|worker)-(\d+)$")
"""A process's metrics folder: its role and pid."""
RECORDING_ROLES = ("api", "worker")


def remove_stale(root: Path) -> list[str]:
    """Remove the folders of processes that no longer run on this machine."""
    removed = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        match = PROCESS_DIR.match(child.name)
        if match and child.is_dir() and not psutil.pid_exists(int(match.group(2))):
            for path in child.glob("*.db"):
                path.unlink(missing_ok=True)
            try:
                child.rmdir()
                removed.append(child.name)
            except OSError:
                pass
    return removed


def prepare_metrics(root: Path, role: str, pid: int | None = None) -> Path:
    """Make this process's folder ``root/<role>-<pid>`` and point prometheus_client at it.

    Folders of processes no longer running on this machine are removed first, so a restart
    starts its counters from zero (Prometheus reads that as a counter reset) and dead
    processes leave nothing behind. Children forked later (gunicorn workers, Celery prefork
    children) inherit the folder and write files of their own in it.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client is already imported; the metrics folder must be chosen before"
        )
    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root)
    own = root / f"{role}-{pid or os.getpid()}"
    if own.exists():  # a dead process with the same pid left it
        for path in own.glob("*.db"):
            path.unlink(missing_ok=True)
    own.mkdir(exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(own)
    return own


def setup_process(settings: Settings, role: str) -> None:
    """Logging in the configured format, and the metrics folder of a recording process.

    Other processes (beat, Flower) must not inherit a folder from their parent.
    """
    logs.setup(settings.log_level, settings.log_format)
    if role in RECORDING_ROLES:
        prepare_metrics(settings.metrics_root, role)
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
