"""``transform``: the rendered ``output`` becomes the step's output."""

from __future__ import annotations

from typing import Any

from workers.actions import ActionContext


def run(config: dict[str, Any], ctx: ActionContext) -> Any:
    """Return the already-rendered ``config.output``."""
    return config["output"]
