"""Bodies and queries checked at the door, for every endpoint: a body not declared JSON is a
415 naming the expected type, a body that is not valid JSON a 400 saying where it breaks, and
input PostgreSQL cannot store a 422 instead of a 500 later.

Python's JSON parser accepts ``NaN`` and ``Infinity`` (JSONB does not), strings may carry NUL
or lone surrogates (neither text nor JSONB columns take them), and nesting or numbers past
the parser's own limits raise errors that are not decode errors. Every JSON body and query
string is checked once, for every endpoint: after the API key when the endpoint needs one
(``api.context.require``), else in a ``before_request`` hook installed after the one that
starts the request clock (so a refusal is logged and counted like any answer).

The same check applies the body limit of the endpoint, before anything reads the body: a
webhook takes ``ATOM_WEBHOOK_MAX_BYTES``, model work (a view marked ``@model_work``: anomaly
detection, decisions, model declare and train) ``ATOM_ML_MAX_BODY``, everything else
``ATOM_MAX_REQUEST_BYTES``; a larger body is a 413 naming the limit and the variable.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from flask import Flask, current_app, request
from flask_smorest import abort

from atom.config import Settings
from atom.errors import InvalidInput, PayloadTooLarge

MAX_PAGE = 1_000_000
AUTHENTICATED = "_atom_authenticated"
"""Set on a view by ``api.context.require``: the check runs there, after the key."""
MODEL_WORK = "_atom_model_work"
"""Set on a view by ``model_work``: its body may be up to ``ATOM_ML_MAX_BODY``."""

View = TypeVar("View", bound=Callable[..., Any])


def model_work(view: View) -> View:
    """Decorator: the view does model work; its request body may be up to ATOM_ML_MAX_BODY."""
    setattr(view, MODEL_WORK, True)
    return view


def _no_constant(name: str) -> Any:
    raise InvalidInput({"body": [f"{name} is not JSON (JSON numbers are finite)"]})


def _bad_text(value: str) -> str | None:
    if "\x00" in value:
        return "must not contain NUL characters"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return "must not contain lone surrogate characters"
    return None


def _walk(value: Any, where: str, problems: dict[str, list[str]]) -> None:
    if isinstance(value, str):
        if reason := _bad_text(value):
            problems.setdefault(where, []).append(reason)
    elif isinstance(value, dict):
        for key, item in value.items():
            if reason := _bad_text(key):
                problems.setdefault(where, []).append(f"a key {reason}")
            _walk(item, f"{where}.{key}", problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{where}[{i}]", problems)


JSON_TYPE = "application/json"


def _is_json(mimetype: str) -> bool:
    return mimetype == JSON_TYPE or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


def check_content_type(webhook: bool) -> None:
    """A body in anything but JSON is a 415 naming the expected type (webargs would otherwise
    read it as an empty document and answer "name is required"). A webhook's sender is not
    ours to configure: its body is read as JSON whatever it says it is."""
    if webhook or request.method not in ("POST", "PUT", "PATCH") or _is_json(request.mimetype):
        return
    if request.content_length == 0 or not request.get_data(cache=True).strip():
        return  # no body: nothing to misread
    given = request.headers.get("Content-Type")
    said = f"the request said {given!r}" if given else "the request had no Content-Type header"
    abort(415, message=f"The body must be JSON with 'Content-Type: {JSON_TYPE}'; {said}.")


def not_json(error: json.JSONDecodeError) -> NoReturn:
    """Abort with a 400 that says where the body stops being JSON (line, column, character)."""
    where = f"line {error.lineno}, column {error.colno}"
    abort(
        400,
        message=f"The body is not valid JSON: {error.msg} at {where}.",
        messages={"json": [f"{error.msg} at {where} (character {error.pos})"]},
    )
    raise AssertionError("abort raises")  # pragma: no cover


def body_limit(settings: Settings, app: Flask | None = None) -> tuple[int, str]:
    """The largest body this request may carry, and the variable that sets it."""
    if request.path.startswith("/api/hooks/"):
        return settings.webhook_max_bytes, "ATOM_WEBHOOK_MAX_BYTES"
    if getattr(_view(app or current_app), MODEL_WORK, False):
        return settings.ml_max_body, "ATOM_ML_MAX_BODY"
    return settings.max_request_bytes, "ATOM_MAX_REQUEST_BYTES"


def _check_size(settings: Settings) -> None:
    limit, variable = body_limit(settings)
    request.max_content_length = limit  # before anything reads the body (a chunked one too)
    size = request.content_length
    if size is not None and size > limit:
        raise PayloadTooLarge(
            f"The request body is {size} bytes; this endpoint takes at most {limit} bytes "
            f"({variable})."
        )
    if size is None and request.method in ("POST", "PUT", "PATCH"):
        # Chunked: werkzeug stops reading at the limit, and the cut body would read as
        # invalid JSON (a 400 that hides the cause). A chunked body of exactly the limit is
        # refused too: the cut cannot be told from the end.
        if len(request.get_data(cache=True)) >= limit:
            raise PayloadTooLarge(
                f"The request body is over the limit; this endpoint takes at most {limit} "
                f"bytes ({variable})."
            )


def check_request(settings: Settings) -> None:
    """Raise PayloadTooLarge for a body over the endpoint's limit; abort for a body that is
    not JSON (415) or not valid JSON (400, with line and column); raise InvalidInput for a
    query or JSON body that could not be stored."""
    _check_size(settings)
    check_content_type(request.path.startswith("/api/hooks/"))
    problems: dict[str, list[str]] = {}
    for key, value in request.args.items(multi=True):
        if reason := _bad_text(value):
            problems.setdefault(key, []).append(reason)
    page = request.args.get("page", "")
    if page.isdigit() and int(page) > MAX_PAGE:
        problems.setdefault("page", []).append(f"must be at most {MAX_PAGE}")
    if request.method in ("POST", "PUT", "PATCH") and request.content_length != 0:
        raw = request.get_data(cache=True)
        if raw.strip():
            try:
                document = json.loads(raw, parse_constant=_no_constant)
            except json.JSONDecodeError as e:
                not_json(e)
            except (RecursionError, ValueError) as e:
                raise InvalidInput(
                    {"body": [f"cannot be read: {type(e).__name__}: {str(e)[:120]}"]}
                ) from e
            _walk(document, "body", problems)
    if problems:
        raise InvalidInput(problems)


def _view(app: Flask) -> Any:
    """The function answering this request (a MethodView's method for its HTTP method)."""
    view = app.view_functions.get(request.endpoint or "")
    owner = getattr(view, "view_class", None)
    if owner is not None:
        method = request.method.lower()
        view = getattr(owner, method, None) or (
            getattr(owner, "get", None) if method == "head" else None
        )
    return view


def authenticates(app: Flask) -> bool:
    """Whether the view answering this request needs an API key (``api.context.require``)."""
    return bool(getattr(_view(app), AUTHENTICATED, False))


def install(app: Flask, settings: Settings) -> None:
    """Run the check on every request of ``app``: here for a public endpoint, and after the
    API key for one that needs a key (a stranger learns nothing about what a body holds)."""

    def check() -> None:
        if not authenticates(app):
            check_request(settings)

    app.before_request(check)
