"""Custom metric and anomaly-rule validation, and how scoring is scheduled (no services)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from atom.alerts.validation import validate_rule
from atom.anomaly.validation import MetricBatchInSchema, MetricPointInSchema
from atom.config import Settings
from atom.errors import InvalidInput


def _problems(schema, doc) -> dict[str, list[str]]:
    with pytest.raises(InvalidInput) as caught:
        schema.load(doc)
    return caught.value.errors


def test_a_point_takes_iso_or_epoch_and_lists_every_problem():
    loaded = MetricPointInSchema().load({"name": "a.b:c/d-e_f", "value": 3, "timestamp": 0.5})
    assert loaded["timestamp"] == datetime(1970, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    naive = MetricPointInSchema().load({"name": "x", "value": 1, "timestamp": "2026-12-01T10:00"})
    assert naive["timestamp"] == datetime(2026, 12, 1, 10, tzinfo=UTC)
    assert naive["unit"] == "" and naive["workflow_id"] is None
    problems = _problems(
        MetricPointInSchema(),
        {"name": "", "value": float("inf"), "unit": "a\nb", "timestamp": "2026-13-01"},
    )
    assert set(problems) == {"name", "value", "unit", "timestamp"}
    ahead = datetime.now(UTC) + timedelta(minutes=10)
    assert set(
        _problems(MetricPointInSchema(), {"name": "x", "value": 1, "timestamp": ahead.isoformat()})
    ) == {"timestamp"}
    assert set(_problems(MetricBatchInSchema(), {"points": []})) == {"points"}
    assert set(
        _problems(MetricBatchInSchema(), {"points": [{"name": "x", "value": 1}, {"value": "1"}]})
    ) == {"points[1].name", "points[1].value"}


def test_anomaly_rules_default_and_canonicalise_their_selector():
    wf = uuid.uuid4()
    rule = validate_rule({"name": "r", "metric": "anomaly", "workflow_id": str(wf)})
    assert rule["series"] == {"workflow_id": str(wf)} and rule["workflow_id"] == wf
    assert (rule["comparison"], rule["threshold"], rule["window"]) == (">=", 0.9, "1h")
    queue = validate_rule(
        {"name": "q", "metric": "anomaly", "series": {"queue": "atom.steps"}, "window": "5m"}
    )
    assert queue["series"] == {"kind": "queue_depth", "name": "atom.steps"}
    assert queue["window"] == "5m" and queue["workflow_id"] is None
    assert validate_rule({"name": "e", "metric": "error_rate", "threshold": 0.2})["series"] is None
    with pytest.raises(InvalidInput) as caught:
        validate_rule(
            {
                "name": "r",
                "metric": "anomaly",
                "workflow_id": str(uuid.uuid4()),
                "series": {"workflow_id": str(wf), "action_type": "log", "queue": "q"},
            }
        )
    assert set(caught.value.errors) == {"series.queue", "series.workflow_id", "workflow_id"}


def test_scoring_and_pruning_are_scheduled_by_beat_and_the_context_covers_the_detector():
    from atom.ml import anomaly
    from beat.main import periodic_jobs

    settings = Settings()
    assert settings.anomaly_context >= anomaly.MEMORY  # the window gives whole-series scores
    jobs = periodic_jobs(settings)
    assert jobs["atom-score-metrics"]["task"] == "atom.maintenance.score_metrics"
    assert jobs["atom-score-metrics"]["schedule"] == timedelta(seconds=30)
    assert jobs["atom-prune-metrics"]["options"]["queue"] == "atom.maintenance"
    off = Settings(anomaly_interval=0)
    assert "atom-score-metrics" not in periodic_jobs(off)
    env = Settings.from_env({"ATOM_METRIC_RETENTION_DAYS": "7", "ATOM_ANOMALY_INTERVAL": "5"})
    assert (env.metric_retention_days, env.anomaly_interval) == (7.0, 5.0)
    assert Settings.from_env(env.as_env()).anomaly_interval == 5.0
