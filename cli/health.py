"""``atom health [api|worker|beat|flower]``: is this container's process healthy?

The container image's ``HEALTHCHECK`` (and Compose, Kubernetes exec probes, the deploy
script) run it. Without an argument it checks the process the container runs (PID 1's
command line, ``atom api`` and so on). Exit 0 when healthy, 1 with one line saying why not.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import requests

from atom.config import Settings

PROCESSES = ("api", "worker", "beat", "flower")


def running_process(cmdline: Path = Path("/proc/1/cmdline")) -> str | None:
    """The ATOM process named on PID 1's command line (None when there is none)."""
    try:
        words = cmdline.read_bytes().split(b"\0")
    except OSError:
        return None
    for word in words:
        if word.decode(errors="replace") in PROCESSES:
            return word.decode()
    return None


def check_api(settings: Settings, timeout: float) -> str | None:
    """The API answers its health endpoint, and reports the database and broker up."""
    url = f"http://127.0.0.1:{settings.api_port}/api/workflows/monitoring/health"
    try:
        answer = requests.get(url, timeout=timeout)
    except requests.RequestException as e:
        return f"API not answering on {url}: {type(e).__name__}"
    if answer.status_code != 200:
        return f"API health answered {answer.status_code}: {answer.text[:200]}"
    return None


def check_flower(settings: Settings, timeout: float) -> str | None:
    """Flower answers its ``/healthcheck``."""
    url = f"http://127.0.0.1:{settings.flower_port}/healthcheck"
    auth = None
    if settings.flower_basic_auth:
        user, _, password = settings.flower_basic_auth.split(",")[0].partition(":")
        auth = (user, password)
    try:
        answer = requests.get(url, timeout=timeout, auth=auth)
    except requests.RequestException as e:
        return f"Flower not answering on {url}: {type(e).__name__}"
    return None if answer.status_code == 200 else f"Flower answered {answer.status_code}"


def check_worker(settings: Settings, timeout: float) -> str | None:
    """A worker on this host answers a Celery ping."""
    from atom.celery_app import make_celery

    app = make_celery(settings)
    try:
        replies = app.control.ping(timeout=timeout) or []
    except Exception as e:  # the broker is down: unhealthy, whatever the cause
        return f"cannot reach the broker: {type(e).__name__}"
    finally:
        app.close()
    here = socket.gethostname()
    names = [name for reply in replies for name in reply]
    if any(name.rpartition("@")[2] == here for name in names):
        return None
    return f"no worker on {here} answered a ping (answered: {', '.join(names) or 'none'})"


def check_beat(settings: Settings, timeout: float) -> str | None:
    """The database and Redis answer, and the active beat's heartbeat is fresh."""
    from atom.celery_app import make_celery
    from atom.observe.probe import Probe
    from atom.store.db import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url or "", pool_size=1)
    app = make_celery(settings)
    probe = Probe(make_sessionmaker(engine), app, settings, ping_timeout=timeout)
    try:
        if not probe.database():
            return "database not answering"
        beat = probe.beat()
        return None if beat["status"] == "ok" else f"beat heartbeat is stale: {beat}"
    finally:
        probe.close()
        app.close()
        engine.dispose()


CHECKS = {"api": check_api, "worker": check_worker, "beat": check_beat, "flower": check_flower}


def cmd_health(settings: Settings, args: argparse.Namespace) -> int:
    """Run the check of ``args.process`` (default: the container's own process)."""
    process = args.process or running_process()
    if process is None:
        print("atom health: name the process to check (api, worker, beat or flower)")
        return 2
    if process == "beat" and not settings.database_url:
        print("beat: DATABASE_URL is not set")
        return 1
    problem = CHECKS[process](settings, args.timeout)
    print(f"{process}: {problem or 'ok'}")
    return 1 if problem else 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """``atom health``'s arguments."""
    health = sub.add_parser("health", help="check a process (the container's HEALTHCHECK)")
    health.add_argument("process", nargs="?", choices=PROCESSES)
    health.add_argument("--timeout", type=float, default=3.0)
