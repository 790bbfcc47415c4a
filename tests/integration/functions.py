"""Functions registered for the python action in tests (listed in ATOM_FUNCTION_MODULES)."""

from __future__ import annotations

from atom.actions.functions import function


@function("add")
def add(a: float, b: float) -> dict:
    """Add two numbers."""
    return {"sum": a + b}


@function("not_json")
def not_json() -> object:
    """Return something that is not JSON."""
    return {1, 2, 3}
