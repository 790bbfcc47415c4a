"""The streaming anomaly detector (``atom.ml.anomaly``), without a worker: no look-ahead on
random cuts, spikes and level shifts flagged, a steady series quiet, gaps, irregular sampling
and the cold start handled."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from atom.ml import anomaly

START = 1_767_225_600.0  # 2026-01-01 00:00 UTC


def noisy(n: int, seed: int, step: float = 300.0) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    t = (START + step * np.arange(n)).tolist()
    x = (50 + rng.normal(0, 2, n)).tolist()
    return t, x


def test_no_look_ahead_on_random_cuts():
    rng = random.Random(7)
    t, x = noisy(1500, seed=3)
    x = [v + (12 if 700 <= i < 900 else 0) + 20 * math.sin(i / 40) for i, v in enumerate(x)]
    x[300] = None  # a gap
    x[1000] += 40  # a spike
    whole = anomaly.score_series(t, x)
    for _ in range(6):
        cut = rng.randrange(1, len(x))
        part = anomaly.score_series(t[:cut], x[:cut])
        assert part["scores"] == whole["scores"][:cut]
        assert part["expected"] == whole["expected"][:cut]


def test_the_memory_bound_holds_a_window_scores_its_last_points_the_same():
    t, x = noisy(anomaly.MEMORY + 400, seed=5)
    whole = anomaly.score_series(t, x)["scores"]
    tail = anomaly.score_series(t[-(anomaly.MEMORY + 50) :], x[-(anomaly.MEMORY + 50) :])["scores"]
    assert tail[-50:] == whole[-50:]


def test_a_spike_and_a_level_shift_are_flagged_and_a_steady_series_is_quiet():
    t, x = noisy(3000, seed=11)
    steady = anomaly.score_series(t, x)
    assert len(steady["anomalies"]) <= 1, steady["anomalies"]
    x[1200] += 30  # 15 standard deviations
    for i in range(2000, 3000):
        x[i] += 12  # a level shift of 6 standard deviations
    found = anomaly.score_series(t, x)
    assert 1200 in found["anomalies"]
    assert any(2000 <= i < 2010 for i in found["anomalies"])
    # the new level is learnt: its later points are no longer anomalies
    assert [i for i in found["anomalies"] if i >= 2100] == []
    assert found["scores"] != steady["scores"]


def test_sensitivity_moves_the_threshold_never_the_scores():
    t, x = noisy(800, seed=2)
    x[500] += 9
    low, high = anomaly.score_series(t, x, 0.0), anomaly.score_series(t, x, 1.0)
    assert low["scores"] == high["scores"]
    assert low["threshold"] > high["threshold"]
    assert set(low["anomalies"]) <= set(high["anomalies"])
    assert low["anomalies"] == [i for i, s in enumerate(low["scores"]) if s >= low["threshold"]]


def test_gaps_and_irregular_timestamps():
    rng = np.random.default_rng(4)
    t = np.cumsum(rng.exponential(300.0, 2000)) + START
    x: list[float | None] = (20 + rng.normal(0, 1, 2000)).tolist()
    for i in range(400, 460):
        x[i] = None
    x[1500] = 40.0
    out = anomaly.score_series(t.tolist(), x)
    assert out["scores"][400:460] == [None] * 60 and out["expected"][410] is None
    assert all(0.0 <= s <= 1.0 for s in out["scores"] if s is not None)
    assert 1500 in out["anomalies"]
    low, high = out["expected"][1499]
    assert low < 20 < high


def test_daily_seasonality_is_learnt():
    n = 288 * 10  # ten days every five minutes
    t, x = noisy(n, seed=8)
    x = [v + 25 * math.sin(2 * math.pi * i / 288) for i, v in enumerate(x)]
    quiet = anomaly.score_series(t, x)
    assert [i for i in quiet["anomalies"] if i > 288 * 2] == []
    x[288 * 8 + 72] -= 20  # a dip at the daily peak: normal for the day, not for the hour
    assert 288 * 8 + 72 in anomaly.score_series(t, x)["anomalies"]


def test_cold_start_with_three_points_returns_scores():
    out = anomaly.score_series([START, START + 60, START + 120], [10.0, 10.5, 10.2])
    assert len(out["scores"]) == 3 and all(isinstance(s, float) for s in out["scores"])
    assert out["anomalies"] == []
    spike = anomaly.score_series(
        [START, START + 60, START + 120, START + 180], [10, 10.5, 10.2, 90]
    )
    assert spike["anomalies"] == [3]


def test_a_constant_series_has_a_scale_and_flags_a_change():
    t = [START + 60 * i for i in range(300)]
    x = [0.0] * 300
    x[250] = 3.0
    out = anomaly.score_series(t, x)
    assert out["anomalies"] == [250]


def test_empty_missing_timestamps_and_bad_input():
    assert anomaly.score_series([], []) == {
        "scores": [],
        "expected": [],
        "threshold": anomaly.threshold_for(0.5),
        "anomalies": [],
    }
    assert len(anomaly.score_series([None] * 5, [1.0, 2.0, 1.0, 2.0, 1.0])["scores"]) == 5
    with pytest.raises(ValueError, match="point 2 is earlier"):
        anomaly.score_series([3.0, 4.0, 1.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="sensitivity"):
        anomaly.score_series([1.0], [1.0], 1.5)
    with pytest.raises(ValueError, match="2 timestamps for 1 values"):
        anomaly.score_series([1.0, 2.0], [1.0])


def test_scores_map_to_surprise_and_back():
    assert anomaly.score_of(np.array([anomaly.SCORE_HALF]))[0] == pytest.approx(0.5)
    assert anomaly.surprise_of(0.5) == pytest.approx(anomaly.SCORE_HALF)


def test_a_slow_drift_is_flagged_once_it_is_clear_and_not_at_every_point_after():
    t, x = noisy(3000, seed=21)
    for i in range(1500, 3000):
        x[i] += 16 * min(1.0, (i - 1500) / 300)  # 8 standard deviations over 300 points
    found = anomaly.score_series(t, x)["anomalies"]
    assert [i for i in found if 1500 <= i < 1800], found
    assert [i for i in found if i >= 2100] == []


def test_a_series_of_small_counts_is_quiet_until_a_burst():
    # Mostly zeros with ones and twos (a queue depth, an error count): a count moving by one
    # or two is no surprise; a burst of 20 is.
    rng = np.random.default_rng(3)
    x = rng.poisson(0.2, 5000).astype(float)
    x[4000:4010] += 20
    t = [START + 60.0 * i for i in range(5000)]
    found = anomaly.score_series(t, x.tolist())["anomalies"]
    assert 4000 in found
    assert len([i for i in found if i < 4000]) <= 3, found
