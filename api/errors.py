"""One JSON error shape for every failure: ``{code, status, message, errors}``."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Flask, jsonify
from flask_smorest import Api
from werkzeug.exceptions import HTTPException

from atom.errors import AtomError, Conflict, DefinitionError, InvalidInput, Unauthorized

WWW_AUTHENTICATE = 'Bearer realm="atom", ApiKey realm="atom" header="X-API-Key"'
"""The schemes a 401 offers: a bearer token, or the key in the X-API-Key header."""


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
        message = data.get("message") or error.description or HTTPStatus(code).phrase
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


def register(app: Flask) -> None:
    """Map the AtomError tree to HTTP answers."""

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
