"""The series ``POST /api/anomaly/detect`` takes, checked in the API process (no NumPy)."""

from __future__ import annotations

import pytest

from atom.anomaly import series
from atom.errors import InvalidInput


def test_timestamps_are_epoch_seconds_or_iso_8601_utc_by_default():
    assert series.epoch_seconds(1_767_225_600) == 1_767_225_600.0
    assert series.epoch_seconds("2026-01-01T00:00:00Z") == 1_767_225_600.0
    assert series.epoch_seconds("2026-01-01T00:00:00") == 1_767_225_600.0  # no zone: UTC
    assert series.epoch_seconds("2026-01-01T01:00:00+01:00") == 1_767_225_600.0
    for bad in (True, None, [1], "yesterday", 10**400, float("nan")):
        with pytest.raises(ValueError):
            series.epoch_seconds(bad)


def test_parse_keeps_gaps_and_equal_timestamps():
    checked = series.parse(
        [
            {"timestamp": 1, "value": 2},
            {"timestamp": 1, "value": None},
            {"timestamp": "1970-01-01T00:00:03Z", "value": 4.5},
        ]
    )
    assert checked.timestamps == [1.0, 1.0, 3.0]
    assert checked.values == [2.0, None, 4.5]


def _errors(points) -> dict:
    with pytest.raises(InvalidInput) as refused:
        series.parse(points)
    return refused.value.errors


def test_parse_names_every_problem_and_the_first_point_out_of_order():
    assert _errors({"timestamp": 1}) == {"series": ["must be a list of {timestamp, value} objects"]}
    assert _errors([{"timestamp": 1, "value": True}, "x"]) == {
        "series[0].value": ["must be a finite number or null"],
        "series[1]": ["must be an object {timestamp, value}"],
    }
    order = _errors([{"timestamp": t, "value": 0} for t in (1, 3, 2, 1)])
    assert list(order) == ["series[2].timestamp"]
    too_many = _errors([{"timestamp": i, "value": 0} for i in range(series.MAX_POINTS + 1)])
    assert too_many == {"series": ["has 25001 points; at most 25000 per call"]}
