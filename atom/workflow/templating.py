"""Templates and expressions, rendered in a sandboxed Jinja2 environment.

Step inputs are JSON holding templates (``{{ steps.fetch.output.body.id }}``); conditions are
bare expressions (``input.amount > 100``). Both see ``input`` (the execution's input) and
``steps.<id>.output`` / ``steps.<id>.status``. A string that is exactly one ``{{ expression }}``
keeps the value's type, so ``"{{ input.count }}"`` renders to the number, not its text.
Nothing is ever ``eval``-ed: the sandbox refuses attribute access to Python internals.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2 import nodes as ast
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from atom.errors import PermanentError

_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)

MAX_EXPONENT = 1024
MAX_REPEAT = 100_000


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with a bound on what one operator may compute.

    ``3 ** 20000000 ** 2`` or ``'x' * 10 ** 9`` would hold a worker (and the GIL, so its
    heartbeat) for as long as it takes; both are refused instead.
    """

    intercepted_binops = frozenset(["**", "*"])

    def call_binop(self, context, operator, left, right):  # see class docstring
        if operator == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is over {MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_REPEAT
                ):
                    raise SecurityError(f"a repeated sequence would be over {MAX_REPEAT} items")
        return super().call_binop(context, operator, left, right)


_ENV = _BoundedSandbox(undefined=StrictUndefined, autoescape=False)


@lru_cache(maxsize=4096)
def _template(source: str):
    return _ENV.from_string(source)


@lru_cache(maxsize=4096)
def _expression(source: str):
    return _ENV.compile_expression(source, undefined_to_none=False)


def _is_template(value: str) -> bool:
    return "{{" in value or "{%" in value


_COMPILE_ERRORS = (TemplateError, RecursionError, ValueError, OverflowError, MemoryError)
"""What compiling a template can raise: deep nesting and huge literals are not TemplateErrors."""


def _single_expression(value: str) -> str | None:
    """The expression of a string that is exactly one ``{{ expression }}``, else None."""
    match = _SINGLE_EXPRESSION.match(value)
    if match is None:
        return None
    try:  # "{{ a }} and {{ b }}" also matches the pattern but is no single expression
        _expression(match.group("expr"))
    except _COMPILE_ERRORS:
        return None
    return match.group("expr")


def _evaluate_compiled(source: str, context: dict, where: str) -> Any:
    try:
        value = _expression(source)(**context)
    except TemplateError as e:
        raise PermanentError(f"{where}: {e}") from e
    except (TypeError, ValueError, ArithmeticError, LookupError, RecursionError, MemoryError) as e:
        raise PermanentError(f"{where}: {type(e).__name__}: {e}"[:500]) from e
    if isinstance(value, Undefined):
        # StrictUndefined raises only when used; a bare missing value must fail too.
        try:
            str(value)
        except TemplateError as e:
            raise PermanentError(f"{where}: {e}") from e
    return value


def render(value: Any, context: dict, where: str = "config") -> Any:
    """Render every template inside ``value`` (any JSON) against ``context``."""
    if isinstance(value, str):
        if not _is_template(value):
            return value
        single = _single_expression(value)
        if single is not None:
            return _evaluate_compiled(single, context, where)
        try:
            return _template(value).render(**context)
        except TemplateError as e:
            raise PermanentError(f"{where}: {e}") from e
        except (TypeError, ValueError, ArithmeticError, LookupError) as e:
            raise PermanentError(f"{where}: {type(e).__name__}: {e}") from e
    if isinstance(value, dict):
        return {k: render(v, context, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, context, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def evaluate(expression: str, context: dict, where: str = "expression") -> Any:
    """Evaluate a bare expression (a condition), e.g. ``input.amount > 100``."""
    return _evaluate_compiled(expression, context, where)


def syntax_errors(value: Any, where: str) -> list[tuple[str, str]]:
    """(location, message) for every template inside ``value`` that does not parse."""
    found: list[tuple[str, str]] = []
    if isinstance(value, str) and _is_template(value):
        try:
            if _single_expression(value) is None:
                _template(value)
        except _COMPILE_ERRORS as e:
            found.append((where, f"template does not parse: {type(e).__name__}: {e}"[:300]))
    elif isinstance(value, dict):
        for k, v in value.items():
            found.extend(syntax_errors(v, f"{where}.{k}"))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.extend(syntax_errors(v, f"{where}[{i}]"))
    return found


def expression_error(expression: str) -> str | None:
    """Why ``expression`` does not parse, or None when it does."""
    try:
        _expression(expression)
    except _COMPILE_ERRORS as e:
        return f"expression does not parse: {type(e).__name__}: {e}"[:300]
    return None


def _reads(tree: Any) -> tuple[tuple[str, ...], bool]:
    """The step ids one syntax tree reads as ``steps.X`` / ``steps['X']`` (in order, once),
    and whether it also uses ``steps`` in a way that names no fixed id (``steps[input.k]``,
    a loop over ``steps``, ``steps`` passed whole)."""
    found: list[str] = []
    resolved: set[int] = set()
    dynamic = False
    for node in tree.find_all((ast.Getattr, ast.Getitem)):
        owner = node.node
        if not (isinstance(owner, ast.Name) and owner.name == "steps"):
            continue
        resolved.add(id(owner))
        if isinstance(node, ast.Getattr):
            found.append(node.attr)
        elif isinstance(node.arg, ast.Const) and isinstance(node.arg.value, str):
            found.append(node.arg.value)
        else:
            dynamic = True
    dynamic = dynamic or any(
        name.name == "steps" and id(name) not in resolved for name in tree.find_all(ast.Name)
    )
    return tuple(dict.fromkeys(found)), dynamic


@lru_cache(maxsize=4096)
def _steps_read(source: str) -> tuple[str, ...]:
    """The step ids a template reads by a fixed id (in order, once)."""
    try:
        tree = _ENV.parse(source)
    except _COMPILE_ERRORS:
        return ()  # syntax_errors reports it
    return _reads(tree)[0]


def step_references(value: Any, where: str) -> list[tuple[str, str, str]]:
    """``(location, template, step id)`` for every step a template inside ``value`` reads."""
    found: list[tuple[str, str, str]] = []
    if isinstance(value, str) and _is_template(value):
        found.extend((where, value, step) for step in _steps_read(value))
    elif isinstance(value, dict):
        for k, v in value.items():
            found.extend(step_references(v, f"{where}.{k}"))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found.extend(step_references(v, f"{where}[{i}]"))
    return found


def expression_step_references(expression: str) -> tuple[str, ...]:
    """The step ids a bare expression (a condition) reads."""
    return _steps_read("{{ " + expression + " }}")


def _parse_all(value: Any, found: list[Any]) -> None:
    """Jinja2 syntax trees of every template inside ``value`` (an unparsable one is skipped:
    validation has refused it already)."""
    if isinstance(value, str) and _is_template(value):
        single = _single_expression(value)
        source = "{{ " + single + " }}" if single is not None else value
        try:
            found.append(_ENV.parse(source))
        except _COMPILE_ERRORS:
            return
    elif isinstance(value, dict):
        for v in value.values():
            _parse_all(v, found)
    elif isinstance(value, list):
        for v in value:
            _parse_all(v, found)


def steps_needed(value: Any, expression: str | None = None) -> frozenset[str] | None:
    """The ids of the steps whose output (or status) the templates inside ``value`` and the
    bare ``expression`` (a condition's) read: what a step needs from the steps before it.

    None means "any step": ``steps`` is used in a way that names no fixed id, so the reader
    must be assumed to depend on every step before it.
    """
    trees: list[Any] = []
    _parse_all(value, trees)
    if expression is not None:
        try:
            trees.append(_ENV.parse("{{ " + expression + " }}"))
        except _COMPILE_ERRORS:
            pass
    read: set[str] = set()
    for tree in trees:
        found, dynamic = _reads(tree)
        if dynamic:
            return None
        read.update(found)
    return frozenset(read)
