"""``log``: record a message in the worker log and as the step's output."""

from __future__ import annotations

import logging
from typing import Any

from workers.actions import ActionContext

logger = logging.getLogger("atom.workflow")


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
