"""Schedules on real beat processes, and webhook and event triggers, end to end."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import update

from atom.client import ApiError, Client
from atom.config import Settings
from tests.conftest import Processes
from tests.integration.helpers import action, trigger, workflow


@pytest.fixture
def beats(processes: Processes, worker) -> Iterator[Callable[[], subprocess.Popen]]:
    """start() runs a real beat process; all of them stop when the test ends."""
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = processes.start("beat", name="beat")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        processes.stop(proc)


def quick_workflow(client: Client, seconds: float = 0) -> str:
    nodes = [trigger(kind="schedule"), action("tick", "delay", seconds=seconds)]
    return client.create_workflow(workflow("ticker", nodes, [("start", "tick")]))["id"]


def fires(client: Client, schedule_id: str) -> list[dict]:
    rows = client.request("GET", f"/api/schedules/{schedule_id}/fires?page_size=100")
    return sorted(rows, key=lambda f: f["fire_time"])


def wait_for_fires(client: Client, schedule_id: str, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fires(client, schedule_id)
        if len([f for f in got if f["status"] == "started"]) >= count:
            return got
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} fires: {fires(client, schedule_id)}")


def assert_no_gaps_or_duplicates(rows: list[dict], step: float) -> None:
    times = [datetime.fromisoformat(f["fire_time"]) for f in rows]
    assert len(times) == len(set(times)), "a fire time was recorded twice"
    gaps = {(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)}
    assert gaps <= {step}, f"unexplained gaps: {sorted(gaps)} in {[t.isoformat() for t in times]}"


def test_schedule_api_validates_and_describes(client: Client, make_key, api_url: str):
    wf = quick_workflow(client)
    with pytest.raises(ApiError) as bad:
        client.request(
            "POST",
            "/api/schedules",
            json={"workflow_id": wf, "cron": "61 * * * *", "timezone": "Mars/Base"},
        )
    assert bad.value.status == 422
    where = bad.value.body["errors"]
    assert "not a valid cron" in where["cron"][0] and "IANA" in where["timezone"][0]
    with pytest.raises(ApiError) as neither:
        client.request("POST", "/api/schedules", json={"workflow_id": wf})
    assert "exactly one of cron and interval_seconds" in neither.value.body["message"]
    with pytest.raises(ApiError) as unknown:
        client.request(
            "POST",
            "/api/schedules",
            json={"workflow_id": "00000000-0000-0000-0000-000000000000", "cron": "* * * * *"},
        )
    assert "no workflow" in unknown.value.body["errors"]["workflow_id"][0]

    created = client.request(
        "POST",
        "/api/schedules",
        json={
            "workflow_id": wf,
            "cron": "0 9 * * 1-5",
            "timezone": "Europe/Berlin",
            "enabled": False,
        },
    )
    assert created["description"] == "At 09:00 AM, Monday through Friday (Europe/Berlin)"
    assert created["next_runs"] == []  # disabled
    patched = client.request("PATCH", f"/api/schedules/{created['id']}", json={"enabled": True})
    runs = [datetime.fromisoformat(t) for t in patched["next_runs"]]
    assert len(runs) == 5 and all(t.hour == 9 and t.weekday() < 5 for t in runs)
    assert all(t.utcoffset() in (timedelta(hours=1), timedelta(hours=2)) for t in runs)

    other = Client(api_url, make_key("admin"))
    with pytest.raises(ApiError) as hidden:
        other.request("GET", f"/api/schedules/{created['id']}")
    assert hidden.value.status == 404
    assert other.request("GET", "/api/schedules") == []
    client.request("DELETE", f"/api/schedules/{created['id']}")
    with pytest.raises(ApiError) as gone:
        client.request("GET", f"/api/schedules/{created['id']}")
    assert gone.value.status == 404


def test_interval_schedule_fires_on_time_and_disable_stops_it(client: Client, beats):
    beats()
    wf = quick_workflow(client)
    schedule = client.request(
        "POST",
        "/api/schedules",
        json={"workflow_id": wf, "interval_seconds": 2, "input": {"from": "clock"}},
    )
    assert schedule["description"] == "Every 2 seconds"
    rows = wait_for_fires(client, schedule["id"], 4, timeout=30)
    assert_no_gaps_or_duplicates(rows, 2.0)
    for row in rows[:4]:
        assert row["status"] == "started" and row["execution_id"]
        run = client.wait(row["execution_id"])
        assert run["status"] == "succeeded"
        assert run["input"] == {"from": "clock"}
        assert run["trigger"] == {
            "kind": "schedule",
            "schedule_id": schedule["id"],
            "fire_time": datetime.fromisoformat(row["fire_time"]).astimezone(UTC).isoformat(),
        }
        lateness = datetime.fromisoformat(run["created_at"]) - datetime.fromisoformat(
            row["fire_time"]
        )
        assert lateness < timedelta(seconds=2), lateness

    client.request("PATCH", f"/api/schedules/{schedule['id']}", json={"enabled": False})
    time.sleep(1)
    count = len(fires(client, schedule["id"]))
    time.sleep(5)
    assert len(fires(client, schedule["id"])) == count


def test_two_beats_at_once_never_double_a_fire(client: Client, beats):
    beats()
    beats()
    schedule = client.request(
        "POST",
        "/api/schedules",
        json={"workflow_id": quick_workflow(client), "interval_seconds": 2, "overlap": "allow"},
    )
    rows = wait_for_fires(client, schedule["id"], 5, timeout=30)
    assert_no_gaps_or_duplicates(rows, 2.0)
    assert all(f["status"] == "started" for f in rows), [
        (f["fire_time"], f["status"], f["reason"], f["source"])
        for f in rows
        if f["status"] != "started"
    ]


def test_killed_and_restarted_beat_neither_doubles_nor_drops_a_fire(
    client: Client, beats, processes: Processes
):
    first = beats()
    schedule = client.request(
        "POST",
        "/api/schedules",
        json={"workflow_id": quick_workflow(client), "interval_seconds": 2, "overlap": "allow"},
    )
    wait_for_fires(client, schedule["id"], 2, timeout=30)
    processes.stop(first, signal.SIGKILL)
    time.sleep(4)
    beats()
    before = len(fires(client, schedule["id"]))
    rows = wait_for_fires(client, schedule["id"], before + 3, timeout=60)
    assert_no_gaps_or_duplicates(rows, 2.0)
    assert all(f["status"] == "started" for f in rows), [
        (f["fire_time"], f["status"], f["reason"], f["source"])
        for f in rows
        if f["status"] != "started"
    ]


def test_flushall_loses_no_schedule(client: Client, beats, settings: Settings):
    beats()
    schedule = client.request(
        "POST",
        "/api/schedules",
        json={"workflow_id": quick_workflow(client), "interval_seconds": 2, "overlap": "allow"},
    )
    wait_for_fires(client, schedule["id"], 2, timeout=30)
    redis.Redis.from_url(settings.celery_broker).flushall()
    flushed_at = datetime.now(UTC)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until fires resume and the record is whole again
        rows = fires(client, schedule["id"])
        times = [datetime.fromisoformat(f["fire_time"]) for f in rows]
        whole = {(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)} == {2.0}
        if whole and times[-1] > flushed_at + timedelta(seconds=6):
            break
        time.sleep(1)
    assert_no_gaps_or_duplicates(rows, 2.0)
    assert times[-1] > flushed_at + timedelta(seconds=6), "no fire after the flush"
    assert all(f["status"] == "started" for f in rows)
    restored_by = {f["source"] for f in rows if datetime.fromisoformat(f["fire_time"]) > flushed_at}
    assert restored_by <= {"beat", "sweeper"}


def test_overlap_skip_records_why_no_run_started(client: Client, beats):
    beats()
    schedule = client.request(
        "POST",
        "/api/schedules",
        json={
            "workflow_id": quick_workflow(client, seconds=3.5),
            "interval_seconds": 1,
            "overlap": "skip",
        },
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = fires(client, schedule["id"])
        if len([f for f in rows if f["status"] == "started"]) >= 2:
            break
        time.sleep(0.5)
    client.request("PATCH", f"/api/schedules/{schedule['id']}", json={"enabled": False})
    skipped = [f for f in rows if f["status"] == "skipped"]
    assert skipped and all("still running" in f["reason"] for f in skipped)
    runs = [client.wait(f["execution_id"]) for f in rows if f["status"] == "started"]
    windows = sorted(
        (datetime.fromisoformat(r["created_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in runs
    )
    for (_, end), (start, _) in zip(windows, windows[1:], strict=False):
        assert start >= end - timedelta(milliseconds=50), "two runs overlapped"


@pytest.mark.parametrize("catchup", [False, True])
def test_downtime_is_missed_or_caught_up_by_policy(
    client: Client, settings: Settings, catchup: bool
):
    from atom.celery_app import make_celery
    from atom.schedules import firing
    from atom.store.db import make_engine, make_sessionmaker
    from atom.store.models import Schedule

    schedule = client.request(
        "POST",
        "/api/schedules",
        json={
            "workflow_id": quick_workflow(client),
            "interval_seconds": 2,
            "catchup": catchup,
            "max_catchup": 3,
            "overlap": "allow",
        },
    )
    factory = make_sessionmaker(make_engine(settings.database_url or ""))
    now = datetime.now(UTC)
    with factory.begin() as session:  # as if the scheduler had been down for 30 s
        session.execute(
            update(Schedule)
            .where(Schedule.id == schedule["id"])
            .values(anchor=now - timedelta(seconds=61), checked_until=now - timedelta(seconds=31))
        )
    app = make_celery(settings)
    try:
        counts = firing.sweep(factory, app, grace=3, misfire_grace=10, now=now)
    finally:
        app.close()
    rows = fires(client, schedule["id"])
    assert_no_gaps_or_duplicates(rows, 2.0)
    stale = [
        f for f in rows if datetime.fromisoformat(f["fire_time"]) < now - timedelta(seconds=10)
    ]
    recent = [f for f in rows if f not in stale]
    assert len(rows) == 14 and len(stale) == 10
    assert all(f["status"] == "started" and f["source"] == "sweeper" for f in recent)
    if catchup:
        assert [f["status"] for f in stale] == ["started"] * 3 + ["missed"] * 7
        assert counts == {"late": 4, "catchup": 3, "missed": 7}
    else:
        assert {f["status"] for f in stale} == {"missed"}
        assert "catchup is off" in stale[0]["reason"]
        assert counts == {"late": 4, "catchup": 0, "missed": 10}


def test_webhook_starts_its_workflow_and_rotation_revokes_the_old_token(
    client: Client, api_url: str, settings: Settings
):
    wf = client.create_workflow(
        workflow(
            "hooked",
            [trigger(kind="webhook"), action("echo", "transform", output="{{ input.order.id }}")],
            [("start", "echo")],
        )
    )
    hook = client.request("POST", f"/api/workflows/{wf['id']}/webhook")
    assert hook["url"].endswith(f"/api/hooks/{hook['token']}")
    posted = requests.post(
        f"{api_url}/api/hooks/{hook['token']}", json={"order": {"id": 77}}, timeout=10
    )
    assert posted.status_code == 202
    run = client.wait(posted.json()["id"])
    assert run["status"] == "succeeded" and run["output"] == {"echo": 77}
    assert run["trigger"] == {"kind": "webhook"}

    rotated = client.request("POST", f"/api/workflows/{wf['id']}/webhook")
    assert (
        requests.post(f"{api_url}/api/hooks/{hook['token']}", json={}, timeout=10).status_code
        == 404
    )
    not_json = requests.post(f"{api_url}/api/hooks/{rotated['token']}", data="not json", timeout=10)
    assert not_json.status_code == 400 and "line 1, column 1" in not_json.json()["message"]
    big = b'{"x": "' + b"a" * settings.webhook_max_bytes + b'"}'
    too_big = requests.post(
        f"{api_url}/api/hooks/{rotated['token']}",
        data=big,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert too_big.status_code == 413 and too_big.json()["code"] == 413
    client.request("DELETE", f"/api/workflows/{wf['id']}/webhook")
    assert (
        requests.post(f"{api_url}/api/hooks/{rotated['token']}", json={}, timeout=10).status_code
        == 404
    )
    assert requests.post(f"{api_url}/api/hooks/whk_unknown", json={}, timeout=10).status_code == 404


def test_events_start_only_the_callers_matching_workflows(api_url: str, make_key, worker):
    mine, theirs = Client(api_url, make_key("admin")), Client(api_url, make_key("admin"))

    def event_workflow(owner: Client, event_type: str) -> str:
        return owner.create_workflow(
            workflow(
                f"on-{event_type}",
                [
                    trigger(eventType=event_type),
                    action("got", "transform", output="{{ input.sku }}"),
                ],
                [("start", "got")],
            )
        )["id"]

    a, b = event_workflow(mine, "order.created"), event_workflow(mine, "order.created")
    event_workflow(mine, "order.cancelled")
    other = event_workflow(theirs, "order.created")
    result = mine.request(
        "POST", "/api/events", json={"type": "order.created", "payload": {"sku": "X-1"}}
    )
    started = {e["workflow_id"]: e["id"] for e in result["executions"]}
    assert set(started) == {a, b}
    for execution_id in started.values():
        run = mine.wait(execution_id)
        assert run["status"] == "succeeded" and run["output"] == {"got": "X-1"}
        assert run["trigger"] == {
            "kind": "event",
            "event_type": "order.created",
            "event_id": result["event_id"],
        }
    assert theirs.request("GET", f"/api/executions?workflow_id={other}") == []
    viewer = Client(api_url, make_key("viewer"))
    with pytest.raises(ApiError) as denied:
        viewer.request("POST", "/api/events", json={"type": "order.created"})
    assert denied.value.status == 403
    with pytest.raises(ApiError) as invalid:
        mine.request("POST", "/api/events", json={"payload": {}})
    assert invalid.value.status == 422


def _log(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text()  # type: ignore[attr-defined]


def test_a_new_schedule_entry_starts_at_the_schedule_not_at_the_write(
    client: Client, settings: Settings
):
    """The entry resumes from the record (creation time, last fire): a slot that falls
    between the insert and the entry's write is still beat's to send, not the sweeper's."""
    from atom.celery_app import make_celery
    from atom.schedules import entry as schedule_entry
    from atom.schedules import timing
    from atom.store.db import make_engine, make_sessionmaker
    from atom.store.models import Schedule

    created = client.request(
        "POST",
        "/api/schedules",
        json={"workflow_id": quick_workflow(client), "interval_seconds": 5, "enabled": True},
    )
    factory = make_sessionmaker(make_engine(settings.database_url or ""))
    with factory.begin() as session:
        stored = session.get(Schedule, created["id"])
        expected = next(timing.timing_of(stored).slots_after(stored.checked_until))
        resume = stored.checked_until
    from redbeat.schedulers import ensure_conf

    app = make_celery(settings)
    ensure_conf(app)
    try:
        entry = schedule_entry.ScheduleEntry.from_key(
            schedule_entry.ScheduleEntry.generate_key(
                app, schedule_entry.entry_name(created["id"])
            ),
            app=app,
        )
        assert entry.last_run_at == resume  # not the moment the entry was written
        assert entry.due_at == expected
    finally:
        app.close()
        client.request("DELETE", f"/api/schedules/{created['id']}")
