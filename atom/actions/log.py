"""``log``: record a message in the worker log and as the step's output."""

from __future__ import annotations

import logging
from typing import Any

from atom.actions.base import Action, ActionContext, ActionSpec

logger = logging.getLogger("atom.workflow")

LEVELS = ("debug", "info", "warning", "error")


def check(config: dict, where: str) -> list[str]:
    """``level`` is one of :data:`LEVELS`."""
    level = config.get("level", "info")
    if str(level).lower() not in LEVELS:
        return [f"level must be one of {', '.join(LEVELS)}"]
    return []


def run(config: dict[str, Any], ctx: ActionContext) -> Any:
    """Log ``config.message`` at ``config.level`` (info) and return it."""
    level = str(config.get("level", "info")).lower()
    message = config["message"]
    logger.log(
        logging.getLevelName(level.upper()),
        "%s",
        message,
        extra={"execution_id": ctx.execution_id, "node_id": ctx.node_id},
    )
    return {"message": message, "level": level}


ACTION = Action(
    name="log",
    spec=ActionSpec(required={"message": None}, optional={"level": str}, check=check),
    run=run,
    examples=({"message": "hello"}, {"message": {"n": 1}, "level": "WARNING"}),
    bad=(({"level": "info"}, "is required"), ({"message": "x", "level": "loud"}, "level must")),
)
