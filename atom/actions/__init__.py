"""What each action type accepts in its ``config``: the validation half of an action.

The handlers that run an action live in ``workers/actions/``; this module only says which
keys an action takes and of what JSON type, so the API can reject a bad definition without
loading worker code. A string holding a template (``{{ ... }}``) is accepted wherever a
value is, because its type is known only when it renders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from atom.errors import Problem

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

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


def _is_type(value: Any, kind: type) -> bool:
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
            if kind is not None and not is_template(value) and not _is_type(value, kind):
                problems.append(Problem(f"{where}.{key}", f"must be {_TYPE_NAMES[kind]}", node))
        for key in config:
            if key not in known:
                problems.append(Problem(f"{where}.{key}", "is not a setting of this action", node))
        if self.check and not problems:
            problems.extend(Problem(where, msg, node) for msg in self.check(config, where))
        return problems


def _check_http(config: dict, where: str) -> list[str]:
    errors = []
    method = config.get("method", "GET")
    if not is_template(method) and str(method).upper() not in HTTP_METHODS:
        errors.append(f"method must be one of {', '.join(HTTP_METHODS)}, not {method!r}")
    url = config["url"]
    if not is_template(url) and not url.lower().startswith(("http://", "https://")):
        errors.append(f"url must start with http:// or https://, not {url!r}")
    timeout = config.get("timeout")
    if _is_type(timeout, float) and not 0 < timeout <= 300:
        errors.append("timeout must be between 0 and 300 seconds")
    return errors


def _check_delay(config: dict, where: str) -> list[str]:
    seconds = config["seconds"]
    if _is_type(seconds, float) and not 0 <= seconds <= 86400:
        return ["seconds must be between 0 and 86400"]
    return []


def _check_log(config: dict, where: str) -> list[str]:
    level = config.get("level", "info")
    if str(level).lower() not in {"debug", "info", "warning", "error"}:
        return ["level must be one of debug, info, warning, error"]
    return []


ACTIONS: dict[str, ActionSpec] = {
    "http_request": ActionSpec(
        required={"url": str},
        optional={"method": str, "headers": dict, "params": dict, "json": None, "timeout": float},
        check=_check_http,
    ),
    "transform": ActionSpec(required={"output": None}),
    "delay": ActionSpec(required={"seconds": float}, check=_check_delay),
    "log": ActionSpec(required={"message": None}, optional={"level": str}, check=_check_log),
    "python": ActionSpec(required={"function": str}, optional={"args": list, "kwargs": dict}),
    "decision": ActionSpec(required={"context": dict}, optional={"model": str, "actions": list}),
}
"""Every action type a definition may name, by ``config.action_type``."""
