"""``delay``: wait ``seconds``."""

from __future__ import annotations

import time
from typing import Any

from atom.errors import PermanentError
from workers.actions import ActionContext


def run(config: dict[str, Any], ctx: ActionContext) -> Any:
    """Sleep for ``config.seconds`` and report how long it waited."""
    seconds = config["seconds"]
    try:
        seconds = float(seconds)
    except (TypeError, ValueError) as e:
        raise PermanentError(f"delay: seconds must be a number, got {seconds!r}") from e
    if not 0 <= seconds <= 86400:
        raise PermanentError(f"delay: seconds must be between 0 and 86400, got {seconds}")
    started = time.monotonic()
    time.sleep(seconds)
    return {"waited_seconds": round(time.monotonic() - started, 3)}
