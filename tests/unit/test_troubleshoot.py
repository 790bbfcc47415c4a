"""Troubleshooting without services: classification, root cause by the DAG, resolutions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from atom.runs.engine import with_overrides
from atom.troubleshoot.categories import Category
from atom.troubleshoot.classify import classify, database_is_transient, status_category
from atom.troubleshoot.diagnose import diagnose, retry_after_seconds
from atom.troubleshoot.records import Context, RunRecord, StepRecord
from atom.troubleshoot.resolutions import plan
from atom.workflow.definition import parse_definition

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _definition(url: str = "https://api.example.com/users", template: str | None = None):
    greet = "{{ steps.fetch.output.body.email }}" if template is None else template
    return parse_definition(
        {
            "name": "wf",
            "nodes": [
                {"id": "start", "type": "trigger", "config": {"kind": "manual"}},
                {
                    "id": "fetch",
                    "type": "action",
                    "config": {"action_type": "http_request", "url": url},
                    "retry": {"max_retries": 1, "retry_delay": 0.5},
                    "timeout": 10,
                },
                {
                    "id": "greet",
                    "type": "action",
                    "config": {"action_type": "transform", "output": {"to": greet}},
                },
                {
                    "id": "notify",
                    "type": "action",
                    "config": {"action_type": "log", "message": "done"},
                },
            ],
            "connections": [
                {"source": "start", "target": "fetch"},
                {"source": "fetch", "target": "greet"},
                {"source": "greet", "target": "notify"},
            ],
        }
    )


def _step(node_id: str, status: str, **kw) -> StepRecord:
    kw.setdefault("started_at", T0)
    kw.setdefault("finished_at", T0 + timedelta(seconds=1))
    return StepRecord(node_id, status, attempts=kw.pop("attempts", 1), **kw)


def _run(version: int, steps: list[StepRecord], status: str = "failed") -> RunRecord:
    return RunRecord(uuid.uuid4(), version, status, {s.node_id: s for s in steps})


def _ctx(run, definition=None, history=(), versions=None, logs=()) -> Context:
    definition = definition or _definition()
    return Context(
        run=run,
        definition=definition,
        versions=versions or {run.version: definition},
        history=list(history),
        hosts={},
        now=T0 + timedelta(seconds=5),
        error_logs=tuple(logs),
    )


def _http_failure(code: int, headers: dict | None = None) -> StepRecord:
    return _step(
        "fetch",
        "failed",
        attempts=2,
        input={"url": "https://api.example.com/users"},
        output={"status_code": code, "headers": headers or {}, "body": {}},
        error={"node_id": "fetch", "type": "RetryableError", "message": f"answered {code}"},
    )


def _skipped(*nodes: str) -> list[StepRecord]:
    return [
        _step(n, "skipped", error={"type": "Skipped", "message": "upstream failed: fetch"})
        for n in nodes
    ]


@pytest.mark.parametrize(
    ("line", "category"),
    [
        ("requests.exceptions.ConnectTimeout: connect timeout=5", Category.TIMEOUT),
        ("HTTP 429: slow down, Retry-After: 30", Category.RATE_LIMITED),
        ("upstream answered 503 Service Unavailable", Category.UPSTREAM_5XX),
        ("connect ECONNREFUSED 10.1.1.1:443", Category.CONNECTION),
        ("401 Unauthorized: token expired", Category.AUTH),
        ("GET /v1/items/9 -> 404 Not Found", Category.NOT_FOUND),
        ("400 Bad Request: missing required field 'name'", Category.BAD_REQUEST),
        (
            "jinja2.exceptions.UndefinedError: 'dict object' has no attribute 'id'",
            Category.DATA_SHAPE,
        ),
        ("Reason: OOMKilled", Category.WORKER_LOST),
        ("psycopg2.OperationalError: server closed the connection", Category.DATABASE),
        ("all good, 12 rows synced", Category.UNKNOWN),
    ],
)
def test_classify_lines(line: str, category: Category) -> None:
    found = classify(line)
    assert found.category is category
    assert 0 < found.confidence <= 1


def test_status_codes_and_database_transience() -> None:
    assert [status_category(c) for c in (429, 503, 401, 404, 422, 504, 200)] == [
        Category.RATE_LIMITED,
        Category.UPSTREAM_5XX,
        Category.AUTH,
        Category.NOT_FOUND,
        Category.BAD_REQUEST,
        Category.TIMEOUT,
        None,
    ]
    assert database_is_transient("psycopg2.OperationalError: could not connect to server")
    assert not database_is_transient('relation "orders" does not exist')


def test_database_outages_are_transient_unless_the_statement_is_at_fault() -> None:
    # Outages nobody listed by name are still outages: a retry after a wait may pass.
    for line in (
        "org.postgresql.util.PSQLException: Connection to db:5432 refused",
        "OperationalError: FATAL: the database system is starting up",
        "redis.exceptions.BusyLoadingError: Redis is loading the dataset in memory",
        "MongoNetworkTimeoutError: connection 3 to mongo:27017 timed out",
    ):
        assert database_is_transient(line), line
    # What the step sent is wrong: the same statement fails the same way.
    for line in (
        'psycopg2.errors.UndefinedColumn: column "emial" does not exist',
        'ERROR: syntax error at or near "SELEC"',
        "IntegrityError: insert or update on table violates foreign key constraint",
        "django.db.utils.OperationalError: FATAL: password authentication failed for user",
        "DataError: value too long / integer out of range",
    ):
        assert not database_is_transient(line), line


def test_retry_after_as_seconds_or_date() -> None:
    now = T0
    assert retry_after_seconds({"retry-after": "7"}, now) == 7.0
    assert retry_after_seconds({"Retry-After": "Tue, 01 Dec 2026 12:00:30 GMT"}, now) == 30.0
    assert retry_after_seconds({"Retry-After": "soon"}, now) is None
    assert retry_after_seconds(None, now) is None


def test_rate_limited_root_cause_with_effects_and_wait() -> None:
    run = _run(1, [_http_failure(429, {"Retry-After": "7"}), *_skipped("greet", "notify")])
    diagnosis = diagnose(_ctx(run, logs=["HTTP/1.1 429 Too Many Requests", "INFO started"]))
    root, *rest = diagnosis.issues
    assert (root.category, root.node_id, root.root_cause, root.transient) == (
        Category.RATE_LIMITED,
        "fetch",
        True,
        True,
    )
    assert {"kind": "retry_after", "seconds": 7.0} in root.evidence
    assert [(i.node_id, i.root_cause) for i in rest] == [("greet", False), ("notify", False)]
    assert any(e.get("kind") == "log" for e in root.evidence)
    assert [entry["category"] for entry in diagnosis.logs] == ["rate_limited", "unknown"]
    resolution = plan(root, _definition().node("fetch"), 0, {}, 300)
    assert resolution["automatic"] and resolution["wait_s"] == 7.5
    assert resolution["policy"]["fetch"]["retry"]["retry_delay"] >= 7


@pytest.mark.parametrize(
    ("code", "category", "automatic"),
    [
        (503, Category.UPSTREAM_5XX, True),
        (401, Category.AUTH, False),
        (404, Category.NOT_FOUND, False),
        (400, Category.BAD_REQUEST, False),
    ],
)
def test_status_decides_category_and_safety(code, category, automatic) -> None:
    run = _run(1, [_http_failure(code), *_skipped("greet", "notify")])
    root = diagnose(_ctx(run)).issues[0]
    assert root.category is category
    assert plan(root, _definition().node("fetch"), 0, {}, 300)["automatic"] is automatic


def test_outage_backs_off_longer_each_time_and_adds_retries() -> None:
    run = _run(1, [_http_failure(502), *_skipped("greet", "notify")])
    root = diagnose(_ctx(run)).issues[0]
    first = plan(root, _definition().node("fetch"), 0, {}, 300)
    second = plan(root, _definition().node("fetch"), 1, {}, 300)
    assert second["wait_s"] > first["wait_s"]
    assert first["policy"]["fetch"]["retry"]["max_retries"] > 1


def test_timeout_raises_the_limit() -> None:
    failed = _step(
        "fetch",
        "failed",
        input={"url": "https://api.example.com/users"},
        error={"type": "TimeoutError", "message": "step 'fetch' timed out after 10 s"},
    )
    root = diagnose(_ctx(_run(1, [failed, *_skipped("greet", "notify")]))).issues[0]
    assert root.category is Category.TIMEOUT
    resolution = plan(root, _definition().node("fetch"), 0, {}, 300)
    assert resolution["policy"]["fetch"]["timeout"] == 20
    assert resolution["policy"]["fetch"]["config"]["timeout"] == 20


def test_missing_field_is_data_shape_with_a_fix() -> None:
    fetch = _step(
        "fetch",
        "succeeded",
        output={"status_code": 200, "body": {"contact": {"email": "a@b.c"}, "id": 1}},
    )
    greet = _step(
        "greet",
        "failed",
        error={
            "type": "PermanentError",
            "message": "nodes[greet].config.output.to: 'dict object' has no attribute 'email'",
        },
    )
    run = _run(1, [fetch, greet, *_skipped("notify")])
    root = diagnose(_ctx(run)).issues[0]
    assert (root.category, root.node_id, root.transient) == (Category.DATA_SHAPE, "greet", False)
    shape = next(e for e in root.evidence if e["kind"] == "missing_field")
    assert shape["upstream"] == "fetch" and shape["missing"] == "body.email"
    assert shape["available"] == ["contact", "id"]
    resolution = plan(root, _definition().node("greet"), 0, {}, 300)
    assert resolution["action"] == "fix_template" and not resolution["automatic"]
    assert resolution["changes"]["template"] == "{{ steps.fetch.output.body.contact.email }}"


def test_failure_that_began_with_a_new_version_is_a_regression() -> None:
    v1, v2 = _definition(), _definition(url="https://api.example.com/v2/users")
    good = _run(1, [_step("fetch", "succeeded"), _step("greet", "succeeded")], "succeeded")
    bad = _run(2, [_http_failure(404), *_skipped("greet", "notify")])
    root = diagnose(_ctx(bad, v2, history=[good], versions={1: v1, 2: v2})).issues[0]
    assert root.category is Category.VERSION_REGRESSION
    change = next(e for e in root.evidence if e["kind"] == "version_change")
    assert change["last_good_version"] == 1 and change["changed_nodes"] == ["fetch"]
    assert change["symptom"] == "not_found"
    resolution = plan(root, v2.node("fetch"), 0, {}, 300)
    assert resolution["action"] == "revert_version" and resolution["changes"] == {"version": 1}


def test_same_failure_on_an_unchanged_version_is_not_a_regression() -> None:
    v1 = _definition()
    good = _run(1, [_step("fetch", "succeeded")], "succeeded")
    bad = _run(1, [_http_failure(404), *_skipped("greet", "notify")])
    root = diagnose(_ctx(bad, v1, history=[good], versions={1: v1})).issues[0]
    assert root.category is Category.NOT_FOUND


def test_stuck_step_without_heartbeat_is_worker_lost() -> None:
    running = _step("fetch", "running", finished_at=None, heartbeat_at=T0 - timedelta(minutes=2))
    run = _run(
        1, [running, _step("greet", "pending", started_at=None, finished_at=None)], "running"
    )
    root = diagnose(_ctx(run)).issues[0]
    assert root.category is Category.WORKER_LOST and root.transient
    assert plan(root, _definition().node("fetch"), 0, {}, 300)["action"] == "redrive"


def test_logs_alone_are_evidence_when_no_step_failed() -> None:
    run = _run(1, [_step("fetch", "succeeded", finished_at=T0 + timedelta(seconds=1))], "succeeded")
    logs = ["psycopg2.OperationalError: could not connect to server", "FATAL: too many clients"]
    root = diagnose(_ctx(run, logs=logs)).issues[0]
    assert root.category is Category.DATABASE and root.node_id is None and root.transient


def test_overrides_change_only_this_runs_policy() -> None:
    definition = _definition()
    changed = with_overrides(
        definition,
        {"fetch": {"timeout": 30, "retry": {"max_retries": 4}, "config": {"timeout": 30}}},
    )
    fetch = changed.node("fetch")
    assert (fetch.timeout, fetch.retry.max_retries, fetch.retry.retry_delay) == (30, 4, 0.5)
    assert (
        fetch.config["timeout"] == 30
        and fetch.config["url"] == definition.node("fetch").config["url"]
    )
    assert definition.node("fetch").timeout == 10
    assert with_overrides(definition, None) is definition


def test_a_retry_after_longer_than_atom_waits_needs_a_person() -> None:
    run = _run(1, [_http_failure(429, {"Retry-After": "3600"}), *_skipped("greet", "notify")])
    root = diagnose(_ctx(run)).issues[0]
    assert root.category is Category.RATE_LIMITED
    resolution = plan(root, _definition().node("fetch"), 0, {}, 300)
    assert resolution["automatic"] is False and "3600" in resolution["description"]


def test_a_run_that_used_most_of_its_limit_gets_a_longer_timeout_suggested() -> None:
    slow = _step("fetch", "succeeded", finished_at=T0 + timedelta(seconds=9.2))
    run = _run(1, [slow, _step("greet", "succeeded"), _step("notify", "succeeded")], "succeeded")
    root = diagnose(_ctx(run)).issues[0]
    assert (root.category, root.node_id, root.transient) == (Category.TIMEOUT, "fetch", False)
    resolution = plan(root, _definition().node("fetch"), 0, {}, 300)
    assert resolution["action"] == "raise_timeout" and not resolution["automatic"]
    assert resolution["changes"] == {"node_id": "fetch", "timeout": 20}
    quick = _run(1, [_step("fetch", "succeeded")], "succeeded")
    assert diagnose(_ctx(quick)).issues == []


def test_notices_go_out_when_atom_acted_or_needs_someone() -> None:
    from atom.store.models import TroubleshootingSession
    from atom.troubleshoot.sessions import notice_of, notice_text

    def row(status: str, origin: str, auto_retries: int = 0, decisions=()) -> Any:
        return TroubleshootingSession(
            status=status, origin=origin, auto_retries=auto_retries, decisions=list(decisions)
        )

    retried = [{"decision": "retried", "by": "atom"}]
    redriven = [{"decision": "retried", "by": "reconciler"}]
    person = [{"decision": "retried", "by": "person"}]
    assert notice_of(row("resolved", "auto", 1, retried)) == (
        "troubleshooting.resolved",
        "succeeded",
    )
    assert notice_of(row("resolved", "reconciler", 0, redriven)) == (
        "troubleshooting.resolved",
        "succeeded",
    )
    assert notice_of(row("needs_attention", "auto", 3, retried)) == (
        "troubleshooting.needs_attention",
        "failed",
    )
    assert notice_of(row("needs_attention", "auto")) == ("troubleshooting.needs_attention", None)
    # A person asked (the answer is the response) or is at it: nothing is sent.
    assert notice_of(row("needs_attention", "api")) is None
    assert notice_of(row("resolved", "api")) is None
    assert notice_of(row("resolved", "auto", 1, [*retried, *person])) is None
    assert notice_of(row("open", "auto", 1, retried)) is None
    text = notice_text(
        {
            "event": "troubleshooting.resolved",
            "auto_resolution": "succeeded",
            "workflow_name": "billing",
            "root_cause": {"category": "rate_limited", "node_id": "charge"},
        }
    )
    assert (
        text
        == "[ATOM] troubleshooting: billing resolved automatically (rate_limited at step charge)"
    )


def test_notice_channels_setting() -> None:
    from atom.config import ConfigError, Settings

    assert Settings.from_env({}).troubleshoot_notify == ("webhook", "slack", "email")
    assert Settings.from_env({"ATOM_TROUBLESHOOT_NOTIFY": "none"}).troubleshoot_notify == ()
    chosen = Settings.from_env({"ATOM_TROUBLESHOOT_NOTIFY": "Email, webhook"})
    assert chosen.troubleshoot_notify == ("email", "webhook")
    assert Settings.from_env(chosen.as_env()).troubleshoot_notify == ("email", "webhook")
    with pytest.raises(ConfigError, match="ATOM_TROUBLESHOOT_NOTIFY.*pager"):
        Settings.from_env({"ATOM_TROUBLESHOOT_NOTIFY": "webhook,pager"})


def test_a_stuck_run_waits_at_its_ready_steps() -> None:
    from atom.troubleshoot.stuck import _ready

    definition = parse_definition(
        {
            "name": "w",
            "nodes": [
                {"id": "start", "type": "trigger", "config": {"kind": "manual"}},
                {"id": "a", "type": "action", "config": {"action_type": "log", "message": "m"}},
                {"id": "b", "type": "action", "config": {"action_type": "log", "message": "m"}},
                {"id": "c", "type": "action", "config": {"action_type": "log", "message": "m"}},
            ],
            "connections": [
                {"source": "start", "target": "a"},
                {"source": "a", "target": "b"},
                {"source": "start", "target": "c"},
            ],
        }
    )

    class Row:
        def __init__(self, status: str) -> None:
            self.status = status

    steps = {"start": Row("succeeded"), "a": Row("succeeded"), "b": Row("pending")}
    assert _ready(definition, steps) == ["b", "c"]
