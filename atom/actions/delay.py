"""``delay``: wait ``seconds``."""

from __future__ import annotations

import time
from typing import Any

from atom.actions.base import Action, ActionContext, ActionSpec, is_type
from atom.errors import PermanentError

MAX_SECONDS = 86400


def check(config: dict, where: str) -> list[str]:
    """``seconds`` is within a day."""
    seconds = config["seconds"]
    if is_type(seconds, float) and not 0 <= seconds <= MAX_SECONDS:
        return [f"seconds must be between 0 and {MAX_SECONDS}"]
    return []


def run(config: dict[str, Any], ctx: ActionContext) -> Any:
    """Sleep for ``config.seconds`` and report how long it waited."""
    seconds = config["seconds"]
    try:
        seconds = float(seconds)
    except (TypeError, ValueError) as e:
        raise PermanentError(f"delay: seconds must be a number, got {seconds!r}") from e
    if not 0 <= seconds <= MAX_SECONDS:
        raise PermanentError(f"delay: seconds must be between 0 and {MAX_SECONDS}, got {seconds}")
    started = time.monotonic()
    time.sleep(seconds)
    return {"waited_seconds": round(time.monotonic() - started, 3)}


ACTION = Action(
    name="delay",
    spec=ActionSpec(required={"seconds": float}, check=check),
    run=run,
    examples=({"seconds": 0}, {"seconds": 0.01}, {"seconds": "{{ input.wait }}"}),
    bad=(
        ({"seconds": "soon"}, "must be a number"),
        ({"seconds": -1}, "between 0 and 86400"),
        ({"seconds": 90000}, "between 0 and 86400"),
    ),
)
