"""A small HTTP client for the ATOM API (used by ``atom submit`` and the benchmarks)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import requests

from atom.statuses import TERMINAL_EXECUTION

logger = logging.getLogger(__name__)

TERMINAL = TERMINAL_EXECUTION


class ApiError(Exception):
    """The API answered with an error document."""

    def __init__(self, status: int, body: Any):
        self.status, self.body = status, body
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"HTTP {status}: {message}")


class Client:
    """Calls the API with one key."""

    def __init__(self, base_url: str, api_key: str, timeout: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["X-API-Key"] = api_key
        self.timeout = timeout

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the JSON body or raise ApiError."""
        response = self.session.request(
            method, self.base_url + path, timeout=self.timeout, **kwargs
        )
        body = response.json() if response.content else None
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    def create_workflow(self, definition: dict[str, Any]) -> dict[str, Any]:
        """POST /api/workflows."""
        return self.request("POST", "/api/workflows", json=definition)

    def execute(self, workflow_id: str, input_: Any = None) -> dict[str, Any]:
        """POST /api/workflows/{id}/execute."""
        return self.request(
            "POST", f"/api/workflows/{workflow_id}/execute", json={"input": input_ or {}}
        )

    def execution(self, execution_id: str) -> dict[str, Any]:
        """GET /api/executions/{id}."""
        return self.request("GET", f"/api/executions/{execution_id}")

    def follow(
        self, execution_id: str, interval: float = 0.25, timeout: float = 3600
    ) -> Iterator[dict[str, Any]]:
        """Yield the execution each time it changes, until it ends (or ``timeout``)."""
        deadline, last = time.monotonic() + timeout, None
        while True:
            current = self.execution(execution_id)
            seen = (current["status"], [(s["status"], s["attempts"]) for s in current["steps"]])
            if seen != last:
                last = seen
                yield current
            if current["status"] in TERMINAL:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"execution {execution_id} still {current['status']}")
            time.sleep(interval)

    def events(
        self, execution_id: str, read_timeout: float = 60
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """GET /api/executions/{id}/events: ``(event, data)`` until the stream closes."""
        url = f"{self.base_url}/api/executions/{execution_id}/events"
        with self.session.get(
            url,
            stream=True,
            timeout=(self.timeout, read_timeout),
            headers={"Accept": "text/event-stream"},
        ) as response:
            if response.status_code >= 400:
                body = response.json() if response.content else None
                raise ApiError(response.status_code, body)
            name, data = "message", list[str]()
            for raw in response.iter_lines(decode_unicode=True):
                if raw is None:
                    continue
                line = raw if isinstance(raw, str) else raw.decode()
                if line == "":
                    if data:
                        yield name, json.loads("\n".join(data))
                    name, data = "message", list[str]()
                elif line.startswith(":"):
                    continue
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())

    def watch(
        self, execution_id: str, timeout: float = 3600
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The run's events as ``events`` gives them, ending with ``("end", execution)``;
        when the stream fails, polling takes over and yields ``("snapshot", execution)``."""
        try:
            for name, data in self.events(execution_id):
                yield name, data
                if name == "end":
                    return
        except (requests.RequestException, ApiError, ValueError) as e:
            logger.info("event stream failed (%s); polling instead", e)
        last = None
        for current in self.follow(execution_id, timeout=timeout):
            last = current
            yield "snapshot", current
        if last is not None:
            yield "end", last

    def wait(self, execution_id: str, timeout: float = 120) -> dict[str, Any]:
        """The execution once it has ended."""
        states = list(self.follow(execution_id, interval=0.1, timeout=timeout))
        return states[-1]
