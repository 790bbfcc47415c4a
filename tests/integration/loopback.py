"""A real HTTP server on loopback standing in for the outside services a workflow calls."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    received_at: float = 0.0


Route = Callable[[Received, re.Match], tuple]  # (status, body[, headers])


@dataclass
class LoopbackService:
    """Routes by regex on ``METHOD /path``; records every request."""

    routes: list[tuple[re.Pattern, Route]] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None
    port: int = 0
    """The port to listen on (0: any free one)."""

    def route(self, pattern: str, handler: Route) -> None:
        """Answer requests matching ``pattern`` (e.g. ``GET /users/(\\d+)``) with handler."""
        self.routes.append((re.compile(pattern + "$"), handler))

    @property
    def url(self) -> str:
        """Base URL of the server."""
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_port}"

    def calls(self, method: str, path_prefix: str) -> list[Received]:
        """Requests received with this method and path prefix."""
        with self.lock:
            return [
                r for r in self.received if r.method == method and r.path.startswith(path_prefix)
            ]

    def start(self) -> LoopbackService:
        """Start serving in a daemon thread."""
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                request = Received(
                    self.command, self.path, dict(self.headers), body, time.monotonic()
                )
                with service.lock:
                    service.received.append(request)
                for pattern, handler in service.routes:
                    match = pattern.match(f"{self.command} {self.path}")
                    if match:
                        status, payload, *extra = handler(request, match)
                        break
                else:
                    status, payload, extra = 404, {"error": "no such route"}, []
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self.server:
            self.server.shutdown()
            self.server.server_close()
