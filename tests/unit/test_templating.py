"""Templates render in a sandbox, keep a single expression's type, fail as PermanentError."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from atom.errors import ExecutionError, PermanentError
from atom.workflow.templating import evaluate, expression_error, render, syntax_errors

CONTEXT = {
    "input": {
        "n": 3,
        "amount": 150,
        "name": "Ada",
        "order": {"id": 7, "lines": [1, 2]},
        "tags": ["a", "b"],
        "flag": False,
    },
    "steps": {
        "fetch": {"output": {"body": {"id": 42, "items": [{"sku": "x"}]}}, "status": "succeeded"}
    },
}


@pytest.mark.parametrize(
    "template, expected",
    [
        ("{{ input.n }}", 3),
        ("  {{ input.n }}\n", 3),
        ("{{ input.n + 1 }}", 4),
        ("{{ input.amount / 2 }}", 75.0),
        ("{{ input.flag }}", False),
        ("{{ input.order }}", {"id": 7, "lines": [1, 2]}),
        ("{{ input.tags }}", ["a", "b"]),
        ("{{ none }}", None),
        ("{{ {'n': input.n} }}", {"n": 3}),
    ],
)
def test_a_single_expression_keeps_its_type(template, expected):
    value = render(template, CONTEXT)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "template, expected",
    [
        ("n={{ input.n }}", "n=3"),
        ("{{ input.n }}{{ input.n }}", "33"),
        ("{{ input.n }} and {{ input.name }}", "3 and Ada"),
        ("{% if input.amount > 100 %}big{% else %}small{% endif %}", "big"),
        ("Hello {{ input.name | upper }}!", "Hello ADA!"),
    ],
)
def test_mixed_text_renders_a_string(template, expected):
    assert render(template, CONTEXT) == expected


def test_plain_values_pass_through():
    for value in ("no template here", 5, 2.5, True, None, "{ not: a template }"):
        assert render(value, CONTEXT) == value


def test_nested_dicts_and_lists_render_leaf_by_leaf():
    config = {
        "url": "https://x.example.test/orders/{{ input.order.id }}",
        "json": {
            "count": "{{ input.n }}",
            "lines": ["{{ input.order.lines }}", "literal", 9],
            "deep": [{"who": "{{ input.name }}"}],
        },
        "retries": 2,
    }
    assert render(config, CONTEXT) == {
        "url": "https://x.example.test/orders/7",
        "json": {"count": 3, "lines": [[1, 2], "literal", 9], "deep": [{"who": "Ada"}]},
        "retries": 2,
    }


def test_step_outputs_are_in_scope():
    assert render("{{ steps.fetch.output.body.id }}", CONTEXT) == 42
    assert render("{{ steps.fetch.output.body['items'][0].sku }}", CONTEXT) == "x"
    assert render("{{ steps.fetch.status }}", CONTEXT) == "succeeded"


@pytest.mark.parametrize(
    "template",
    [
        "{{ input.missing }}",
        "{{ nothing }}",
        "total: {{ nothing }}",
        "{{ steps.never_ran.output }}",
    ],
)
def test_a_missing_variable_is_a_permanent_error_naming_the_location(template):
    with pytest.raises(PermanentError) as caught:
        render({"json": {"lines": ["ok", template]}}, CONTEXT, "nodes[post].config")
    assert str(caught.value).startswith("nodes[post].config.json.lines[1]: ")
    assert isinstance(caught.value.__cause__, UndefinedError)


def test_a_runtime_error_in_an_expression_is_permanent():
    with pytest.raises(PermanentError, match=r"^config.total: ZeroDivisionError"):
        render({"total": "{{ input.n / 0 }}"}, CONTEXT)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "text {{ ''.__class__.__mro__ }}",
        "{{ input.n.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ input.order.update({'id': 1}) }}",
    ],
)
def test_the_sandbox_refuses_python_internals(template):
    with pytest.raises(PermanentError, match="unsafe") as caught:
        render(template, CONTEXT)
    assert isinstance(caught.value.__cause__, SecurityError)
    assert isinstance(caught.value, ExecutionError)
    assert CONTEXT["input"]["order"]["id"] == 7


def test_evaluate_returns_a_bool():
    assert evaluate("input.amount > 100", CONTEXT) is True
    assert evaluate("input.amount > 1000", CONTEXT) is False
    assert evaluate("steps.fetch.status == 'succeeded' and 'a' in input.tags", CONTEXT) is True


def test_evaluate_names_the_location_of_a_missing_variable():
    with pytest.raises(PermanentError, match=r"^nodes\[big\]\.config\.expression: "):
        evaluate("input.nope > 1", CONTEXT, "nodes[big].config.expression")


def test_evaluate_refuses_python_internals():
    with pytest.raises(PermanentError, match="unsafe"):
        evaluate("input.__class__.__mro__", CONTEXT)


def test_syntax_errors_finds_every_bad_template_with_its_location():
    config = {
        "a": "{{ x ",
        "b": ["ok", "{% if %}", "{{ fine }}"],
        "c": 3,
        "d": {"e": "{{ 1 + }}"},
        "f": "not a template",
    }
    found = syntax_errors(config, "config")
    assert [location for location, _ in found] == ["config.a", "config.b[1]", "config.d.e"]
    assert all(message.startswith("template does not parse: ") for _, message in found)


def test_syntax_errors_accepts_good_templates_with_unknown_names():
    assert syntax_errors({"a": "{{ anything.at.all }}", "b": "x {{ y | upper }}"}, "c") == []


def test_expression_error():
    assert expression_error("input.amount > 100") is None
    assert expression_error("input.amount >").startswith("expression does not parse")
