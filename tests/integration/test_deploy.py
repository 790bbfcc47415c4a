"""Deployment as an operator does it: every DATABASE_URL spelling typed in a shell, a Redis with
a password and a database number, and the deploy script's native mode on loopback."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis
import requests
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from atom.client import Client
from atom.config import Settings
from cli import embedded
from tests.conftest import ROOT, Processes, wait_for_worker
from tests.integration.helpers import action, trigger, workflow

ATOM = str(Path(sys.executable).parent / "atom")
SPELLINGS = ("postgresql", "postgres", "postgresql+psycopg2")


@pytest.fixture
def new_database(database_url: str) -> Iterator[Callable[[str], str]]:
    """Make empty databases on the session's server (dropped at the end); returns their URL
    in the driver's spelling."""
    made: list[str] = []
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")

    def make(prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        made.append(name)
        return make_url(database_url).set(database=name).render_as_string(hide_password=False)

    yield make
    with admin.connect() as conn:
        for name in made:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def spelled(url: str, scheme: str) -> str:
    return scheme + "://" + url.partition("://")[2]


def shell(command: str, **env: str) -> subprocess.CompletedProcess:
    """Run a command line in bash, as typed, with the test's environment less ATOM's URLs."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}
    }
    return subprocess.run(
        ["bash", "-c", command],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.mark.parametrize("scheme", SPELLINGS)
def test_db_upgrade_from_a_shell_with_each_spelling(scheme: str, new_database):
    url = spelled(new_database("atom_spell"), scheme)
    result = shell(f"DATABASE_URL='{url}' {ATOM} db upgrade", ATOM_DATA_DIR="/nonexistent")
    assert result.returncode == 0, result.stderr
    assert "upgraded to head" in result.stdout
    assert make_url(url).database in result.stdout  # it names the database it migrated
    engine = create_engine(spelled(url, "postgresql+psycopg2"))
    try:
        tables = set(inspect(engine).get_table_names())
        assert {"alembic_version", "workflows", "executions", "step_runs"} <= tables
    finally:
        engine.dispose()
    # running it again is a no-op
    again = shell(f"DATABASE_URL='{url}' {ATOM} db upgrade")
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("DATABASE_URL", "postgresql://atom:hunter2@db.example.com:54x2/atom", "cannot be parsed"),
        ("DATABASE_URL", "mysql://atom:hunter2@db.example.com/atom", "unsupported scheme"),
        ("REDIS_URL", "redis://:hunter2@cache.example.com:6379/zero", "database number"),
    ],
)
def test_a_wrong_url_stops_the_command_with_one_line(variable: str, value: str, says: str):
    result = shell(f"{variable}='{value}' {ATOM} db upgrade")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"atom: {variable}: ") and says in lines[0]
    assert "hunter2" not in result.stderr + result.stdout and "***" in lines[0]


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A redis-server that requires a password, on a loopback port."""
    port, password = embedded.free_port(), "pa ss/w@rd"
    proc = subprocess.Popen(
        [embedded.redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port)]
        + ["--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(port=port, password=password)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield port, password
    client.close()
    proc.terminate()
    proc.wait(10)


def test_each_spelling_runs_a_workflow_over_a_password_redis_on_database_5(
    new_database, password_redis, processes: Processes, settings: Settings
):
    from api.app import create_app
    from atom.security.auth import Role, create_key, get_or_create_tenant
    from atom.store.db import make_engine, make_sessionmaker
    from atom.store.migrations import upgrade

    port, password = password_redis
    quoted = password.replace(" ", "%20").replace("/", "%2F").replace("@", "%40")
    redis_url = f"redis://:{quoted}@127.0.0.1:{port}/5"
    database = new_database("atom_run")
    upgrade(spelled(database, "postgres"))
    env = {"DATABASE_URL": spelled(database, "postgres"), "REDIS_URL": redis_url}
    worker_settings = Settings.from_env({**settings.as_env(), **env})
    worker = processes.start("worker", "--concurrency=2", env=env, name="spelling-worker")
    wait_for_worker(worker_settings, worker)
    try:
        for scheme in SPELLINGS:
            api_settings = Settings.from_env(
                {**settings.as_env(), **env, "DATABASE_URL": spelled(database, scheme)}
            )
            engine = make_engine(api_settings.database_url or "")
            with make_sessionmaker(engine).begin() as session:
                key = create_key(session, get_or_create_tenant(session, scheme), Role.ADMIN)
            engine.dispose()
            server = make_server("127.0.0.1", 0, create_app(api_settings), threaded=True)
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                client = Client(f"http://127.0.0.1:{server.server_port}", key)
                created = client.create_workflow(
                    workflow(
                        f"spelling {scheme}",
                        [trigger(), action("echo", "transform", output="{{ input.word }}")],
                        [("start", "echo")],
                    )
                )
                run = client.execute(created["id"], {"word": scheme})
                final = client.wait(run["id"], timeout=60)
                assert final["status"] == "succeeded", final
                assert final["output"]["echo"] == scheme
            finally:
                server.shutdown()
    finally:
        processes.stop(worker)
    # messages used database 5 and results 6 of that server, nothing else
    dbs = {n: redis.Redis(port=port, password=password, db=n).dbsize() for n in (0, 1, 5, 6)}
    assert dbs[0] == 0 and dbs[1] == 0 and dbs[5] > 0 and dbs[6] > 0, dbs


# ---- the deploy script, native mode ------------------------------------------------------------

SCRIPT = ROOT / "deploy_enhanced_workflow_automation.sh"


def deploy(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_deploy_script_native_mode_is_healthy_and_idempotent(
    new_database, redis_url: str, tmp_path: Path
):
    home = tmp_path / "atom-home"
    api_port, flower_port = embedded.free_port(), embedded.free_port()
    env = {
        "DATABASE_URL": spelled(new_database("atom_deploy"), "postgresql"),
        # a database of the session's Redis no other test uses: these workers stay apart
        "REDIS_URL": redis_url.rsplit("/", 1)[0] + "/11",
        "PYTHON_API_PORT": str(api_port),
        "FLOWER_PORT": str(flower_port),
        "ATOM_HTTP_ALLOWLIST": "127.0.0.0/8",
    }
    options = ["--mode", "native", "--home", str(home), "--venv", sys.prefix]
    options += ["--concurrency", "2", "--timeout", "150"]

    plan = deploy("--dry-run", *options, env=env)
    assert plan.returncode == 0, plan.stderr
    assert "would: create" in plan.stdout and "would: start API" in plan.stdout
    assert not home.exists()  # a dry run changes nothing

    try:
        first = deploy(*options, env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        out = first.stdout
        assert f"http://127.0.0.1:{api_port}/api" in out
        assert f"http://127.0.0.1:{flower_port}" in out
        key_file = home / "data" / "dev-admin-key"
        assert f"Admin key  in {key_file}" in out
        env_file = home / "atom.env"
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        pid = int((home / "atom-up.pid").read_text())
        health = requests.get(
            f"http://127.0.0.1:{api_port}/api/workflows/monitoring/health", timeout=10
        ).json()
        # the script waited for "ok"; a busy machine can miss one 1 s worker ping since
        assert health["components"]["database"]["status"] == "ok", health
        assert health["components"]["beat"]["status"] == "ok", health
        reported = json.loads(out.split("healthy: ", 1)[1].splitlines()[0])
        assert reported["status"] == "ok" and reported["components"]["workers"]["count"] >= 1
        client = Client(f"http://127.0.0.1:{api_port}", key_file.read_text().strip())
        created = client.create_workflow(
            workflow("deployed", [trigger(), action("t", "transform", output=42)], [("start", "t")])
        )
        assert client.wait(client.execute(created["id"])["id"], timeout=60)["status"] == (
            "succeeded"
        )
        before = {p: _digest(p) for p in (env_file, key_file)}

        # the containers' HEALTHCHECK command, against these processes
        settings_env = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line
        )
        for process in ("api", "worker", "beat", "flower"):
            probe = shell(f"{ATOM} health {process}", **settings_env)
            assert probe.returncode == 0, probe.stdout + probe.stderr
            assert probe.stdout.strip() == f"{process}: ok"
        down = shell(f"{ATOM} health api", **{**settings_env, "PYTHON_API_PORT": "9"})
        assert down.returncode == 1 and "API not answering" in down.stdout

        second = deploy(*options, env=env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"keep the running processes (atom up, pid {pid})" in second.stdout
        assert "==> create" not in second.stdout and "==> start" not in second.stdout
        assert int((home / "atom-up.pid").read_text()) == pid
        assert {p: _digest(p) for p in before} == before

        stopped = deploy("--down", *options, env=env)
        assert stopped.returncode == 0, stopped.stderr
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    finally:
        pid_file = home / "atom-up.pid"
        if pid_file.exists():
            try:
                proc = psutil.Process(int(pid_file.read_text()))
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()
            except psutil.Error:
                pass


# ---- the first hour: help starts nothing, one-off commands stop what they start -------------


@pytest.mark.parametrize("process", ["api", "worker", "beat"])
def test_help_starts_nothing(process: str, tmp_path: Path):
    result = subprocess.run(
        [ATOM, process, "--help"],
        env={k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: atom {process}")
    assert list(tmp_path.iterdir()) == []  # no embedded server's data folder


@pytest.fixture
def own_dir() -> Iterator[Path]:
    """A folder outside pytest's base temp: pytest makes that one 0700 whenever a session
    starts, and the embedded PostgreSQL runs as the 'pgserver' user when we are root."""
    with tempfile.TemporaryDirectory(prefix="atom-one-off-") as made:
        os.chmod(made, 0o755)
        yield Path(made)


def test_one_off_commands_start_only_postgres_and_stop_it(own_dir: Path):
    tmp_path = own_dir
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["ATOM_SECRET_KEY"] = "a-secret-for-the-vault-of-this-test"
    data = str(tmp_path / ".atom")
    for command, says in (
        (["db", "upgrade"], "database postgresql+psycopg2://postgres@/atom?host="),
        (["credentials", "rotate-key"], "re-encrypted 0 credential(s)"),
    ):
        result = subprocess.run(
            [ATOM, *command], env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert says in result.stdout
        assert sorted(p.name for p in (tmp_path / ".atom").iterdir()) == ["postgres"]  # no Redis
        left = [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if any(data in arg for arg in (p.info["cmdline"] or []))
        ]
        assert left == [], command


# ---- backup and restore ------------------------------------------------------------------------


def _tenant_tables(url: str, tenant: str) -> dict:
    from atom.backup import archive
    from atom.store.db import make_engine, make_sessionmaker

    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return archive.dump(session, [tenant])["tables"]
    finally:
        engine.dispose()


def test_backup_then_restore_into_an_empty_and_a_live_installation(
    settings: Settings, api_url: str, make_key, new_database, tmp_path: Path, worker
):
    tenant = f"backup-{uuid.uuid4().hex[:8]}"
    key = make_key("admin", tenant)
    client = Client(api_url, key)
    first = client.create_workflow(
        workflow("nightly", [trigger(), action("a", "transform", output=1)], [("start", "a")])
    )
    client.request(
        "PUT",
        f"/api/workflows/{first['id']}",
        json=workflow("nightly", [trigger(), action("b", "transform", output=2)], [("start", "b")]),
    )
    second = client.create_workflow(
        workflow(
            "hooked", [trigger(kind="webhook"), action("c", "log", message="x")], [("start", "c")]
        )
    )
    client.request(
        "POST",
        "/api/schedules",
        json={"workflow_id": first["id"], "cron": "0 3 * * *", "timezone": "Europe/Berlin"},
    )
    client.request("POST", f"/api/workflows/{second['id']}/webhook")
    client.request(
        "POST",
        "/api/workflows/monitoring/alerts",
        json={
            "name": "nightly failing",
            "metric": "error_rate",
            "comparison": ">",
            "threshold": 0.5,
            "window": "1h",
            "severity": "medium",
            "cooldown": 600,
            "workflow_id": first["id"],
            "channels": [],
        },
    )
    run = client.wait(client.execute(first["id"], {"n": 1})["id"])
    assert run["status"] == "succeeded"
    client.request("GET", "/api/workflows")  # the key's last use is recorded before the copy
    original = _tenant_tables(settings.database_url or "", tenant)
    assert len(original["workflows"]) == 2 and len(original["workflow_versions"]) == 3
    assert len(original["schedules"]) == 1 and len(original["webhooks"]) == 1
    assert any(r["name"] == "nightly failing" for r in original["alert_rules"])
    assert [e["id"] for e in original["executions"]] == [run["id"]]
    assert {s["node_id"] for s in original["step_runs"]} == {"start", "b"}
    (stored_key,) = original["api_keys"]
    assert stored_key["key_hash"] == hashlib.sha256(key.encode()).hexdigest()

    file = tmp_path / "atom.json.gz"
    env = settings.as_env()
    made = shell(f"{ATOM} backup --tenant {tenant} --output {file}", **env)
    assert made.returncode == 0, made.stderr
    assert "1 api_keys, 2 workflows, 3 workflow_versions, 1 schedules, 1 webhooks" in made.stdout
    assert "1 executions, 2 step_runs" in made.stdout
    assert oct(file.stat().st_mode & 0o777) == "0o600"
    assert key.encode() not in gzip.decompress(file.read_bytes())  # the hash only

    # into an empty installation (the command migrates it first): everything comes back
    empty = new_database("atom_restore")
    restored = shell(f"{ATOM} restore {file}", **{**env, "DATABASE_URL": empty})
    assert restored.returncode == 0, restored.stderr
    assert _tenant_tables(empty, tenant) == original
    # a second time, and into the live installation it came from: nothing is duplicated
    for url in (empty, settings.database_url or ""):
        again = shell(f"{ATOM} restore {file}", **{**env, "DATABASE_URL": url})
        assert again.returncode == 0, again.stderr
        assert " 1 restored" not in again.stdout and "workflows            0 restored, 2" in (
            again.stdout
        )
        assert _tenant_tables(url, tenant) == original

    # backup -> drop -> restore on the live installation: the key works again, the run is back
    admin = create_engine(settings.database_url or "")
    with admin.begin() as conn:  # everything of the tenant goes with it (ON DELETE CASCADE)
        conn.execute(text("DELETE FROM tenants WHERE name = :name"), {"name": tenant})
    admin.dispose()
    # A key deleted in SQL (not revoked through the API, which tells every process at once)
    # stops working within the API processes' key-cache bound, ATOM_KEY_CACHE_SECONDS.
    deadline = time.monotonic() + settings.key_cache_seconds + 3
    while True:
        gone = requests.get(f"{api_url}/api/workflows", headers={"X-API-Key": key}, timeout=10)
        if gone.status_code != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert gone.status_code == 401
    back = shell(f"{ATOM} restore {file}", **env)
    assert back.returncode == 0, back.stderr
    assert "executions           1 restored, 0 already there" in back.stdout
    assert _tenant_tables(settings.database_url or "", tenant) == original
    again = client.request("GET", f"/api/executions/{run['id']}")
    assert again["status"] == "succeeded" and again["steps"] == run["steps"]
    assert len(client.request("GET", "/api/workflows")) == 2

    # a file that is not a backup: one line, status 2
    (tmp_path / "not.json.gz").write_text("hello")
    bad = shell(f"{ATOM} restore {tmp_path / 'not.json.gz'}", **env)
    assert bad.returncode == 2 and "is not an ATOM backup" in bad.stderr


# ---- import ------------------------------------------------------------------------------------


def test_an_n8n_export_imports_and_runs(client: Client, service, tmp_path: Path):
    from tests.unit.test_import_n8n import export

    service.route(r"GET /leads/(\d+)", lambda req, m: (200, {"amount": 5000, "name": "Ada"}))
    source = tmp_path / "n8n.json"
    source.write_text(json.dumps(export(service.url + "/leads")))
    out = tmp_path / "atom.json"
    result = shell(f"{ATOM} import {source} --output {out}")
    assert result.returncode == 0, result.stderr
    assert "n8n, 7 nodes, 2 not converted" in result.stderr
    assert "'Score in code' (n8n-nodes-base.code)" in result.stderr
    assert "'Tell sales' (n8n-nodes-base.slack)" in result.stderr

    created = client.create_workflow(json.loads(out.read_text()))
    final = client.wait(client.execute(created["id"], {"lead_id": 7})["id"], timeout=60)
    assert final["status"] == "succeeded", final
    steps = {s["node_id"]: s for s in final["steps"]}
    assert steps["fetch_lead"]["output"]["body"] == {"amount": 5000, "name": "Ada"}
    assert steps["mark_vip"]["output"] == {"tier": "vip", "who": "Ada"}
    assert steps["score_in_code"]["status"] == "skipped"  # the branch not taken
    assert [c.path for c in service.calls("GET", "/leads")] == ["/leads/7"]


# ---- rediss:// against a real TLS Redis ------------------------------------------------------


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server speaking only TLS on loopback, with a certificate from a CA made here."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (tmp_path / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    )
    port = embedded.free_port()
    proc = subprocess.Popen(
        [embedded.redis_server_binary(), "--port", "0", "--tls-port", str(port)]
        + ["--bind", "127.0.0.1", "--tls-cert-file", "server.pem", "--tls-key-file", "server.key"]
        + ["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no", "--requirepass", "pw"]
        + ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(
        host="127.0.0.1", port=port, password="pw", ssl=True, ssl_ca_certs=str(tmp_path / "ca.pem")
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.05)
    yield port, tmp_path / "ca.pem"
    client.close()
    proc.terminate()
    proc.wait(10)


def test_rediss_carries_broker_results_and_events_and_verifies_the_certificate(tls_redis):
    from atom.celery_app import make_celery

    port, ca = tls_redis
    url = f"rediss://:pw@127.0.0.1:{port}/3?ssl_ca_certs={ca}"
    settings = Settings.from_env({"REDIS_URL": url})
    app = make_celery(settings)
    events = redis.Redis.from_url(settings.events_redis)  # as the events publisher connects
    try:
        app.send_task("atom.tls_probe", queue="atom.steps")  # over TLS to the broker
        app.backend.set("atom-tls-probe", "ok")  # and to the result backend
        events.set("atom-events-probe", "ok")
    finally:
        app.close()
        events.close()
    db = {
        n: redis.Redis(
            host="127.0.0.1", port=port, password="pw", db=n, ssl=True, ssl_ca_certs=str(ca)
        )
        for n in (0, 3, 4)
    }
    assert db[0].dbsize() == 0
    assert db[3].llen("atom.steps") == 1 and db[3].get("atom-events-probe") == b"ok"
    assert db[4].get("atom-tls-probe") == b"ok"
    # without the CA, the default (certificates verified) refuses the self-signed server
    unverified = make_celery(Settings.from_env({"REDIS_URL": f"rediss://:pw@127.0.0.1:{port}/3"}))
    try:
        with pytest.raises(Exception, match="certificate verify failed|CERTIFICATE_VERIFY"):
            unverified.backend.set("x", "y")
    finally:
        unverified.close()
