"""ATOM, the core library: what a program using ATOM may import from ``atom`` directly.

The names load on first use (PEP 562), so ``import atom`` (which every ``atom.x`` import
runs first) loads nothing more: the pure workflow core stays free of HTTP and database code.
Everything else lives in the subpackages (README, "Layout") and may move between releases.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_SURFACE = {
    # talking to an ATOM server
    "Client": "atom.client",
    "ApiError": "atom.client",
    "Settings": "atom.config",
    # workflow definitions, validated and compiled without a server
    "Definition": "atom.workflow.definition",
    "parse_definition": "atom.workflow.definition",
    "compile_plan": "atom.workflow.compiler",
    # functions the python action may call, and how a step fails
    "function": "atom.actions.functions",
    "AtomError": "atom.errors",
    "DefinitionError": "atom.errors",
    "Problem": "atom.errors",
    "ExecutionError": "atom.errors",
    "RetryableError": "atom.errors",
    "PermanentError": "atom.errors",
}

__all__ = [
    "ApiError",
    "AtomError",
    "Client",
    "Definition",
    "DefinitionError",
    "ExecutionError",
    "PermanentError",
    "Problem",
    "RetryableError",
    "Settings",
    "compile_plan",
    "function",
    "parse_definition",
]

if TYPE_CHECKING:
    from atom.actions.functions import function
    from atom.client import ApiError, Client
    from atom.config import Settings
    from atom.errors import (
        AtomError,
        DefinitionError,
        ExecutionError,
        PermanentError,
        Problem,
        RetryableError,
    )
    from atom.workflow.compiler import compile_plan
    from atom.workflow.definition import Definition, parse_definition


def __getattr__(name: str) -> Any:
    module = _SURFACE.get(name)
    if module is None:
        raise AttributeError(f"module 'atom' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
