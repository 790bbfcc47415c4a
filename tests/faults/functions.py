"""Functions the fault tests' workers may call through the ``python`` action."""

from __future__ import annotations

import os

from atom.actions.functions import function


@function("die")
def die() -> dict:
    """Kill the worker process running the step, the way a segfault or the OOM killer does."""
    os._exit(137)
