"""The action contract, run against every registered action: one module declares the spec and
the handler, the spec accepts its examples and refuses bad config with a named problem, and
the registry holds every action module (``tests/integration/test_actions_live.py`` runs each
handler on a real worker)."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import pytest

import atom.actions
from atom.actions import ACTIONS, REGISTRY, Action, handlers
from atom.workflow.definition import parse_definition

NAMES = sorted(REGISTRY)
SUPPORT = {"base", "functions", "http_cache"}  # modules of the package that are not actions


def test_every_action_module_is_registered_once():
    folder = Path(atom.actions.__file__).parent
    modules = {info.name for info in pkgutil.iter_modules([str(folder)])} - SUPPORT
    declared = {}
    for module in modules:
        action = __import__(f"atom.actions.{module}", fromlist=["ACTION"]).ACTION
        assert isinstance(action, Action), module
        declared[action.name] = action
    assert declared == REGISTRY
    assert set(ACTIONS) == set(handlers()) == set(REGISTRY)


@pytest.mark.parametrize("name", NAMES)
def test_spec_and_handler_live_in_one_module(name):
    action = REGISTRY[name]
    assert ACTIONS[name] is action.spec
    assert handlers()[name] is action.run
    assert action.run.__module__ == f"atom.actions.{name}"


@pytest.mark.parametrize("name", NAMES)
def test_the_spec_accepts_every_example(name):
    action = REGISTRY[name]
    assert len(action.examples) >= 1
    for example in action.examples:
        assert action.spec.validate(example, "nodes[0].config", "n") == [], example


@pytest.mark.parametrize("name", NAMES)
def test_the_spec_refuses_bad_config_with_a_named_problem(name):
    action = REGISTRY[name]
    assert len(action.bad) >= 2
    for config, phrase in action.bad:
        problems = action.spec.validate(config, "nodes[0].config", "n")
        assert problems, config
        assert any(phrase in p.message for p in problems), (config, problems)
        assert all(p.location.startswith("nodes[0].config") and p.node == "n" for p in problems)


@pytest.mark.parametrize("name", NAMES)
def test_an_unknown_setting_is_named(name):
    action = REGISTRY[name]
    config = {**action.examples[0], "no_such_setting": 1}
    problems = action.spec.validate(config, "c", "n")
    assert [(p.location, p.message) for p in problems] == [
        ("c.no_such_setting", "is not a setting of this action")
    ]


@pytest.mark.parametrize("name", NAMES)
def test_a_definition_using_each_example_compiles(name):
    for example in REGISTRY[name].examples:
        doc = {
            "name": "contract",
            "nodes": [
                {"id": "start", "type": "trigger", "config": {"kind": "manual"}},
                {"id": "a", "type": "action", "config": {"action_type": name, **example}},
            ],
            "connections": [{"source": "start", "target": "a"}],
        }
        assert parse_definition(doc).node("a").action_type == name
