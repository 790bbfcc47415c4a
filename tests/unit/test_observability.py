"""Pure parts of observability: JSON log lines, windows, rule validation, URL redaction,
stale metrics folders, the progress bar."""

from __future__ import annotations

import json
import logging
import os
import subprocess

import pytest

from atom.alerts.validation import validate_rule
from atom.errors import InvalidInput
from atom.observe import logs
from atom.observe.stats import parse_window
from atom.observe.telemetry import remove_stale
from atom.security.netguard import redact_url
from cli.main import Progress


def _format(record: logging.LogRecord) -> dict:
    return json.loads(logs.JsonFormatter().format(record))


def test_a_log_line_is_one_json_object_with_the_bound_context():
    record = logging.LogRecord(
        "atom.worker", logging.INFO, __file__, 1, "step %s done", ("fetch",), None
    )
    with logs.context(execution_id="e-1", node_id="fetch"):
        logs.update(attempt=2, tenant="t-9")
        doc = _format(record)
    assert doc["message"] == "step fetch done" and doc["level"] == "INFO"
    assert (doc["execution_id"], doc["node_id"], doc["attempt"], doc["tenant"]) == (
        "e-1",
        "fetch",
        2,
        "t-9",
    )
    assert "execution_id" not in _format(record)  # unbound after the block
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line


def test_extras_and_exceptions_are_fields_and_newlines_stay_escaped():
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    record.node_id = "n"
    record.status = 503
    line = logs.JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["node_id"] == "n" and doc["status"] == 503 and "ValueError" in doc["exc"]


@pytest.mark.parametrize(
    "text, seconds", [("30s", 30), ("5m", 300), ("1h", 3600), ("7d", 604800), (" 2h ", 7200)]
)
def test_windows(text, seconds):
    assert parse_window(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "1", "h", "-1h", "1w", "31d", "0s", "1.5h"])
def test_bad_windows(text):
    with pytest.raises(ValueError):
        parse_window(text)


def test_rule_defaults():
    rule = validate_rule({"name": "slow", "metric": "performance_degradation"})
    assert (
        rule["comparison"],
        rule["threshold"],
        rule["window"],
        rule["severity"],
        rule["cooldown"],
        rule["channels"],
        rule["enabled"],
    ) == (">", 2.0, "5m", "medium", 300, [], True)
    assert validate_rule({"name": "w", "metric": "workers"})["comparison"] == "<"


def test_rule_problems_are_all_listed():
    with pytest.raises(InvalidInput) as caught:
        validate_rule(
            {
                "name": "",
                "metric": "error_rate",
                "threshold": True,
                "cooldown": 1.5,
                "enabled": "yes",
                "comparison": "=>",
                "channels": [{"type": "email", "to": "a@b.c\nBcc: x@y.z"}],
            }
        )
    assert set(caught.value.errors) == {
        "name",
        "threshold",
        "cooldown",
        "enabled",
        "comparison",
        "channels[0]",
    }


@pytest.mark.parametrize(
    "url, shown",
    [
        ("https://hooks.slack.com/services/T/B/secret", "https://hooks.slack.com/***"),
        ("http://127.0.0.1:8080/hook?token=x", "http://127.0.0.1:8080/***"),
        ("https://example.com", "https://example.com/"),
        ("https://user:pw@example.com/", "https://example.com/"),
        ("not a url", "***"),
    ],
)
def test_redaction(url, shown):
    assert redact_url(url) == shown


def test_stale_metrics_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f"worker-{dead.pid}").mkdir()
    (tmp_path / f"worker-{dead.pid}" / "counter_1.db").write_bytes(b"x")
    (tmp_path / f"api-{os.getpid()}").mkdir()
    (tmp_path / "notes").mkdir()
    assert remove_stale(tmp_path) == [f"worker-{dead.pid}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"api-{os.getpid()}", "notes"]


def test_progress_bar_counts_ended_steps_but_not_the_trigger():
    progress = Progress(width=10)
    progress.load(
        {
            "steps": [
                {"node_id": "start", "status": "succeeded", "action_type": "trigger"},
                {"node_id": "a", "status": "succeeded", "action_type": "log"},
                {"node_id": "b", "status": "running", "action_type": "log"},
                {"node_id": "c", "status": "pending", "action_type": "log"},
                {"node_id": "d", "status": "skipped", "action_type": "log"},
            ]
        }
    )
    assert progress.bar() == "[#####.....] 2/4"
    progress.see({"node_id": "b", "status": "failed"})
    assert progress.bar() == "[########..] 3/4"
