"""Action handlers, one module per action type. A handler takes the step's rendered config
and an ActionContext and returns the step's output (any JSON); it raises RetryableError or
PermanentError (``atom.errors``) to fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from atom.config import Settings


@dataclass(frozen=True)
class ActionContext:
    """What a handler may know about the step it runs."""

    execution_id: str
    node_id: str
    attempt: int
    settings: Settings
    timeout: float | None = None

    @property
    def idempotency_key(self) -> str:
        """Stable across retries and redeliveries of the same step of the same execution."""
        return f"{self.execution_id}:{self.node_id}"


Handler = Callable[[dict[str, Any], ActionContext], Any]


def handlers() -> dict[str, Handler]:
    """Every action type's handler, by ``action_type``."""
    from workers.actions import decision, delay, http, log, python, transform

    return {
        "http_request": http.run,
        "transform": transform.run,
        "delay": delay.run,
        "log": log.run,
        "python": python.run,
        "decision": decision.run,
    }
