"""Secrets kept out of answers and logs: headers that carry credentials, vault values, and
webhook tokens in request paths.

- ``redact_headers`` / ``redact_step_input``: what a step's recorded input shows to anyone
  who reads it (every role): ``Authorization``, ``Cookie``, API-key headers and the like read
  ``***``, and so does any value that came out of the credential vault.
- ``LogRedactor``: a logging filter on every handler of an ATOM process; it rewrites webhook
  paths (``/api/hooks/<token>``) and any vault value this process has decrypted
  (``remember``) to ``***`` in every record, whichever library logged it (werkzeug's request
  line included).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

REDACTED = "***"

SECRET_HEADER_NAMES = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-access-token",
        "x-csrf-token",
    }
)
_SECRET_HEADER_HINT = re.compile(r"(api[-_]?key|token|secret|passw|auth|session)", re.I)
HOOK_PATH = re.compile(r"(/api/hooks/)[^\s/?#\"']+")
_MIN_REMEMBERED = 4  # shorter values would blank out ordinary words in every line

_remembered: set[str] = set()
_lock = threading.Lock()


def is_secret_header(name: str) -> bool:
    """True for a header name that carries a credential."""
    lowered = name.lower()
    return lowered in SECRET_HEADER_NAMES or bool(_SECRET_HEADER_HINT.search(lowered))


def redact_headers(headers: Any) -> Any:
    """A copy of ``headers`` with credential-bearing values replaced by ``***``."""
    if not isinstance(headers, dict):
        return headers
    return {k: REDACTED if is_secret_header(str(k)) else v for k, v in headers.items()}


def redact_values(value: Any, secrets: set[str] | frozenset[str]) -> Any:
    """``value`` (JSON) with every string holding one of ``secrets`` masked."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret and secret in value:
                value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, dict):
        return {k: redact_values(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_values(v, secrets) for v in value]
    return value


def redact_step_input(config: Any, secrets: set[str] | frozenset[str] = frozenset()) -> Any:
    """A step's rendered config as it may be stored and shown: secret headers and vault
    values masked (``auth`` blocks entirely)."""
    if not isinstance(config, dict):
        return redact_values(config, secrets)
    shown = dict(redact_values(config, secrets))  # a copy: the handler keeps the real one
    if "headers" in shown:
        shown["headers"] = redact_headers(shown["headers"])
    if "auth" in shown:
        shown["auth"] = REDACTED
    return shown


def secret_header_values(config: Any) -> set[str]:
    """The values of a config's credential-bearing headers (and their tokens after a scheme
    such as ``Bearer``), to mask wherever the step's output or error repeats them."""
    headers = config.get("headers") if isinstance(config, dict) else None
    found: set[str] = set()
    if not isinstance(headers, dict):
        return found
    for name, value in headers.items():
        if is_secret_header(str(name)) and isinstance(value, str):
            found.add(value)
            scheme, _, token = value.partition(" ")
            if token and scheme.isalpha():
                found.add(token)
    return {v for v in found if len(v) >= _MIN_REMEMBERED}


def redact_step_output(output: Any, secrets: set[str] | frozenset[str]) -> Any:
    """A step's output as stored: secrets masked, and an http answer's secret headers too."""
    shown = redact_values(output, secrets)
    if isinstance(shown, dict) and isinstance(shown.get("headers"), dict):
        shown = {**shown, "headers": redact_headers(shown["headers"])}
    return shown


def remember(*values: str) -> None:
    """Mask these values in every log line of this process from now on (vault values)."""
    with _lock:
        _remembered.update(v for v in values if isinstance(v, str) and len(v) >= _MIN_REMEMBERED)


def redact_text(text: str) -> str:
    """``text`` with webhook tokens and remembered secrets masked."""
    text = HOOK_PATH.sub(r"\1" + REDACTED, text)
    with _lock:
        secrets = tuple(_remembered)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class LogRedactor(logging.Filter):
    """Rewrites each record's message with ``redact_text`` (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Mask secrets in the formatted message; keep the record."""
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the formatter's problem, not ours
            return True
        masked = redact_text(message)
        if masked != message:
            record.msg, record.args = masked, None
        for key in ("path", "url"):
            value = record.__dict__.get(key)
            if isinstance(value, str):
                record.__dict__[key] = redact_text(value)
        return True
