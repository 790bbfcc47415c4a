"""The one exception tree of ATOM.

    AtomError
    ├── InvalidInput           a request's fields are invalid (422); carries every problem
    │   └── DefinitionError    a workflow definition is invalid
    ├── NotFound               no such resource for this tenant (404)
    ├── Conflict               an illegal state change (409); carries the current status
    ├── Unauthorized           no or unknown API key (401)
    ├── Forbidden              the key's role is too low (403)
    ├── TooManyRequests        a rate limit or cap was reached (429, with Retry-After)
    ├── PayloadTooLarge        a request body over its limit (413), naming the limit
    └── ExecutionError         a step failed while running
        ├── RetryableError     transient: connection errors, timeouts, HTTP 429 and 5xx
        └── PermanentError     will fail the same way again: bad input, HTTP 4xx, template errors

The API maps the tree to one JSON error shape in ``api/errors.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class AtomError(Exception):
    """Base of every error ATOM raises on purpose."""

    http_status = 500


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where it is and what is wrong."""

    location: str
    message: str
    node: str | None = None

    def to_dict(self) -> dict:
        """JSON form, as listed in a 422 answer."""
        data = {"location": self.location, "message": self.message}
        if self.node is not None:
            data["node"] = self.node
        return data


class InvalidInput(AtomError):
    """A request has one or more invalid fields; ``errors`` maps each field to its problems."""

    http_status = 422
    subject = "request"

    def __init__(self, problems: list[Problem] | dict[str, list[str]]):
        if isinstance(problems, dict):
            problems = [
                Problem(field, message)
                for field, messages in problems.items()
                for message in messages
            ]
        self.problems = list(problems)
        count = len(self.problems)
        super().__init__(
            f"The {self.subject} has {count} problem{'s' if count != 1 else ''}: "
            + "; ".join(f"{p.location}: {p.message}" for p in self.problems[:5])
            + (" ..." if count > 5 else "")
        )

    @property
    def errors(self) -> dict[str, list[str]]:
        """Every problem, by field."""
        grouped: dict[str, list[str]] = {}
        for problem in self.problems:
            grouped.setdefault(problem.location, []).append(problem.message)
        return grouped


class DefinitionError(InvalidInput):
    """A workflow definition has one or more problems; all of them are listed."""

    subject = "workflow definition"


class NotFound(AtomError):
    """The resource does not exist for this tenant (existence never leaks across tenants)."""

    http_status = 404


class Conflict(AtomError):
    """A state change that the resource's current state does not allow."""

    http_status = 409

    def __init__(
        self, message: str, *, status: str | None = None, allowed: list[str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.allowed = allowed or []


class Unauthorized(AtomError):
    """The request carries no API key, or one that is unknown or revoked."""

    http_status = 401


class Forbidden(AtomError):
    """The API key is valid but its role is too low for this endpoint."""

    http_status = 403


class TooManyRequests(AtomError):
    """A rate limit or a cap was reached; ``headers`` carry ``Retry-After`` and the limit."""

    http_status = 429

    def __init__(self, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers or {}


class PayloadTooLarge(AtomError):
    """A request body over the limit of its endpoint; the message names the limit and the
    variable that sets it."""

    http_status = 413


class ExecutionError(AtomError):
    """A step's action failed; ``error_type`` names the kind for the step's error record."""

    error_type = "ExecutionError"

    def __init__(self, message: str, output: object = None):
        super().__init__(message)
        self.output = output


class RetryableError(ExecutionError):
    """A failure that may go away if the step runs again (network, timeout, 429, 5xx)."""

    error_type = "RetryableError"


class PermanentError(ExecutionError):
    """A failure that would repeat: bad configuration, a 4xx answer, a template error."""

    error_type = "PermanentError"


def flatten(messages: Any, where: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages as ``{field: [problems]}``, list items as ``field[i]``."""
    if isinstance(messages, list):
        return {where or "_schema": list(dict.fromkeys(str(m) for m in messages))}
    flat: dict[str, list[str]] = {}
    for key, value in messages.items():
        if isinstance(key, int):
            name = f"{where}[{key}]"
        else:
            name = f"{where}.{key}" if where and key != "_schema" else (where or key)
        for field, problems in flatten(value, name).items():
            known = flat.setdefault(field, [])
            known.extend(p for p in problems if p not in known)
    return flat
