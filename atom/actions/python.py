"""``python``: call a function registered by name (``atom.actions.functions``), never code
sent in a request."""

from __future__ import annotations

from typing import Any

from atom.actions import functions
from atom.actions.base import Action, ActionContext, ActionSpec
from atom.errors import PermanentError


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


ACTION = Action(
    name="python",
    spec=ActionSpec(required={"function": str}, optional={"args": list, "kwargs": dict}),
    run=run,
    examples=({"function": "score"}, {"function": "score", "args": [1], "kwargs": {"a": 2}}),
    bad=(
        ({"function": 3}, "must be a string"),
        ({"function": "f", "args": {"a": 1}}, "must be a list"),
        ({"function": "f", "code": "import os"}, "is not a setting"),
    ),
)
