"""Actions: one module per action type, each declaring its config spec and its handler
together (an :class:`~atom.actions.base.Action`); this package keeps the registry.

Adding an action is one module here and one line in :data:`REGISTRY`; the contract test
(``tests/unit/test_actions.py``) runs against every registered action. Importing this package
loads no handler dependency (``requests`` loads when an HTTP step runs), so the pure workflow
core may validate definitions with it.
"""

from __future__ import annotations

from atom.actions import (
    database_query,
    decision,
    delay,
    email,
    http_request,
    log,
    python,
    transform,
)
from atom.actions.base import Action, ActionContext, ActionSpec, Handler, is_template

REGISTRY: dict[str, Action] = {
    action.name: action
    for action in (
        http_request.ACTION,
        transform.ACTION,
        delay.ACTION,
        log.ACTION,
        python.ACTION,
        database_query.ACTION,
        email.ACTION,
        decision.ACTION,
    )
}
"""Every action type a definition may name, by ``config.action_type``."""

ACTIONS: dict[str, ActionSpec] = {name: action.spec for name, action in REGISTRY.items()}
"""The config spec of every action type (what definitions are validated against)."""

HTTP_METHODS = http_request.HTTP_METHODS


def handlers() -> dict[str, Handler]:
    """Every action type's handler, by ``action_type``."""
    return {name: action.run for name, action in REGISTRY.items()}


__all__ = [
    "ACTIONS",
    "HTTP_METHODS",
    "REGISTRY",
    "Action",
    "ActionContext",
    "ActionSpec",
    "Handler",
    "handlers",
    "is_template",
]
