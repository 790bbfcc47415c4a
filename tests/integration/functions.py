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


SCOPED_TENANT = "security-tests-scoped"


@function("scoped_answer", tenants=[SCOPED_TENANT])
def scoped_answer() -> dict:
    """Callable only by the tenant named SCOPED_TENANT."""
    return {"answer": 42}
