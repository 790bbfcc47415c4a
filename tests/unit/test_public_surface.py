"""``atom``'s public surface is explicit (``__all__``), pinned here, and loads lazily."""

from __future__ import annotations

import atom
from tests.unit.test_architecture import loaded_after

SURFACE = [
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


def test_the_public_surface_is_pinned():
    assert atom.__all__ == SURFACE
    assert sorted(atom._SURFACE) == SURFACE


def test_every_public_name_resolves_to_its_home():
    from atom.client import Client
    from atom.errors import PermanentError
    from atom.workflow.definition import parse_definition

    for name in SURFACE:
        assert getattr(atom, name) is not None, name
    assert atom.Client is Client
    assert atom.PermanentError is PermanentError
    assert atom.parse_definition is parse_definition
    plan = atom.compile_plan(
        atom.parse_definition(
            {
                "name": "surface",
                "nodes": [
                    {"id": "t", "type": "trigger", "config": {"kind": "manual"}},
                    {"id": "a", "type": "action", "config": {"action_type": "log", "message": 1}},
                ],
                "connections": [{"source": "t", "target": "a"}],
            }
        )
    )
    assert plan["steps"] == 1


def test_an_unknown_name_is_an_attribute_error():
    try:
        atom.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("atom.no_such_thing resolved")


def test_importing_atom_loads_nothing_of_the_surface():
    assert loaded_after(["atom"], ["requests", "jinja2", "sqlalchemy", "atom"]) == ["atom"]
