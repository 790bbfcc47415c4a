"""``transform``: the rendered ``output`` becomes the step's output."""

from __future__ import annotations

from typing import Any

from atom.actions.base import Action, ActionContext, ActionSpec


def run(config: dict[str, Any], ctx: ActionContext) -> Any:
    """Return the already-rendered ``config.output``."""
    return config["output"]


ACTION = Action(
    name="transform",
    spec=ActionSpec(required={"output": None}),
    run=run,
    examples=({"output": {"total": "{{ input.a + input.b }}"}}, {"output": [1, "two", None]}),
    bad=(({}, "is required"), ({"output": 1, "extra": 2}, "is not a setting")),
)
