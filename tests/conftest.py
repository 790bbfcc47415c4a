"""Session-wide real services for the integration tests: PostgreSQL, Redis, a Celery worker
process and the API on a loopback port. Embedded servers unless ATOM_TEST_DATABASE_URL /
ATOM_TEST_REDIS_URL point at others."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from werkzeug.serving import make_server

from atom.config import Settings
from atom.observe.telemetry import prepare_metrics
from cli.main import stop_process_group

ROOT = Path(__file__).resolve().parent.parent
TEST_DATA = ROOT / ".atom" / "test"

# The API under test runs in this process: like `atom api`, it records its metrics in a
# folder of its own, chosen before prometheus_client is imported; the worker processes the
# tests start write beside it, so /metrics sees them all.
METRICS_ROOT = Path(tempfile.mkdtemp(prefix="atom-test-metrics-"))
prepare_metrics(METRICS_ROOT, "api")
atexit.register(shutil.rmtree, METRICS_ROOT, True)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh, migrated database for this test session."""
    from atom.store.migrations import upgrade
    from cli import embedded

    given = os.environ.get("ATOM_TEST_DATABASE_URL")
    if given:  # any spelling an operator writes (postgres://, postgresql://, ...)
        from atom.config import postgres_url

        given = postgres_url(given)
    name = f"atom_test_{os.getpid()}"
    if given:
        admin = create_engine(given, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        url = given.rsplit("/", 1)[0] + "/" + name
        drop = lambda: _drop_given(given, name)  # noqa: E731
    else:
        server = embedded.start_postgres(TEST_DATA / "postgres")
        url = server.create_database(name)

        def drop() -> None:  # and stop the server: a test run leaves no process behind
            server.drop_database(name)
            server.stop()

    upgrade(url)
    yield url
    drop()


def _drop_given(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis for this test session (its own server when none is given)."""
    from cli import embedded

    given = os.environ.get("ATOM_TEST_REDIS_URL")
    if given:
        yield given
        return
    server = embedded.start_redis(tmp_path_factory.mktemp("redis"))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def settings(
    database_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings of the platform under test; loopback is allowlisted for the http action and
    the alert webhooks; email goes to a local SMTP server (the ``smtp_inbox`` fixture)."""
    from cli.embedded import free_port

    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        http_allowlist=("127.0.0.0/8", "localhost"),
        data_dir=tmp_path_factory.mktemp("atom-data"),
        dev=True,
        function_modules=("tests.integration.functions",),
        metrics_dir=METRICS_ROOT,
        smtp_host="127.0.0.1",
        smtp_port=free_port(),
        smtp_from="atom-tests@example.com",
        secret_key="test-vault-secret-do-not-use-elsewhere",
        # The shared API is not rate limited; tests/integration/test_security.py serves its
        # own app with small budgets.
        rate_limit_enabled=False,
        # database_query may reach the test PostgreSQL (its own database stays refused).
        db_query_allowlist=_socket_dirs(database_url),
        # Automatic troubleshooting would retry the failures other tests assert on; its own
        # tests run a platform of their own with it on (tests/integration/test_troubleshoot.py).
        auto_troubleshoot=False,
        # Beats started by other modules do not fire anomaly scoring (without an ML worker it
        # would hold a worker slot for ATOM_ML_TIMEOUT); tests/integration/test_anomaly_ops.py
        # runs a beat of its own that does.
        anomaly_interval=0,
    )


def _socket_dirs(database_url: str) -> tuple[str, ...]:
    from sqlalchemy.engine import make_url

    host = make_url(database_url).query.get("host")
    return (host,) if isinstance(host, str) else tuple(host or ())


class Processes:
    """Platform processes started by tests, stopped (whole process groups) at the end."""

    def __init__(self, settings: Settings, log_dir: Path):
        self.settings, self.log_dir = settings, log_dir
        self.procs: list[subprocess.Popen] = []

    def start(
        self, *args: str, env: dict[str, str] | None = None, name: str | None = None
    ) -> subprocess.Popen:
        """Run ``atom ARGS`` in its own process group, logging to a file."""
        log_path = self.log_dir / f"{name or args[0]}-{len(self.procs)}.log"
        full_env = {**os.environ, **self.settings.as_env(), **(env or {})}
        # The child keeps its own copy of the descriptor: ours is closed at once.
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cli", *args],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        proc.log_path = str(log_path)  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, wait: float = 15) -> None:
        """Signal a process group and wait for it to end (SIGKILL after ``wait``)."""
        stop_process_group(proc, sig, wait)

    def stop_all(self) -> None:
        """Stop every process started here."""
        for proc in self.procs:
            self.stop(proc)


def start_api(
    processes: Processes, *args: str, name: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """``atom api ARGS`` on a free loopback port, once it answers: (process, base URL)."""
    import requests

    from cli.embedded import free_port

    port = free_port()
    proc = processes.start("api", *args, "--port", str(port), env=env, name=name)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(base + "/api/workflows/monitoring/health", timeout=5)
            return proc, base
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, Path(
                proc.log_path  # type: ignore[attr-defined]
            ).read_text()
            time.sleep(0.3)


def wait_for_worker(
    settings: Settings, proc: subprocess.Popen, timeout: float = 60, hostname: str | None = None
) -> str:
    """Wait until a worker (the one named ``hostname``, if given) answers a ping."""
    from atom.celery_app import make_celery

    app = make_celery(settings)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("worker exited:\n" + Path(proc.log_path).read_text()[-4000:])
            replies = (
                app.control.ping(destination=[hostname] if hostname else None, timeout=0.5) or []
            )
            if replies:
                return next(iter(replies[0]))
        raise RuntimeError("worker did not answer:\n" + Path(proc.log_path).read_text()[-4000:])
    finally:
        app.close()


@pytest.fixture(scope="session")
def processes(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """The session's process manager."""
    procs = Processes(settings, tmp_path_factory.mktemp("logs"))
    yield procs
    procs.stop_all()


@pytest.fixture(scope="session")
def worker(settings: Settings, processes: Processes) -> subprocess.Popen:
    """A real Celery worker process (prefork, 4 children) on the step queue."""
    proc = processes.start("worker", "--concurrency=4", "--loglevel=INFO", name="worker")
    wait_for_worker(settings, proc)
    return proc


@pytest.fixture(scope="module")
def ml_worker(settings: Settings, processes: Processes) -> Iterator[subprocess.Popen]:
    """An ML worker process (``atom worker --pool ml``) for the tests of one module."""
    import socket

    proc = processes.start("worker", "--pool", "ml", name="ml-worker")
    wait_for_worker(settings, proc, hostname=f"ml@{socket.gethostname()}")
    yield proc
    processes.stop(proc)


@pytest.fixture(scope="session")
def api_url(settings: Settings) -> Iterator[str]:
    """The API served over HTTP on a loopback port, in a thread of the test process."""
    from api.app import create_app

    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="session")
def make_key(settings: Settings) -> Callable[..., str]:
    """Create an API key: make_key(role, tenant=None) (a new tenant unless one is named)."""
    from atom.security.auth import Role, create_key, get_or_create_tenant
    from atom.store.db import make_engine, make_sessionmaker

    factory = make_sessionmaker(make_engine(settings.database_url or ""))

    def make(role: str = "admin", tenant: str | None = None) -> str:
        with factory.begin() as session:
            owner = get_or_create_tenant(session, tenant or f"t-{uuid.uuid4().hex[:12]}")
            return create_key(session, owner, Role(role))

    return make


@pytest.fixture
def client(api_url: str, make_key: Callable[..., str], worker: subprocess.Popen):
    """An admin client of a tenant of its own, with a worker running."""
    from atom.client import Client

    return Client(api_url, make_key("admin"))


@pytest.fixture
def settings_with(settings: Settings) -> Callable[..., Settings]:
    """A copy of the settings with some fields changed."""
    return lambda **changes: replace(settings, **changes)
