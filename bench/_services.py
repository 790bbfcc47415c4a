"""What the benchmarks share: services, subprocesses in their own process groups, the API.

Not a benchmark itself. ``services()`` uses DATABASE_URL / REDIS_URL when set; otherwise it
starts embedded PostgreSQL and Redis under the benchmark's data directory, with a fresh
database each run, and returns the stop() calls of what it started.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # api/ and workers/ when run as `python bench/<name>.py`

from atom.config import Settings  # noqa: E402


def services(data: Path, database: str) -> tuple[Settings, list[Callable[[], None]]]:
    """Settings with services filled in, and the stop() calls of what was started here."""
    from atom.store.migrations import upgrade
    from cli import embedded

    settings = replace(Settings.from_env(), data_dir=data, dev=True)
    stoppers: list[Callable[[], None]] = []
    database_url, redis_url = settings.database_url, settings.redis_url
    if not database_url:
        pg_dir = (data / "postgres").resolve()
        try:
            embedded.EmbeddedPostgres(pg_dir).url()
        except Exception:  # not running (or never created): ours to stop
            stoppers.append(embedded.EmbeddedPostgres(pg_dir).stop)
        server = embedded.start_postgres(pg_dir)
        server.drop_database(database)
        database_url = server.create_database(database)
    if not redis_url and not settings.broker_url:
        running = embedded.find_running_redis(data / "redis")
        redis = embedded.start_redis(data / "redis")
        redis_url = redis.url
        if running is None:
            stoppers.append(redis.stop)
    settings = settings.with_services(database_url or "", redis_url or "")
    upgrade(settings.database_url or "")
    return settings, stoppers


def start(cmd: list[str], settings: Settings, log: Path) -> subprocess.Popen:
    """Run ``cmd`` in a new session (its own process group), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        return subprocess.Popen(
            cmd,
            env={**os.environ, **settings.as_env()},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the whole process group, SIGKILL after 15 s."""
    from cli.main import stop_process_group

    stop_process_group(proc, grace=15.0)


def wait_ready(app, proc: subprocess.Popen, hostname: str, log: Path) -> None:
    """Until the Celery worker ``hostname`` answers a ping (60 s at most)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker {hostname} exited; see {log}")
        if app.control.ping(destination=[hostname], timeout=0.5):
            return
    raise RuntimeError(f"worker {hostname} did not answer within 60 s; see {log}")


def admin_key(settings: Settings, tenant_prefix: str = "bench") -> str:
    """An admin API key of a new tenant."""
    from atom.security.auth import Role, create_key, get_or_create_tenant
    from atom.store.db import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url or "")
    try:
        with make_sessionmaker(engine).begin() as session:
            tenant = get_or_create_tenant(session, f"{tenant_prefix}-{uuid.uuid4().hex[:8]}")
            return create_key(session, tenant, Role.ADMIN, "bench")
    finally:
        engine.dispose()


def serve_api(settings: Settings):
    """The API in this process on a free loopback port: (server, base URL); server.shutdown()."""
    from werkzeug.serving import make_server

    from api.app import create_app

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


def wait_http(base: str, proc: subprocess.Popen, log: Path) -> None:
    """Until the API at ``base`` answers its health check (60 s at most)."""
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited; see {log}")
        try:
            requests.get(f"{base}/api/workflows/monitoring/health", timeout=2)
            return
        except requests.ConnectionError:
            time.sleep(0.2)
    raise RuntimeError(f"the API did not answer within 60 s; see {log}")


def api_process(settings: Settings, log: Path) -> tuple[subprocess.Popen, str]:
    """``atom api`` (gunicorn) in its own process on a free loopback port, as deployed:
    (process, base URL); ``stop(process)`` ends it."""
    from cli.embedded import free_port

    port = free_port()
    proc = start(
        [sys.executable, "-m", "cli", "api", "--port", str(port)],
        replace(settings, log_level="WARNING"),
        log,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(base, proc, log)
    return proc, base
