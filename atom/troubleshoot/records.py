"""What a diagnosis reads: immutable records of a run, its workflow's history and its
neighbours, gathered from PostgreSQL by ``atom.troubleshoot.gather`` and pure from here on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from atom.workflow.definition import Definition


@dataclass(frozen=True)
class StepRecord:
    """One step of one run as ATOM recorded it."""

    node_id: str
    status: str
    attempts: int = 0
    action_type: str | None = None
    error: dict[str, Any] | None = None
    output: Any = None
    input: Any = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    retry_at: datetime | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds from the first start to the end, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def status_code(self) -> int | None:
        """The HTTP status an http_request step recorded, if any."""
        if isinstance(self.output, dict) and isinstance(self.output.get("status_code"), int):
            return self.output["status_code"]
        return None

    @property
    def host(self) -> str | None:
        """The host an http_request step called (from its rendered config)."""
        if isinstance(self.input, dict) and isinstance(self.input.get("url"), str):
            return urlsplit(self.input["url"]).hostname
        return None

    @property
    def message(self) -> str:
        """The error as one line: ``Type: message``."""
        if not self.error:
            return ""
        return f"{self.error.get('type', '')}: {self.error.get('message', '')}"


@dataclass(frozen=True)
class RunRecord:
    """One execution: its version, status and steps."""

    execution_id: uuid.UUID
    version: int
    status: str
    steps: dict[str, StepRecord]
    created_at: datetime | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True)
class HostRecord:
    """Recent steps of *other* workflows of the tenant that called the same host."""

    host: str
    workflows: int
    calls: int
    failed: int
    categories: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """Everything one diagnosis looks at."""

    run: RunRecord
    definition: Definition
    versions: dict[int, Definition]
    """Every version of the workflow, by number."""
    history: list[RunRecord]
    """Earlier runs of the same workflow, newest first (this run excluded)."""
    hosts: dict[str, HostRecord]
    now: datetime
    heartbeat_timeout: float = 20.0
    error_logs: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    """The policy overrides the run already carries (from earlier automatic retries)."""
