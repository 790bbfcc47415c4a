"""The ``atom`` command: run the platform's processes, migrate, manage keys, submit work.

Process commands load their folder (``api``, ``workers``, ``beat``) by name, so the core
never imports them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from atom.config import ConfigError, Settings
from atom.statuses import TERMINAL_STEP, StepStatus
from cli import backup, health

DEV_KEY_FILE = "dev-admin-key"
DEV_FLOWER_AUTH_FILE = "dev-flower-auth"


def resolve_services(settings: Settings) -> Settings:
    """Fill in DATABASE_URL and REDIS_URL with embedded servers when they are not set."""
    from cli import embedded

    database_url, redis_url = settings.database_url, settings.redis_url
    if not database_url:
        database_url = embedded.start_postgres(settings.data_dir / "postgres").create_database(
            "atom"
        )
    if not redis_url and not settings.broker_url:
        redis_url = embedded.start_redis(settings.data_dir / "redis").url
    return settings.with_services(database_url, redis_url or "")


def _process(module: str, settings: Settings, argv: list[str]) -> None:
    importlib.import_module(module).main(resolve_services(settings), argv)


@contextmanager
def one_off_database(settings: Settings) -> Iterator[str]:
    """DATABASE_URL, else the embedded PostgreSQL, for one command: started only if it was not
    running, and then stopped again (Redis is not started: a one-off command needs none)."""
    if settings.database_url:
        yield settings.database_url
        return
    from cli import embedded

    data = (settings.data_dir / "postgres").resolve()
    try:
        embedded.EmbeddedPostgres(data).url()
        was_running = True
    except Exception:  # not running, or never created
        was_running = False
    server = embedded.start_postgres(data)
    try:
        yield server.create_database("atom")
    finally:
        if not was_running:
            server.stop()


def cmd_db(settings: Settings, args: argparse.Namespace) -> int:
    """atom db upgrade: names the database it migrated (password masked)."""
    from atom.store.migrations import upgrade

    with one_off_database(settings) as url:
        upgrade(url, args.revision)
        print(f"database {_masked(url)} upgraded to {args.revision}")
    return 0


def _create_key(settings: Settings, tenant: str, role: str, name: str = "") -> str:
    from atom.security.auth import Role, create_key, get_or_create_tenant
    from atom.store.db import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url or "")
    try:
        with make_sessionmaker(engine).begin() as session:
            return create_key(session, get_or_create_tenant(session, tenant), Role(role), name)
    finally:
        engine.dispose()


def cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    """atom keys create --tenant NAME --role ROLE: the key alone on the last line."""
    with one_off_database(settings) as url:
        key = _create_key(replace(settings, database_url=url), args.tenant, args.role, args.name)
    article = "an" if args.role[0] in "aeiou" else "a"
    print(f"created {article} {args.role} key for tenant {args.tenant!r}; it is shown once:")
    print(key)
    return 0


def cmd_credentials(settings: Settings, args: argparse.Namespace) -> int:
    """atom credentials rotate-key: every vault value re-encrypted with the newest secret."""
    from atom.errors import PermanentError
    from atom.security import vault
    from atom.store.db import make_engine, make_sessionmaker

    with one_off_database(settings) as url:  # Redis is not needed: it is not started
        engine = make_engine(url)
        try:
            with make_sessionmaker(engine).begin() as session:
                count = vault.rotate(session, settings.secret_key)
        except PermanentError as e:
            print(f"atom credentials rotate-key: {e}", file=sys.stderr)
            return 1
        finally:
            engine.dispose()
    print(f"re-encrypted {count} credential(s) with the first ATOM_SECRET_KEY secret")
    return 0


def _dev_key(settings: Settings) -> str:
    """The development admin key kept in the data folder (made on first ``atom up``)."""
    from atom.security.auth import hash_key
    from atom.store.db import make_engine
    from atom.store.models import ApiKey

    path = settings.data_dir / DEV_KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        engine = make_engine(settings.database_url or "")
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    ApiKey.__table__.select().where(ApiKey.key_hash == hash_key(key))
                ).first()
        finally:
            engine.dispose()
        if found:
            return key
    key = _create_key(settings, "dev", "admin", "atom up")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return key


def stop_process_group(
    proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 10.0
) -> None:
    """Signal a child's whole process group; SIGKILL it if it has not ended after ``grace``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def _masked(url: str | None) -> str:
    """A service URL with its password hidden (it may come from the environment)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url or "").render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: show nothing of it
        return "(configured)"


def _atom_command() -> str:
    """How to type ``atom`` here: plain when PATH finds this one, else its path."""
    import shutil

    mine = Path(sys.executable).parent / "atom"
    found = shutil.which("atom")
    if found and Path(found).resolve() == mine.resolve():
        return "atom"
    try:
        return str(mine.relative_to(Path.cwd()))
    except ValueError:
        return str(mine)


def _port_in_use(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    """Run API, worker, beat and Flower on embedded services until Ctrl-C; stop them all."""
    from atom.store.migrations import upgrade
    from cli import embedded

    settings = Settings(**{**settings.__dict__, "dev": True}) if not settings.dev else settings
    started_pg = not settings.database_url
    started_redis = not settings.redis_url and not settings.broker_url
    busy = [
        f"{name} port {port}"
        for name, port in (("API", settings.api_port), ("Flower", settings.flower_port))
        if not (name == "Flower" and args.no_flower) and _port_in_use(port)
    ]
    if busy:
        print(
            f"atom up: {', '.join(busy)} already in use (another `atom up`?); set "
            "PYTHON_API_PORT / FLOWER_PORT or stop it",
            file=sys.stderr,
        )
        return 2
    settings = resolve_services(settings)
    upgrade(settings.database_url or "")
    key = _dev_key(settings)
    env = {**os.environ, **settings.as_env()}
    python = [sys.executable, "-m", "cli"]
    commands = {
        "api": python + ["api"],
        "worker": python + ["worker", f"--concurrency={args.concurrency}"],
        "ml-worker": python + ["worker", "--pool", "ml"],
        "beat": python + ["beat"],
    }
    if not args.no_flower:
        commands["flower"] = python + ["flower"]
        auth, source = flower_auth(settings)  # made here, before Flower reads the file
    procs: dict[str, subprocess.Popen] = {}
    stopping = False

    def stop(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for name, command in commands.items():
            procs[name] = subprocess.Popen(command, env=env, start_new_session=True)
        base = f"http://127.0.0.1:{settings.api_port}"
        print("\nATOM is starting:", flush=True)
        print(f"  API        {base}/api   (docs: {base}/api/docs)")
        if "flower" in procs:
            login = (
                f"user {(auth or '').partition(':')[0]}, password from FLOWER_BASIC_AUTH"
                if source == "FLOWER_BASIC_AUTH"
                else f"login {auth}  (in {source})"
            )
            print(f"  Flower     http://127.0.0.1:{settings.flower_port}   ({login})")
        print(f"  Metrics    {base}/metrics")
        print(f"  PostgreSQL {_masked(settings.database_url)}")
        print(f"  Redis      {_masked(settings.redis_url or settings.broker_url)}")
        print(f"  Admin key  {key}   (also in {settings.data_dir / DEV_KEY_FILE})")
        print(f"\n  export ATOM_API_KEY={key}")
        print(
            f"  {_atom_command()} submit examples/onboarding.json --wait\n\n"
            "Ctrl-C stops everything.",
            flush=True,
        )
        while not stopping:
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                print(f"atom up: {', '.join(dead)} exited; stopping the rest", file=sys.stderr)
                break
            time.sleep(0.5)
    finally:
        for proc in procs.values():
            stop_process_group(proc)
        if started_redis and (found := embedded.find_running_redis(settings.data_dir / "redis")):
            found.stop()
        if started_pg:
            embedded.EmbeddedPostgres(data_dir=(settings.data_dir / "postgres").resolve()).stop()
        print("atom up: everything stopped", flush=True)
    return 0


def _load_document(path: str) -> Any:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        return yaml.safe_load(text)
    return json.loads(text)


class Progress:
    """How many of a run's steps have ended, drawn as a bar: ``[#####.....] 3/6``."""

    def __init__(self, width: int = 20):
        self.width = width
        self.statuses: dict[str, str] = {}

    def load(self, execution: dict[str, Any]) -> None:
        """Take every step's status from an execution."""
        for step in execution.get("steps") or []:
            self.see(step)

    def see(self, step: dict[str, Any]) -> None:
        """Take one step's status (a trigger is not counted)."""
        if step.get("action_type") != "trigger":
            self.statuses[step["node_id"]] = step["status"]

    def bar(self) -> str:
        """The bar and the count."""
        total = len(self.statuses)
        done = sum(1 for s in self.statuses.values() if s in TERMINAL_STEP)
        filled = round(self.width * done / total) if total else 0
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total}"


def _print_step(step: dict[str, Any], shown: dict[str, tuple], progress: Progress) -> None:
    """One line per change of a step (a snapshot's step or a live event), with the bar."""
    state = (step["status"], step["attempts"])
    if shown.get(step["node_id"]) == state or (
        step["status"] == StepStatus.PENDING and not step["attempts"]
    ):
        return
    shown[step["node_id"]] = state
    progress.see(step)
    error = step.get("error") or {}
    if step["status"] == StepStatus.PENDING:  # a failed attempt waiting for its retry
        detail = (
            f"attempt {step['attempts']} failed: {error.get('message')}; "
            f"retry in {error.get('retry_in_s')} s"
        )
        label = "retrying"
    else:
        duration = f" {step['duration_ms']} ms" if step.get("duration_ms") is not None else ""
        detail = f"attempt {step['attempts']}{duration}"
        if error:
            detail += f"  {error.get('message')}"
        label = step["status"]
    print(f"  {progress.bar()}  {step['node_id']:<24} {label:<10} {detail}", flush=True)


def _follow_run(client: Any, execution_id: str) -> None:
    """Print the run's steps as they change (live events; polling if the stream fails)."""
    shown: dict[str, tuple] = {}
    progress = Progress()
    status = None
    for name, data in client.watch(execution_id):
        current = status
        if name in ("snapshot", "end"):
            progress.load(data)
            for step in data["steps"]:
                _print_step(step, shown, progress)
            current = data["status"]
        elif name == "step":
            _print_step(data, shown, progress)
        elif name == "execution":
            current = data["status"]
        if current != status:
            status = current
            print(f"execution {status}", flush=True)


def cmd_submit(settings: Settings, args: argparse.Namespace) -> int:
    """Create the workflow in FILE, execute it, and with --wait follow it to the end."""
    from atom.client import ApiError, Client

    key = os.environ.get("ATOM_API_KEY")
    key_file = settings.data_dir / DEV_KEY_FILE
    if not key and key_file.exists():
        key = key_file.read_text().strip()
    if not key:
        print(
            "atom submit: set ATOM_API_KEY (or run `atom up`, which makes a dev key)",
            file=sys.stderr,
        )
        return 2
    url = os.environ.get("ATOM_API_URL") or f"http://127.0.0.1:{settings.api_port}"
    client = Client(url, key)
    try:
        workflow = client.create_workflow(_load_document(args.file))
        execution = client.execute(workflow["id"], json.loads(args.input) if args.input else {})
    except ApiError as e:
        print(f"atom submit: {e}", file=sys.stderr)
        if isinstance(e.body, dict) and e.body.get("errors"):
            print(json.dumps(e.body["errors"], indent=2), file=sys.stderr)
        return 1
    print(f"workflow {workflow['id']} ({workflow['name']}), execution {execution['id']}")
    if not args.wait:
        return 0
    _follow_run(client, execution["id"])
    final = client.execution(execution["id"])
    print(
        json.dumps(
            {
                "status": final["status"],
                "output": final["output"],
                "error": final["error"],
                "metrics": final["metrics"],
            },
            indent=2,
        )
    )
    return 0 if final["status"] == "succeeded" else 1


def _dev_flower_auth(settings: Settings) -> str:
    """Development credentials for Flower, made once and kept in the data folder."""
    import secrets

    path = settings.data_dir / DEV_FLOWER_AUTH_FILE
    if path.exists() and _valid_basic_auth(path.read_text().strip()):
        return path.read_text().strip()
    auth = f"atom:{secrets.token_urlsafe(18)}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(auth + "\n")
    return auth


def _valid_basic_auth(value: str) -> bool:
    """``user:password[,user:password...]`` with nothing empty."""
    return all(
        user and sep and password
        for user, sep, password in (entry.partition(":") for entry in value.split(","))
    )


def flower_auth(settings: Settings) -> tuple[str | None, str]:
    """Flower's basic-auth credentials and where they came from (None: refuse to start).

    FLOWER_BASIC_AUTH when set; in dev mode without it, generated ones (Flower 2.2 answers
    401 on its whole API when it runs without auth, and opening it with
    FLOWER_UNAUTHENTICATED_API would also let any web page the developer visits drive it).
    """
    if settings.flower_basic_auth:
        return settings.flower_basic_auth, "FLOWER_BASIC_AUTH"
    if settings.dev:
        return _dev_flower_auth(settings), str(settings.data_dir / DEV_FLOWER_AUTH_FILE)
    return None, ""


def cmd_flower(settings: Settings, args: argparse.Namespace) -> int:
    """Flower on the platform's broker, always behind basic auth."""
    from atom.observe import telemetry

    auth, source = flower_auth(settings)
    if auth is None:
        print(
            "atom flower: set FLOWER_BASIC_AUTH=user:password (required outside dev mode, "
            "ATOM_DEV=1, where development credentials are generated)",
            file=sys.stderr,
        )
        return 2
    if not _valid_basic_auth(auth):
        print(
            "atom flower: FLOWER_BASIC_AUTH must be user:password (several separated by commas)",
            file=sys.stderr,
        )
        return 2
    telemetry.setup_process(settings, "flower")
    from atom.celery_app import make_celery

    settings = resolve_services(settings)
    os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)
    os.environ["FLOWER_BASIC_AUTH"] = auth  # Flower reads FLOWER_* itself too: keep them equal
    if source != "FLOWER_BASIC_AUTH":
        print(f"atom flower: user {auth.partition(':')[0]!r}, password in {source}", flush=True)
    argv = [
        "flower",
        f"--port={settings.flower_port}",
        f"--address={args.address}",
        f"--basic-auth={auth}",
    ]
    _protect_flower_metrics()
    make_celery(settings).start(argv)
    return 0


def _protect_flower_metrics() -> None:
    """Flower 2.2 serves ``/metrics`` (worker names, task names and counts) to anyone; put
    it behind the same basic auth as every other page."""
    from flower.views.monitor import Metrics
    from tornado import web

    if not getattr(Metrics.get, "_atom_protected", False):
        Metrics.get = web.authenticated(Metrics.get)  # type: ignore[method-assign]
        Metrics.get._atom_protected = True  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``atom``."""
    parser = argparse.ArgumentParser(prog="atom", description="ATOM workflow automation")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run everything on embedded services until Ctrl-C")
    up.add_argument("--concurrency", type=int, default=8)
    up.add_argument("--no-flower", action="store_true")
    for name, help_text in (
        ("api", "serve the HTTP API"),
        ("worker", "run a Celery worker"),
        ("beat", "run the scheduler"),
    ):
        sub.add_parser(name, help=help_text, add_help=False)
    flower = sub.add_parser("flower", help="run Flower for operators")
    flower.add_argument(
        "--address", default="127.0.0.1", help="interface to listen on (default: %(default)s)"
    )
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="migrate to the newest schema")
    upgrade.add_argument("revision", nargs="?", default="head")
    keys = sub.add_parser("keys", help="API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (and the tenant if new)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--role", required=True, choices=["viewer", "operator", "editor", "admin"])
    create.add_argument("--name", default="")
    credentials = sub.add_parser("credentials", help="the credential vault")
    credentials_sub = credentials.add_subparsers(dest="credentials_command", required=True)
    credentials_sub.add_parser(
        "rotate-key",
        help="re-encrypt every credential with the first secret of ATOM_SECRET_KEY "
        "(set ATOM_SECRET_KEY=new,old first; drop old afterwards)",
    )
    submit = sub.add_parser("submit", help="create and execute the workflow in FILE")
    submit.add_argument("file")
    submit.add_argument("--input", help="the execution's input, as JSON")
    submit.add_argument("--wait", action="store_true", help="follow the run to its end")
    health.add_parser(sub)
    backup.add_parsers(sub)
    return parser


PROCESSES = {"api": "api.main", "worker": "workers.main", "beat": "beat.main"}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``atom`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = Settings.from_env()
    except ConfigError as e:  # one line naming the variable; the password is masked
        print(f"atom: {e}", file=sys.stderr)
        return 2
    if argv and argv[0] in PROCESSES and {"-h", "--help"} & set(argv[1:]):
        # Help starts nothing: the process's parser prints it and exits before using services.
        importlib.import_module(PROCESSES[argv[0]]).main(settings, argv[1:])
        return 0
    if argv and argv[0] in PROCESSES:
        from atom.observe import telemetry

        telemetry.setup_process(settings, argv[0])
        _process(PROCESSES[argv[0]], settings, argv[1:])
        return 0
    args = build_parser().parse_args(argv)
    handler = {
        "up": cmd_up,
        "db": cmd_db,
        "keys": cmd_keys,
        "credentials": cmd_credentials,
        "submit": cmd_submit,
        "flower": cmd_flower,
        "health": health.cmd_health,
        "backup": backup.cmd_backup,
        "restore": backup.cmd_restore,
        "import": backup.cmd_import,
    }[args.command]
    return handler(settings, args)


if __name__ == "__main__":
    sys.exit(main())
