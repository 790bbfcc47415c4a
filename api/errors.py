"""One JSON error shape for every failure: ``{code, status, message, errors}``."""

from __future__ import annotations

import uuid
from http import HTTPStatus
from typing import Any

from flask import Flask, current_app, jsonify, request
from flask_smorest import Api
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.routing import Map, Rule

from api import guard
from atom.errors import AtomError, Conflict, DefinitionError, InvalidInput, Unauthorized

WWW_AUTHENTICATE = 'Bearer realm="atom", ApiKey realm="atom" header="X-API-Key"'
"""The schemes a 401 offers: a bearer token, or the key in the X-API-Key header."""

# Seconds a client is told to wait when a service the API needs is down.
RETRY_AFTER_S = 5


def error_body(code: int, message: str, errors: Any = None, **extra: Any) -> dict[str, Any]:
    """The error document flask-smorest uses, always with a sentence a person can act on."""
    body: dict[str, Any] = {"code": code, "status": HTTPStatus(code).phrase, "message": message}
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    return body


class AtomApi(Api):
    """flask-smorest's Api, with a ``message`` in every HTTP error it renders, and an OpenAPI
    document as strict as the server."""

    def _register_pagination_header(self) -> None:
        # An HTTP header is a string: X-Pagination holds the metadata serialized as JSON.
        self.spec.components.header(
            "PAGINATION",
            {
                "description": "Pagination metadata as a JSON object: total, total_pages, "
                "first_page, last_page, page, previous_page, next_page",
                "schema": {"type": "string"},
            },
            lazy=True,
        )

    def cap_pages(self, max_page: int) -> None:
        """Document the server's cap on ``page`` (``api.guard``) in every paginated list."""
        for operations in self.spec._paths.values():  # apispec keeps no public view of them
            for operation in operations.values():
                if not isinstance(operation, dict):  # the path's own parameters
                    continue
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "query" and parameter.get("name") == "page":
                        parameter["schema"]["maximum"] = max_page

    def handle_http_exception(self, error: HTTPException):  # type: ignore[override]
        """Render werkzeug and webargs errors in the one shape."""
        code = error.code or 500
        data = getattr(error, "data", None) or {}
        errors = data.get("messages")
        message = data.get("message") or _own_words(error) or error.description
        message = message or HTTPStatus(code).phrase
        if code == 422 and errors:
            message = "The request is invalid; see errors for each field."
        response = jsonify(error_body(code, message, errors))
        response.status_code = code
        # werkzeug's own headers (Allow on a 405, WWW-Authenticate on a 401) are kept.
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        for name, value in (data.get("headers") or {}).items():
            response.headers[name] = value
        return response


def _own_words(error: HTTPException) -> str | None:
    """What werkzeug's generic 413 and 404 pages cannot say: the limit and the variable that
    sets it; the id that is not an id."""
    if error.code == 413:  # a body with no Content-Length (chunked) found too large on reading
        limit, variable = guard.body_limit(current_app.extensions["atom"].settings)
        return (
            f"The request body is over the limit; this endpoint takes at most {limit} bytes "
            f"({variable})."
        )
    if isinstance(error, NotFound) and request.url_rule is None:
        shown = request.path if len(request.path) <= 200 else request.path[:200] + "..."
        return _malformed_id() or (
            f"Nothing is served at {shown!r}; the routes are listed in /api/openapi.json "
            "(and at /api/docs)."
        )
    return None


def _lenient_map() -> Map:
    """The app's routes with every ``<uuid:...>`` segment matching any text (cached)."""
    cached = current_app.extensions.get("atom.lenient_map")
    if cached is None:
        rules = []
        for rule in current_app.url_map.iter_rules():
            if "<uuid:" in rule.rule:
                lenient = rule.rule.replace("<uuid:", "<string:")
                rules.append(Rule(lenient, endpoint=rule.rule, methods=rule.methods))
        cached = current_app.extensions["atom.lenient_map"] = Map(rules)
    return cached


def _malformed_id() -> str | None:
    """For a path that would match a route but for an id that is not a UUID: which id."""
    adapter = _lenient_map().bind("", url_scheme=request.scheme)
    try:
        rule, values = adapter.match(request.path, method=request.method)
    except HTTPException:
        return None
    for name in sorted(values):
        if f"<uuid:{name}>" not in str(rule):
            continue
        try:
            uuid.UUID(str(values[name]))
        except ValueError:
            what = name.removesuffix("_id").replace("_", " ")
            return (
                f"There is no {what} with the id {values[name]!r}: {name} must be a UUID "
                "(like 6a0f3c52-1111-4a5e-9d1e-5d2b0a1c9e77)."
            )
    return None


def register(app: Flask) -> None:
    """Map the AtomError tree to HTTP answers."""

    @app.errorhandler(sa_exc.OperationalError)
    @app.errorhandler(sa_exc.InterfaceError)
    @app.errorhandler(sa_exc.TimeoutError)
    def database_unavailable(error: Exception):
        # PostgreSQL is down or unreachable, or its pool is exhausted: a 503 the client
        # may retry, never a 500 (and never the driver's message, which names the server).
        app.logger.warning("database unavailable: %s", type(error).__name__)
        response = jsonify(error_body(503, "The database is unavailable; try again later."))
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    @app.errorhandler(AtomError)
    def atom_error(error: AtomError):
        extra: dict[str, Any] = {}
        errors = None
        if isinstance(error, DefinitionError):
            errors = {"definition": [p.to_dict() for p in error.problems]}
        elif isinstance(error, InvalidInput):
            errors = error.errors
        if isinstance(error, Conflict):
            extra = {"current_status": error.status, "allowed_actions": error.allowed}
        response = jsonify(error_body(error.http_status, str(error), errors, **extra))
        response.status_code = error.http_status
        for name, value in (getattr(error, "headers", None) or {}).items():
            response.headers[name] = value
        if isinstance(error, Unauthorized):  # RFC 9110: a 401 names the schemes it accepts
            response.headers["WWW-Authenticate"] = WWW_AUTHENTICATE
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:  # the ML pool did not answer in time (atom.ml.client)
            response.headers["Retry-After"] = str(retry_after)
        return response
