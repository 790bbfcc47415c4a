"""What a step may store: JSON that PostgreSQL's JSONB takes, within a size limit.

A step's rendered input and its output are written to ``step_runs``. A value that is not
JSON (``{{ self }}`` renders a template object), a NaN, a string with NUL or a lone surrogate
would make the write itself fail, and a 90-byte template can render 80 MB. Such a value is
the step's own doing, so the step fails with an error that says what is wrong, instead of
the delivery failing at the database and being re-driven forever.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from atom.errors import PermanentError

_STORED = text("""
    SELECT coalesce(sum(octet_length(coalesce(input::text, ''))
                        + octet_length(coalesce(output::text, ''))), 0)
    FROM step_runs WHERE execution_id = :execution AND node_id <> :node
""")


def _bad_text(value: str) -> str | None:
    if "\x00" in value:
        return "contains a NUL character"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return "contains a lone surrogate character"
    return None


def _find_bad_text(value: Any, where: str) -> str | None:
    if isinstance(value, str):
        reason = _bad_text(value)
        return f"{where} {reason}" if reason else None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_bad_text(key, f"a key of {where}") or _find_bad_text(
                item, f"{where}.{key}"
            )
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if found := _find_bad_text(item, f"{where}[{i}]"):
                return found
    return None


def check(value: Any, what: str, max_bytes: int) -> int:
    """The size of ``value`` as JSON; PermanentError naming the problem when it cannot be
    stored or is over ``max_bytes`` (``what``: "step 'x' output", for the message)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise PermanentError(f"{what} is not JSON: {e}") from e
    except RecursionError as e:
        raise PermanentError(f"{what} is nested too deeply to store") from e
    size = len(text.encode())
    if size > max_bytes:
        raise PermanentError(
            f"{what} is {size} bytes as JSON, over the limit of {max_bytes} "
            "(ATOM_MAX_STEP_OUTPUT_BYTES)"
        )
    if reason := _find_bad_text(value, what):
        raise PermanentError(f"cannot store it: {reason}")
    return size


def stored_bytes(session: Session, execution_id: uuid.UUID, but_node: str) -> int:
    """The bytes the execution's other steps have stored (input and output, as JSON text)."""
    return int(session.execute(_STORED, {"execution": execution_id, "node": but_node}).scalar_one())


def check_total(stored: int, adding: int, what: str, max_bytes: int) -> None:
    """PermanentError when ``adding`` bytes to the ``stored`` ones passes the execution's cap
    (``ATOM_MAX_EXECUTION_BYTES``)."""
    if stored + adding > max_bytes:
        raise PermanentError(
            f"{what} ({adding} bytes) would bring the execution's stored inputs and outputs "
            f"to {stored + adding} bytes, over the limit of {max_bytes} "
            "(ATOM_MAX_EXECUTION_BYTES)"
        )
