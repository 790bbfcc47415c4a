"""Streaming anomaly scores for one series, on the ML pool.

``score_series(timestamps, values, sensitivity)`` gives every point a score in [0, 1] that
depends only on the points before it and itself (no look-ahead): scoring a series cut at any
point gives the same scores for the points kept.

How a point is scored:

1. **Forecast.** Candidate forecasts of the point from the past: the *local level* (median of
   the previous ``LEVEL_WINDOW`` values), and the *daily* and *weekly seasonal* forecasts (the
   value one day / one week earlier, interpolated on the timestamps, plus the median offset of
   the last ``OFFSET_WINDOW`` points from their own seasonal value). The candidate whose
   residuals were smallest over the last ``SCALE_WINDOW`` points is used.
2. **Point surprise.** The residual divided by a robust scale of that candidate's past
   residuals (1.4826 x their median absolute value over the last ``SCALE_WINDOW`` points,
   floored by half their mean absolute value, so a mostly constant series still has a scale),
   inflated while there are few residuals (the cold start).
3. **Variance surprise.** The median of the last ``VARIANCE_WINDOW`` point surprises compared
   with what it is for noise (0.674): sustained larger residuals are a change of variance
   even when no single point stands out.
4. **Score.** ``z`` is the larger surprise; the score is ``z**2 / (z**2 + 16)`` (0.5 at four
   robust standard deviations). ``sensitivity`` only moves the threshold:
   ``threshold = 0.9 - 0.6 * sensitivity`` (0.6 by default, about 4.9 deviations).

Bounded memory: a point's score depends on at most the ``MEMORY`` points before it (the
scale and selection windows, plus the longest seasonal look-back ``MAX_LAG`` points), never
on where the series started; scoring the last ``MEMORY + k`` points of a series gives the
same last ``k`` scores as scoring all of it. Gaps (``None`` or non-finite values) get no
score and are not counted as points.

Only the ML pool imports this module (NumPy).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LEVEL_WINDOW = 9
"""Previous values whose median is the local-level forecast."""
OFFSET_WINDOW = 9
"""Previous seasonal differences whose median corrects a seasonal forecast's level."""
SCALE_WINDOW = 192
"""Previous residuals whose median absolute value is the scale (and that pick the forecast)."""
VARIANCE_WINDOW = 16
"""Latest point surprises whose median measures a change of variance."""
MAX_LAG = 3840
"""The farthest back (in points) a seasonal forecast may look."""
MEMORY = SCALE_WINDOW + VARIANCE_WINDOW + MAX_LAG + OFFSET_WINDOW
"""The most previous points any score depends on."""
MIN_SEASONAL = 32
"""Residuals a seasonal forecast needs before it may be chosen."""
PERIODS = {"daily": 86_400.0, "weekly": 604_800.0}
"""Seasonal periods, seconds."""
SCORE_HALF = 4.0
"""The surprise (robust standard deviations) that scores 0.5."""
NOISE_MEDIAN = 0.6745
"""Median of |N(0, 1)|."""


def threshold_for(sensitivity: float) -> float:
    """The score from which a point is an anomaly: 0.9 at sensitivity 0, 0.3 at 1."""
    return 0.9 - 0.6 * min(1.0, max(0.0, sensitivity))


def score_of(z: np.ndarray) -> np.ndarray:
    """Surprise (robust standard deviations) to score in [0, 1)."""
    z2 = np.square(np.nan_to_num(z, nan=0.0, posinf=1e6))
    return z2 / (z2 + SCORE_HALF**2)


def surprise_of(score: float) -> float:
    """The inverse of ``score_of``."""
    return SCORE_HALF * math.sqrt(score / (1.0 - score))


def _rolling_past(a: np.ndarray, window: int, how: str) -> tuple[np.ndarray, np.ndarray]:
    """For each i, ``how`` (median|mean) of the non-NaN values among a[i-window:i], and
    their count (strictly past: position i itself is excluded)."""
    n = len(a)
    padded = np.concatenate([np.full(window, np.nan), a[:-1] if n else a])
    if n == 0:
        return np.empty(0), np.empty(0)
    view = sliding_window_view(padded, window)[:n]
    valid = ~np.isnan(view)
    count = valid.sum(axis=1)
    if how == "mean":
        total = np.where(valid, view, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.maximum(count, 1), np.nan), count
    # A NaN-aware median without nanmedian's per-row Python loop: NaNs sort last, so the
    # median of the k valid values sits at positions (k-1)//2 and k//2.
    ordered = np.sort(view, axis=1)
    k = np.maximum(count, 1)
    rows = np.arange(n)
    med = 0.5 * (ordered[rows, (k - 1) // 2] + ordered[rows, k // 2])
    return np.where(count > 0, med, np.nan), count


def _seasonal_lag(t: np.ndarray, x: np.ndarray, period: float) -> np.ndarray:
    """The value one ``period`` before each point, linearly interpolated between the two
    points around it (NaN if they are far apart, absent, or more than MAX_LAG back)."""
    n = len(t)
    target = t - period
    hi = np.searchsorted(t, target, side="left")  # first point at or after the target
    lo = hi - 1
    idx = np.arange(n)
    ok = (lo >= 0) & (hi < idx) & (idx - lo <= MAX_LAG)
    lo_c, hi_c = np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1)
    t_lo, t_hi = t[lo_c], t[hi_c]
    exact = ok & (t_hi == target)
    ok &= (t_hi - t_lo) <= period / 12.0  # a two-hour bracket for a daily season
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(t_hi > t_lo, (target - t_lo) / (t_hi - t_lo), 0.0)
    value = x[lo_c] + w * (x[hi_c] - x[lo_c])
    value = np.where(exact, x[hi_c], value)
    return np.where(ok | exact, value, np.nan)


def _level_forecast(x: np.ndarray) -> np.ndarray:
    return _rolling_past(x, LEVEL_WINDOW, "median")[0]


def _seasonal_forecast(t: np.ndarray, x: np.ndarray, period: float) -> np.ndarray:
    lagged = _seasonal_lag(t, x, period)
    offset, count = _rolling_past(x - lagged, OFFSET_WINDOW, "median")
    return np.where(count > 0, lagged + offset, np.nan)


def _timeline(timestamps: list[float | None], n: int) -> np.ndarray:
    """Timestamps as floats; a missing one continues from the one before (one median step on)."""
    t = np.array([np.nan if v is None else float(v) for v in timestamps], dtype=float)
    if np.isnan(t).all():
        return np.arange(n, dtype=float)
    known = t[~np.isnan(t)]
    step = float(np.median(np.diff(known))) if len(known) > 1 else 1.0
    previous = known[0] - step
    for i in range(n):
        if np.isnan(t[i]):
            t[i] = previous + step
        previous = t[i]
    return t


def _surprises(t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per valid point: the surprise z, the forecast, and the scale used."""
    n = len(x)
    tiny = 1e-9 * (1.0 + float(np.median(np.abs(x)))) if n else 1e-9
    forecasts = [_level_forecast(x)]
    forecasts += [_seasonal_forecast(t, x, p) for p in PERIODS.values()]
    best_fit = np.full(n, np.inf)
    chosen_f = np.full(n, np.nan)
    chosen_s = np.full(n, np.nan)
    for c, f in enumerate(forecasts):
        r = np.abs(x - f)
        med, count = _rolling_past(r, SCALE_WINDOW, "median")
        mean, _ = _rolling_past(r, SCALE_WINDOW, "mean")
        fit, _ = _rolling_past(np.log(r + tiny), SCALE_WINDOW, "mean")
        scale = np.maximum(1.4826 * med, 0.5 * 1.2533 * mean)
        scale = np.maximum(np.nan_to_num(scale, nan=0.0), tiny)
        scale *= 1.0 + 4.0 / np.maximum(count, 1)  # few residuals: a wide, humble scale
        eligible = ~np.isnan(f) & (count >= (1 if c == 0 else MIN_SEASONAL))
        better = eligible & (np.nan_to_num(fit, nan=np.inf) < best_fit)
        if c == 0:
            better = eligible
        best_fit = np.where(better, np.nan_to_num(fit, nan=np.inf), best_fit)
        chosen_f = np.where(better, f, chosen_f)
        chosen_s = np.where(better, scale, chosen_s)
    z = np.abs(x - chosen_f) / chosen_s
    z = np.where(np.isnan(chosen_f), 0.0, z)
    return z, chosen_f, chosen_s


def _variance_surprise(z: np.ndarray) -> np.ndarray:
    """How far the median of the latest point surprises (this one included) is above noise."""
    n = len(z)
    if n == 0:
        return z
    med = _rolling_including(z, VARIANCE_WINDOW)
    count = np.minimum(np.arange(1, n + 1), VARIANCE_WINDOW)
    # Spread of the median of |N(0,1)| over k values, times 1.5 for real data's heavier tails.
    spread = 1.5 * 0.5 / np.sqrt(count) / 0.636
    out = np.maximum(0.0, (med - NOISE_MEDIAN) / spread)
    return np.where(count >= 4, out, 0.0)


def _rolling_including(a: np.ndarray, window: int) -> np.ndarray:
    """The median of a[i-window+1:i+1] (this point included)."""
    return _rolling_past(np.concatenate([a, [np.nan]]), window, "median")[0][1:]


def score_series(
    timestamps: list[float | None], values: list[float | None], sensitivity: float = 0.5
) -> dict[str, Any]:
    """Score every point of a series (see the module docstring); ``None`` values are gaps."""
    n = len(values)
    if len(timestamps) != n:
        raise ValueError(f"{len(timestamps)} timestamps for {n} values")
    if not 0.0 <= sensitivity <= 1.0:
        raise ValueError(f"sensitivity must be in [0, 1], not {sensitivity}")
    t_all = _timeline(list(timestamps), n)
    backwards = np.flatnonzero(np.diff(t_all) < 0)
    if len(backwards):
        raise ValueError(f"timestamps must be in order; point {int(backwards[0]) + 1} is earlier")
    raw = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    keep = np.isfinite(raw)
    where = np.flatnonzero(keep)
    t, x = t_all[keep], raw[keep]
    z, forecast, scale = _surprises(t, x)
    z = np.maximum(z, _variance_surprise(z))
    point_scores = score_of(z)
    threshold = threshold_for(sensitivity)
    band = surprise_of(threshold) * scale
    scores: list[float | None] = [None] * n
    expected: list[list[float] | None] = [None] * n
    anomalies = []
    for j, i in enumerate(where.tolist()):
        s = float(point_scores[j])
        scores[i] = round(s, 6)
        if not math.isnan(forecast[j]):
            f, b = float(forecast[j]), float(band[j])
            expected[i] = [f - b, f + b]
        if s >= threshold:
            anomalies.append(i)
    return {"scores": scores, "expected": expected, "threshold": threshold, "anomalies": anomalies}
