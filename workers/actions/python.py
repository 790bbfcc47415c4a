"""``python``: call a function registered by name (``atom.functions``), never request code."""

from __future__ import annotations

from typing import Any

from atom.actions import functions
from atom.errors import PermanentError
from workers.actions import ActionContext


def run(config: dict[str, Any], ctx: ActionContext) -> Any:
    """Call ``config.function`` with the rendered ``args`` and ``kwargs``; its return is the
    output (it must be JSON: dicts, lists, strings, numbers, booleans, None)."""
    name = config["function"]
    fn = functions.lookup(name, ctx.tenant)
    if fn is None:
        known = ", ".join(functions.names(ctx.tenant)) or "none"
        raise PermanentError(
            f"python: no function registered as {name!r} (registered: "
            f"{known}); list its module in ATOM_FUNCTION_MODULES"
        )
    try:
        return fn(*(config.get("args") or []), **(config.get("kwargs") or {}))
    except TypeError as e:
        raise PermanentError(f"python: {name}: {e}") from e
