"""What every action module provides: the spec of its ``config`` and the handler that runs it.

A spec says which keys an action takes and of what JSON type, so the API can reject a bad
definition without loading what the handler needs (those imports stay inside the handler).
A string holding a template (``{{ ... }}``) is accepted wherever a value is, because its type
is known only when it renders. A handler takes the step's rendered config and an
:class:`ActionContext` and returns the step's output (any JSON); it raises RetryableError or
PermanentError (``atom.errors``) to fail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atom.errors import Problem

if TYPE_CHECKING:
    from atom.config import Settings

_TYPE_NAMES = {
    str: "a string",
    dict: "an object",
    list: "a list",
    bool: "true or false",
    float: "a number",
}


def is_template(value: Any) -> bool:
    """True for a string that holds a Jinja2 expression or statement."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def is_type(value: Any, kind: type) -> bool:
    """True when ``value`` is a JSON value of ``kind`` (``float`` means any number)."""
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind)


@dataclass(frozen=True)
class ActionSpec:
    """The keys an action's config takes: required and optional, each with its JSON type.

    ``None`` as a type means any JSON value. ``check`` adds rules beyond types.
    """

    required: dict[str, type | None]
    optional: dict[str, type | None] = field(default_factory=dict)
    check: Callable[[dict, str], list[str]] | None = None

    def validate(self, config: dict, where: str, node: str) -> list[Problem]:
        """Every problem with ``config``, located under ``where``."""
        problems = []
        known = {"action_type", "description", *self.required, *self.optional}
        for key, kind in {**self.required, **self.optional}.items():
            if key not in config:
                if key in self.required:
                    problems.append(Problem(f"{where}.{key}", "is required", node))
                continue
            value = config[key]
            if kind is not None and not is_template(value) and not is_type(value, kind):
                problems.append(Problem(f"{where}.{key}", f"must be {_TYPE_NAMES[kind]}", node))
        for key in config:
            if key not in known:
                problems.append(Problem(f"{where}.{key}", "is not a setting of this action", node))
        if self.check and not problems:
            problems.extend(Problem(where, msg, node) for msg in self.check(config, where))
        return problems


@dataclass(frozen=True)
class ActionContext:
    """What a handler may know about the step it runs."""

    execution_id: str
    node_id: str
    attempt: int
    settings: Settings
    timeout: float | None = None
    tenant: str = ""
    """The name of the tenant whose execution this is."""
    credentials: Mapping[str, Any] = field(default_factory=dict)
    """The decrypted vault values the step's config names (``credential: NAME``)."""
    email_domains: tuple[str, ...] = ()
    """The tenant's ``email_allowed_domains``."""

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and redeliveries of the same step of the same execution."""
        return f"{self.execution_id}:{self.node_id}"


Handler = Callable[[dict[str, Any], ActionContext], Any]


@dataclass(frozen=True)
class Action:
    """One action type: its name, its config spec and its handler, declared together.

    ``examples`` are configs the spec accepts; ``bad`` maps a config the spec refuses to a
    phrase the problem must contain. The contract test runs both against every action.
    """

    name: str
    spec: ActionSpec
    run: Handler
    examples: tuple[dict[str, Any], ...] = ()
    bad: tuple[tuple[dict[str, Any], str], ...] = ()
