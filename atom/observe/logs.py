"""Logs: one JSON object per line, carrying the execution, node, attempt and tenant they are
about.

The fields come from a context variable that the process binds around a unit of work (a
Celery task, an API request) and from ``extra=`` on the record itself; ``setup`` installs the
formatter on the root logger of ``atom api``, ``atom worker`` and ``atom beat``.
"""

from __future__ import annotations

import json
import logging
import logging.config
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "bind", "context", "logging_config", "setup", "unbind", "update"]

FIELDS = ("execution_id", "node_id", "attempt", "tenant")
"""The fields every record about a run carries when they are known."""

_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("atom_log_context", default=None)
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def bind(**fields: Any) -> Token:
    """Add ``fields`` to the logging context; ``unbind(token)`` restores the previous one."""
    return _CONTEXT.set(
        {**(_CONTEXT.get() or {}), **{k: v for k, v in fields.items() if v is not None}}
    )


def unbind(token: Token) -> None:
    """Restore the logging context from before the matching ``bind``."""
    _CONTEXT.reset(token)


def update(**fields: Any) -> None:
    """Add ``fields`` to the current context (undone by the enclosing ``unbind``)."""
    bind(**fields)


@contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Log with ``fields`` inside the block."""
    token = bind(**fields)
    try:
        yield
    finally:
        unbind(token)


def current() -> dict[str, Any]:
    """The fields bound right now."""
    return dict(_CONTEXT.get() or {})


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the run's fields, extras."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        doc.update(_CONTEXT.get() or {})
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, default=str, ensure_ascii=False)


def logging_config(level: str, fmt: str = "json") -> dict[str, Any]:
    """A ``dictConfig`` document: the root logger writes to stderr in ``fmt`` (json|text).

    gunicorn takes the same document (``logconfig_dict``), so its own loggers write JSON too.
    """
    formatter: dict[str, Any] = {"()": JsonFormatter} if fmt == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"atom": formatter, "generic": formatter},
        # Every line passes the redactor: webhook tokens and vault values read ***.
        "filters": {"redact": {"()": "atom.security.redaction.LogRedactor"}},
        "handlers": {
            "atom": {
                "class": "logging.StreamHandler",
                "formatter": "atom",
                "stream": "ext://sys.stderr",
                "filters": ["redact"],
            }
        },
        "root": {"level": level, "handlers": ["atom"]},
        # gunicorn's defaults give its loggers handlers of their own: propagate instead.
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": level, "handlers": [], "propagate": True},
        },
    }


def setup(level: str, fmt: str = "json") -> None:
    """Configure the process's logging (``ATOM_LOG_LEVEL``, ``ATOM_LOG_FORMAT``); Python
    warnings become log records too."""
    logging.config.dictConfig(logging_config(level, fmt))
    logging.captureWarnings(True)
