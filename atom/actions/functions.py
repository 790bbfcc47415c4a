"""Functions that the ``python`` action may call, registered by name.

ATOM never runs source code sent in a request. Teams write ordinary Python modules::

    from atom.actions.functions import function

    @function("score_lead")
    def score_lead(email: str, revenue: float = 0) -> dict:
        return {"email": email, "score": min(100, revenue / 1000)}

and make them known to workers either by listing the module in ``ATOM_FUNCTION_MODULES``
(comma-separated) or through the ``atom.functions`` entry-point group of an installed
package. A workflow then names the function: ``{"action_type": "python",
"function": "score_lead", "kwargs": {"email": "{{ input.email }}"}}``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "atom.functions"

_REGISTRY: dict[str, Callable[..., Any]] = {}
_SCOPES: dict[str, frozenset[str]] = {}
"""Functions registered with ``tenants=``: the tenant names that may call them."""


def function(
    name: str, tenants: Iterable[str] | None = None
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` under ``name`` for the ``python`` action.

    ``tenants`` (names) limits who may call it; other tenants' steps are told no function
    of that name exists. Without it the function is shared by every tenant of the platform.
    """

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not fn:
            raise ValueError(
                f"a function is already registered as {name!r}: "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        _REGISTRY[name] = fn
        if tenants is not None:
            _SCOPES[name] = frozenset(tenants)
        return fn

    return register


def load(modules: Iterable[str]) -> dict[str, Callable[..., Any]]:
    """Import the configured modules and entry points; return the registry."""
    for module in modules:
        importlib.import_module(module)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        if callable(loaded) and entry.name not in _REGISTRY:
            _REGISTRY[entry.name] = loaded
    logger.info("python action functions: %s", ", ".join(sorted(_REGISTRY)) or "none")
    return _REGISTRY


def _visible(name: str, tenant: str | None) -> bool:
    scope = _SCOPES.get(name)
    return scope is None or (tenant is not None and tenant in scope)


def lookup(name: str, tenant: str | None = None) -> Callable[..., Any] | None:
    """The function registered as ``name`` that ``tenant`` may call, or None."""
    return _REGISTRY.get(name) if _visible(name, tenant) else None


def names(tenant: str | None = None) -> list[str]:
    """Every registered name ``tenant`` may call."""
    return sorted(n for n in _REGISTRY if _visible(n, tenant))
