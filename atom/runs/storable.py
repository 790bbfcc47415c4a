"""What a step may store: JSON that PostgreSQL's JSONB takes, within a size limit.

A step's rendered input and its output are written to ``step_runs``. A value that is not
JSON (``{{ self }}`` renders a template object), a NaN, a string with NUL or a lone surrogate
would make the write itself fail, and a 90-byte template can render 80 MB. Such a value is
the step's own doing, so the step fails with an error that says what is wrong, instead of
the delivery failing at the database and being re-driven forever.
"""

from __future__ import annotations

import json
from typing import Any

from atom.errors import PermanentError


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
