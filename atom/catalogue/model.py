"""The catalogue's typed model: services, their triggers and actions, and how an action
becomes a workflow step (an ``http_request`` with auth from a credential reference, or one
of ATOM's own actions)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from atom.catalogue.events import trigger_fields

PATH_PARAM = re.compile(r"\{(\w+)\}")
AUTH_TYPES = ("oauth2", "api_key", "bearer", "basic", "none")
ATOM = "ATOM"
"""The method word that marks an action as one of ATOM's own (log, delay, transform)."""


def _title(key: str) -> str:
    return key.replace("_", " ").capitalize()


@dataclass(frozen=True)
class Auth:
    """How a service authenticates: the type, and the header the key travels in if its own."""

    type: str
    header: str | None = None

    def headers(self, slug: str) -> dict[str, str]:
        """The request headers, referencing the tenant's credential for ``slug``."""
        secret = "{{ credentials.%s }}" % slug  # noqa: UP031 (braces would need doubling)
        if self.type == "none":
            return {}
        if self.header:
            return {self.header: secret}
        if self.type == "basic":
            return {"Authorization": f"Basic {secret}"}
        return {"Authorization": f"Bearer {secret}"}


@dataclass(frozen=True)
class Trigger:
    """An event a service emits; a workflow on it gets ``event_type`` ``<slug>.<key>``."""

    key: str
    name: str
    description: str
    fields: tuple[str, ...]
    """What the event's payload carries (the workflow sees it as ``input``)."""


@dataclass(frozen=True)
class Operation:
    """An action a service offers, and the step it becomes."""

    key: str
    name: str
    description: str
    method: str
    path: str
    params: dict[str, Any]

    @property
    def atom_action(self) -> str | None:
        """The ATOM action type when the step is one of ATOM's own, else None."""
        return self.path if self.method == ATOM else None

    def param_names(self) -> list[str]:
        """The parameters a caller may give (top-level keys of the template)."""
        return list(self.params)

    def asks(self) -> list[str]:
        """The parameters the user has to give (no default, nothing in the data to use)."""
        return [k for k, v in _walk_leaves(self.params) if isinstance(v, str) and v[:1] == "="]


def _walk_leaves(value: Any, key: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in _walk_leaves(v, k)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _walk_leaves(v, key)]
    return [(value[1:] if isinstance(value, str) and value[:1] == "=" else key, value)]


@dataclass(frozen=True)
class Service:
    """One entry of the catalogue."""

    slug: str
    name: str
    category: str
    aliases: tuple[str, ...]
    auth: Auth
    base_url: str
    triggers: dict[str, Trigger] = field(default_factory=dict)
    actions: dict[str, Operation] = field(default_factory=dict)
    strict: bool = False
    """Its name is a common word: it matches only when written with a capital letter."""

    def view(self) -> dict[str, Any]:
        """The JSON shape of ``GET /api/services``."""
        return {
            "slug": self.slug,
            "name": self.name,
            "category": self.category,
            "aliases": list(self.aliases),
            "triggers": [
                {
                    "key": t.key,
                    "name": t.name,
                    "description": t.description,
                    "fields": list(t.fields),
                }
                for t in self.triggers.values()
            ],
            "actions": [
                {
                    "key": a.key,
                    "name": a.name,
                    "description": a.description,
                    "params": a.param_names(),
                    "step": "http_request" if a.atom_action is None else a.atom_action,
                }
                for a in self.actions.values()
            ],
            "auth": {"type": self.auth.type},
        }


def _fill(value: Any, data: dict[str, Any], given: dict[str, Any], asked: list[str]) -> Any:
    """Replace ``$role`` with the data's template for it and ``=name`` with what the user gave
    (or a visible placeholder, recorded in ``asked``)."""
    if isinstance(value, dict):
        return {k: _fill(v, data, given, asked) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, data, given, asked) for v in value]
    if isinstance(value, str) and value[:1] == "$":
        return data.get(value[1:], "")
    if isinstance(value, str) and value[:1] == "=":
        name = value[1:]
        if name in given:
            return given[name]
        asked.append(name)
        return f"<{name}>"
    return value


def _path_value(value: Any) -> str:
    text = str(value)
    return text if "{{" in text else quote(text, safe="@:()!$,;=+-._~<>")


def build_step(
    service: Service,
    operation: Operation,
    data: dict[str, Any],
    given: dict[str, Any] | None = None,
    base_url: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The node config an action becomes, and the parameters still to ask the user.

    ``data`` maps roles (title, text, to, ...) to values or templates; ``given`` holds the
    user's own parameter values; ``base_url`` replaces the service's (tests point it at a
    loopback server).
    """
    asked: list[str] = []
    params = _fill(operation.params, data, given or {}, asked)
    if operation.atom_action is not None:
        return {"action_type": operation.atom_action, **params}, asked
    path = operation.path
    for name in PATH_PARAM.findall(path):
        path = path.replace("{%s}" % name, _path_value(params.pop(name, "")))  # noqa: UP031
    config: dict[str, Any] = {
        "action_type": "http_request",
        "method": operation.method,
        "url": (base_url or service.base_url).rstrip("/") + path,
    }
    headers = service.auth.headers(service.slug)
    if headers:
        config["headers"] = headers
    if params:
        config["params" if operation.method == "GET" else "json"] = params
    return config, asked


def make_trigger(key: str, names: dict[str, str]) -> Trigger:
    """A trigger from its key; the name comes from ``names`` or the key itself."""
    name = names.get(key, _title(key))
    return Trigger(key=key, name=name, description=name, fields=trigger_fields(key))


def make_operation(key: str, spec: list[Any], service_name: str) -> Operation:
    """An operation from its catalogue entry ``[method, path, params]``."""
    method, path, params = spec
    name = _title(key)
    return Operation(
        key=key,
        name=name,
        description=f"{name} in {service_name}",
        method=str(method).upper() if method != ATOM else ATOM,
        path=str(path),
        params=dict(params or {}),
    )
