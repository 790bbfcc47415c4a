"""Fixtures of the fault suite: a platform of its own on a Redis each test may restart.

The session's Redis, worker and API stay untouched: every fault test gets a fresh Redis on a
fixed port (so a restarted server comes back at the same address), an API in a thread of
the test process and the worker and beat processes it starts, all pointed at that Redis and
at the session's PostgreSQL database.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from werkzeug.serving import make_server

from atom.client import Client
from atom.config import Settings
from cli import embedded
from tests.conftest import TEST_DATA, Processes, wait_for_worker
from tests.integration.loopback import LoopbackService

FUNCTION_MODULES = ("tests.integration.functions", "tests.faults.functions")


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``predicate`` until it is true; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Stack:
    """One platform under test: its own Redis (restartable), API, workers and beats."""

    def __init__(
        self,
        settings: Settings,
        root: Path,
        make_key: Callable[..., str],
        own_postgres: bool = False,
    ):
        self.root = root
        self.port = embedded.free_port()
        self.redis = embedded.start_redis(root / "redis", port=self.port)
        self.settings = replace(
            settings, redis_url=self.redis.url, function_modules=FUNCTION_MODULES
        )
        self.postgres: embedded.EmbeddedPostgres | None = None
        if own_postgres:
            # A server of its own, which the test may stop and start without disturbing
            # the session's. Its data lives beside the session's server: pgserver runs
            # PostgreSQL as its own user when started by root, and pytest's temporary
            # folders (under a 0700 /tmp/pytest-of-root) are closed to that user.
            from atom.store.migrations import upgrade

            self._postgres_dir = TEST_DATA / "pgstack" / uuid.uuid4().hex[:12]

            self.postgres = embedded.start_postgres(self._postgres_dir)
            url = self.postgres.create_database("atom_faults")
            upgrade(url)
            self.settings = replace(self.settings, database_url=url)
            make_key = self._own_key
        self.processes = Processes(self.settings, root)
        self._server = None
        self.client: Client | None = None
        self.make_key = make_key
        self._names = 0

    # --- services -----------------------------------------------------------------------
    def stop_redis(self) -> None:
        """Stop the Redis server (its data is gone: nothing is persisted)."""
        self.redis.stop()

    def start_redis(self) -> None:
        """Start Redis again on the same port."""
        self.redis = embedded.start_redis(self.root / "redis", port=self.port)

    def restart_redis(self, down: float = 1.0) -> None:
        """Stop Redis, keep it down ``down`` seconds, start it again on the same port."""
        self.stop_redis()
        time.sleep(down)
        self.start_redis()

    def stop_postgres(self) -> None:
        """Stop this stack's own PostgreSQL (fast shutdown: connections are cut)."""
        assert self.postgres is not None
        self.postgres.stop()

    def start_postgres(self) -> None:
        """Start it again, same data directory and socket."""
        assert self.postgres is not None
        self.postgres = embedded.start_postgres(self._postgres_dir)

    def _own_key(self, role: str = "admin") -> str:
        from atom.security.auth import Role, create_key, get_or_create_tenant
        from atom.store.db import make_engine, make_sessionmaker

        engine = make_engine(self.settings.database_url or "")
        try:
            with make_sessionmaker(engine).begin() as session:
                return create_key(session, get_or_create_tenant(session, "faults"), Role(role))
        finally:
            engine.dispose()

    def broker(self) -> redis.Redis:
        """A client of this stack's Redis."""
        return redis.Redis.from_url(self.redis.url)

    # --- processes ----------------------------------------------------------------------
    def worker(
        self, *args: str, env: dict[str, str] | None = None, queues: str = "atom.steps"
    ) -> subprocess.Popen:
        """Start a worker (prefork, 2 children) and wait until it answers a ping."""
        self._names += 1
        name = f"fault{self._names}@{socket.gethostname()}"
        proc = self.processes.start(
            "worker",
            f"--queues={queues}",
            "--concurrency=2",
            f"--hostname={name}",
            *args,
            env=env,
            name=name.split("@")[0],
        )
        wait_for_worker(self.settings, proc, hostname=name)
        proc.hostname = name  # type: ignore[attr-defined]
        return proc

    def beat(self, env: dict[str, str] | None = None, name: str = "beat") -> subprocess.Popen:
        """Start a beat process."""
        return self.processes.start("beat", env=env, name=name)

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL a process group."""
        self.processes.stop(proc, signal.SIGKILL)

    # --- API ----------------------------------------------------------------------------
    def api(self) -> Client:
        """The API on a loopback port, and an admin client of a new tenant."""
        if self.client is None:
            from api.app import create_app

            self._server = make_server("127.0.0.1", 0, create_app(self.settings), threaded=True)
            threading.Thread(target=self._server.serve_forever, daemon=True).start()
            url = f"http://127.0.0.1:{self._server.server_port}"
            self.client = Client(url, self.make_key("admin"))
        return self.client

    def close(self) -> None:
        """Stop everything this stack started."""
        self.processes.stop_all()
        if self._server is not None:
            self._server.shutdown()
        self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()
            shutil.rmtree(self._postgres_dir, ignore_errors=True)


@pytest.fixture
def stack(
    settings: Settings,
    make_key: Callable[..., str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A platform of this test's own (see the module docstring)."""
    platform = Stack(settings, tmp_path_factory.mktemp("stack"), make_key)
    yield platform
    platform.close()


@pytest.fixture
def pg_stack(
    settings: Settings,
    make_key: Callable[..., str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """A platform with its own PostgreSQL too, for tests that restart the database."""
    platform = Stack(settings, tmp_path_factory.mktemp("pgstack"), make_key, own_postgres=True)
    yield platform
    platform.close()


@pytest.fixture
def service() -> Iterator[LoopbackService]:
    """A fresh loopback HTTP service per test (the side effects a step has)."""
    svc = LoopbackService().start()
    yield svc
    svc.stop()
