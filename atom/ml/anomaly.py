"""Streaming anomaly scores for one series, on the ML pool.

``score_series(timestamps, values, sensitivity)`` gives every point a score in [0, 1] that
depends only on the points before it and itself (no look-ahead): scoring a series cut at any
point gives the same scores for the points kept.

How a point is scored (every window below ends before the point, or at it):

1. **Forecast.** Candidate forecasts of the point from the past: the *local level* (median of
   the previous ``LEVEL_WINDOW`` values), and the *daily* and *weekly seasonal* forecasts (the
   median of the values 1, 2 and 3 periods earlier, each interpolated on the timestamps and
   smoothed over three points, plus the median offset of the last ``OFFSET_WINDOW`` points
   from their own seasonal base). The candidate with the smallest mean absolute residual
   over the last ``SELECT_WINDOW`` points is used; so a series with a daily or weekly rhythm
   is judged against the same hour of earlier days or weeks, whatever its sampling.
2. **Point surprise.** The residual over a robust scale of that candidate's past residuals
   (1.4826 x their median absolute value over the last ``SCALE_WINDOW`` points, floored by
   half their mean absolute value so a mostly constant series still has a scale, and by half
   the series' resolution: its smallest step between values over ``QUANTUM_WINDOW`` points,
   so a count moving by one is no surprise; wider while there are few residuals: the cold
   start), divided by a *tail factor*: the root mean square
   of the previous ``TAIL_WINDOW`` surprises (each capped at 5), at least 1, so a series whose
   noise is heavy-tailed needs a larger deviation to surprise.
3. **Level surprise.** The median of the latest ``SHIFT_RECENT`` points (deseasonalised by the
   chosen forecast's base) against the median of the ``SHIFT_BASE`` points before them, in
   robust spreads of that difference over the previous ``SHIFT_HISTORY`` points: a slow drift,
   or a shift the forecast has absorbed. It counts only when it beats ``RECORD_FACTOR`` x its
   own maximum over the ``RECORD_WINDOW`` points before the latest ``RECORD_GAP``, and every
   point since: a lasting change scores while it grows, not at every point after.
4. **Score.** ``z`` is the larger surprise; the score is ``z**2 / (z**2 + 16)`` (0.5 at four
   robust standard deviations). ``sensitivity`` only moves the threshold:
   ``threshold = 0.9 - 0.6 * sensitivity`` (0.6 by default, about 4.9 deviations). The
   expected range of a point is its forecast plus or minus the deviation at the threshold.

Bounded memory: a point's score depends on at most the ``MEMORY`` points before it (the
sum of the windows above plus the longest seasonal look-back, ``MAX_LAG`` points), never
on where the series started; scoring the last ``MEMORY + k`` points of a series gives the
same last ``k`` scores as scoring all of it. Gaps (``None`` or non-finite values) get no
score and are not counted as points. The timestamps matter only to the seasonal forecasts.

Only the ML pool imports this module (NumPy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

LEVEL_WINDOW = 9
"""Previous values whose median is the local-level forecast."""
OFFSET_WINDOW = 9
"""Previous seasonal differences whose median corrects a seasonal forecast's level."""
SEASONS_BACK = 3
"""Past periods whose median is a seasonal forecast's base (each smoothed over 3 points)."""
SCALE_WINDOW = 192
"""Previous residuals whose median absolute value is the scale."""
QUANTUM_WINDOW = 2048
"""Previous points whose smallest change is the series' resolution (half of it floors the
scale: a count moving by one is never a surprise)."""
SELECT_WINDOW = 2048
"""Previous residuals whose mean absolute value picks the forecast."""
SHIFT_RECENT = 16
"""Latest points whose median level is compared with the level before them..."""
SHIFT_BASE = 512
"""... the median of these earlier points (a slow drift, a shift the forecast absorbed)..."""
SHIFT_HISTORY = 1024
"""... in units of the spread of that difference over this many previous points."""
TAIL_WINDOW = 1024
"""Previous point surprises whose mean square (capped) measures how heavy the tails are."""
RECORD_WINDOW = 256
"""A level surprise counts only when it is a record over this many points."""
RECORD_FACTOR = 1.25
"""... by this factor (a sustained change is news once, not at every point)..."""
RECORD_GAP = 32
"""... leaving out the latest this many points (a slowly growing surprise can still count)."""
MAX_LAG = 4200
"""The farthest back (in points) a seasonal forecast may look."""
MEMORY = (
    max(
        TAIL_WINDOW + SELECT_WINDOW,  # the tail factor over surprises, each of a chosen forecast
        RECORD_WINDOW + RECORD_GAP + max(SELECT_WINDOW, SHIFT_HISTORY + SHIFT_BASE + SHIFT_RECENT),
        QUANTUM_WINDOW + 1,
    )
    + OFFSET_WINDOW
    + MAX_LAG
    + 2  # the three-point smoothing of seasonal look-backs, and the point itself
)
"""A bound on the previous points any score depends on."""
MIN_SEASONAL = 32
"""Residuals a seasonal forecast needs before it may be chosen."""
PERIODS = {"daily": 86_400.0, "weekly": 604_800.0}
"""Seasonal periods, seconds."""
SCORE_HALF = 4.0
"""The surprise (robust standard deviations) that scores 0.5."""
PARTS = ("seasonal", "shift", "records", "tails", "lightgbm")
"""Parts of the detector that ``score_series(parts=...)`` can switch off (bench ablation)."""


def threshold_for(sensitivity: float) -> float:
    """The score from which a point is an anomaly: 0.9 at sensitivity 0, 0.3 at 1."""
    return round(0.9 - 0.6 * min(1.0, max(0.0, sensitivity)), 6)


def score_of(z: np.ndarray) -> np.ndarray:
    """Surprise (robust standard deviations) to score in [0, 1)."""
    z2 = np.square(np.nan_to_num(z, nan=0.0, posinf=1e6))
    return z2 / (z2 + SCORE_HALF**2)


def surprise_of(score: float) -> float:
    """The inverse of ``score_of``."""
    return SCORE_HALF * math.sqrt(score / (1.0 - score))


def _past_view(a: np.ndarray, window: int, lag: int = 1) -> np.ndarray:
    """Row i holds a[i-lag-window+1 : i-lag+1] (NaN before the start)."""
    n = len(a)
    padded = np.concatenate([np.full(window + lag - 1, np.nan), a[: n - lag + 1] if lag else a])
    return sliding_window_view(padded, window)[:n]


def _median_rows(view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware median of each row, and the row's count of values. NaNs sort last, so the
    median of the k values sits at positions (k-1)//2 and k//2 (no nanmedian row loop)."""
    count = (~np.isnan(view)).sum(axis=1)
    ordered = np.sort(view, axis=1)
    k = np.maximum(count, 1)
    rows = np.arange(len(view))
    med = 0.5 * (ordered[rows, (k - 1) // 2] + ordered[rows, k // 2])
    return np.where(count > 0, med, np.nan), count


def _rolling_median(a: np.ndarray, window: int, lag: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Median of the values a[i-lag-window+1 : i-lag+1] (lag 1: strictly past), and count."""
    if len(a) == 0:
        return np.empty(0), np.empty(0, dtype=int)
    return _median_rows(_past_view(a, window, lag))


def _rolling_mean(a: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the non-NaN values among a[i-window:i] (strictly past), and their count."""
    valid = ~np.isnan(a)
    c1 = np.concatenate([[0.0], np.cumsum(np.where(valid, a, 0.0))])
    c0 = np.concatenate([[0], np.cumsum(valid)])
    i = np.arange(len(a))
    lo = np.maximum(0, i - window)
    count = c0[i] - c0[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (c1[i] - c1[lo]) / count
    return np.where(count > 0, mean, np.nan), count


def _rolling_max(a: np.ndarray, window: int, lag: int = 1) -> np.ndarray:
    """Max of a[i-lag-window+1 : i-lag+1] (0 before the start)."""
    if len(a) == 0:
        return a
    return np.nan_to_num(_past_view(np.nan_to_num(a), window, lag), nan=0.0).max(axis=1)


def _lagged(t: np.ndarray, xs: np.ndarray, back: float) -> np.ndarray:
    """The (smoothed) value ``back`` seconds before each point, linearly interpolated between
    the two points around that moment (NaN if they are far apart, absent, too recent for the
    smoothing, or more than MAX_LAG points back)."""
    n = len(t)
    target = t - back
    hi = np.searchsorted(t, target, side="left")  # first point at or after the target
    lo = hi - 1
    idx = np.arange(n)
    lo_c, hi_c = np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1)
    t_lo, t_hi = t[lo_c], t[hi_c]
    ok = (lo >= 0) & (hi + 1 < idx) & (idx - lo <= MAX_LAG)
    ok &= (t_hi - t_lo) <= back / 12.0 / max(1.0, back / 86_400.0)  # a two-hour bracket
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(t_hi > t_lo, (target - t_lo) / (t_hi - t_lo), 0.0)
    value = xs[lo_c] + w * (xs[hi_c] - xs[lo_c])
    return np.where(ok, value, np.nan)


def _smoothed(x: np.ndarray) -> np.ndarray:
    """Centred mean of three points (used only far in the past, by seasonal look-backs)."""
    if len(x) < 3:
        return x.copy()
    out = x.copy()
    out[1:-1] = (x[:-2] + x[1:-1] + x[2:]) / 3.0
    return out


def _seasonal_base(t: np.ndarray, xs: np.ndarray, period: float) -> np.ndarray:
    """Median of the smoothed values 1..SEASONS_BACK periods before each point."""
    lags = np.stack([_lagged(t, xs, k * period) for k in range(1, SEASONS_BACK + 1)], axis=1)
    return _median_rows(lags)[0]


@dataclass(frozen=True)
class _Candidate:
    """One forecast of every point, and what the scores need from it."""

    forecast: np.ndarray
    level: np.ndarray  # the series the level-shift test watches (deseasonalised)
    scale: np.ndarray
    fit: np.ndarray  # mean absolute residual over SELECT_WINDOW (smaller is better)
    eligible: np.ndarray


def _quantum(x: np.ndarray) -> np.ndarray:
    """The smallest change between consecutive values among the previous QUANTUM_WINDOW
    points, 0 if none: the resolution of a series of counts or rounded figures."""
    if len(x) < 2:
        return np.zeros(len(x))
    steps = np.abs(np.diff(x, prepend=x[0]))
    steps[steps == 0] = np.inf
    smallest = np.fmin.reduce(_past_view(steps, QUANTUM_WINDOW), axis=1)
    return np.where(np.isfinite(smallest), smallest, 0.0)


def _candidate(
    x: np.ndarray, forecast: np.ndarray, level: np.ndarray, min_count: int, floor: np.ndarray
) -> _Candidate:
    tiny = 1e-9 * (1.0 + float(np.median(np.abs(x))))
    r = np.abs(x - forecast)
    med, count = _rolling_median(r, SCALE_WINDOW)
    mean, _ = _rolling_mean(r, SCALE_WINDOW)
    scale = np.maximum(1.4826 * med, 0.5 * 1.2533 * mean)
    scale = np.maximum(np.maximum(np.nan_to_num(scale, nan=0.0), floor), tiny)
    scale *= 1.0 + 4.0 / np.maximum(count, 1)  # few residuals: a wide, humble scale
    fit, fit_count = _rolling_mean(r, SELECT_WINDOW)
    eligible = ~np.isnan(forecast) & (fit_count >= min_count)
    return _Candidate(forecast, level, scale, np.nan_to_num(fit, nan=np.inf), eligible)


def _candidates(t: np.ndarray, x: np.ndarray, use: dict[str, bool]) -> list[_Candidate]:
    """The local level, and the daily and weekly seasonal forecasts."""
    level = _rolling_median(x, LEVEL_WINDOW)[0]
    floor = 0.5 * _quantum(x)
    found = [_candidate(x, level, x, 1, floor)]
    bases = []
    if use["seasonal"]:
        xs = _smoothed(x)
        for period in PERIODS.values():
            base = _seasonal_base(t, xs, period)
            bases.append(base)
            offset, count = _rolling_median(x - base, OFFSET_WINDOW)
            forecast = np.where(count > 0, base + offset, np.nan)
            found.append(_candidate(x, forecast, x - base, MIN_SEASONAL, floor))
    if use["lightgbm"]:
        gbm = _gbm_forecast(t, x, level, bases)
        found.append(_candidate(x, gbm, x, MIN_SEASONAL, floor))
    return found


GBM_REFIT = 1000
GBM_TRAIN = 3000


def _gbm_forecast(t: np.ndarray, x: np.ndarray, level: np.ndarray, bases: list) -> np.ndarray:
    """A LightGBM L1 forecast of each point from lags, seasonal bases and the calendar,
    relative to the local level; refit every GBM_REFIT points on the GBM_TRAIN before."""
    import lightgbm as lgb

    n = len(x)
    prev = np.concatenate([[np.nan], x[:-1]])
    prev2 = np.concatenate([[np.nan, np.nan], x[:-2]])[:n]
    dt = np.concatenate([[np.nan], np.diff(t)])
    hours = (t % 86_400.0) / 3600.0
    weekday = ((t // 86_400.0).astype(int) + 3) % 7
    columns = [prev - level, prev2 - level, hours, weekday, dt]
    columns += [b - level for b in bases]
    features = np.stack(columns, axis=1)
    target = x - level
    out = np.full(n, np.nan)
    params = {
        "objective": "l1",
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "learning_rate": 0.1,
        "verbose": -1,
        "num_threads": 1,
        "deterministic": True,
    }
    for c in range(GBM_REFIT, n, GBM_REFIT):
        lo = max(1, c - GBM_TRAIN)
        ok = ~np.isnan(target[lo:c])
        data = lgb.Dataset(features[lo:c][ok], target[lo:c][ok])
        booster = lgb.train(params, data, num_boost_round=60)
        hi = min(n, c + GBM_REFIT)
        out[c:hi] = level[c:hi] + booster.predict(features[c:hi])
    return out


def _choose(candidates: list[_Candidate]) -> tuple[np.ndarray, ...]:
    """Per point, the eligible candidate with the smallest recent residuals."""
    n = len(candidates[0].forecast)
    best = np.full(n, np.inf)
    pick = np.zeros(n, dtype=int)
    for c, cand in enumerate(candidates):
        better = cand.eligible & ((cand.fit < best) | (c == 0))
        best = np.where(better, cand.fit, best)
        pick = np.where(better, c, pick)
    rows = np.arange(n)
    forecast = np.stack([c.forecast for c in candidates])[pick, rows]
    scale = np.stack([c.scale for c in candidates])[pick, rows]
    eligible = np.stack([c.eligible for c in candidates])[pick, rows]
    return pick, forecast, scale, eligible


def _shift_surprise(candidates: list[_Candidate], pick: np.ndarray) -> np.ndarray:
    """How far the median of the latest SHIFT_RECENT levels (this point included) is from
    the median of the SHIFT_BASE before them, in robust spreads of that same difference over
    the previous SHIFT_HISTORY points (at least what it is for independent noise)."""
    z = np.zeros(len(pick))
    for c, cand in enumerate(candidates):
        chosen = pick == c
        if not chosen.any():
            continue
        recent = _rolling_median(cand.level, SHIFT_RECENT, 0)[0]
        view = _past_view(cand.level, SHIFT_BASE, SHIFT_RECENT)[:, ::2]  # every other point
        base, count = _median_rows(view)
        d = recent - base
        history = _past_view(np.abs(d), SHIFT_HISTORY)[:, ::4]
        spread = 1.4826 * _median_rows(history)[0]
        floor = 1.2533 / math.sqrt(SHIFT_RECENT) * cand.scale
        spread = np.maximum(np.nan_to_num(spread, nan=0.0), floor)
        ok = chosen & (count >= SHIFT_BASE // 8)
        z[ok] = np.abs(d[ok]) / spread[ok]
    return np.nan_to_num(z, nan=0.0)


def _tail_factor(z: np.ndarray) -> np.ndarray:
    """sqrt of the mean of min(z^2, 25) over the previous TAIL_WINDOW point surprises, at
    least 1: heavy-tailed noise makes large surprises common, so they count for less."""
    mean, count = _rolling_mean(np.minimum(np.square(z), 25.0), TAIL_WINDOW)
    return np.where(count >= 32, np.sqrt(np.maximum(1.0, np.nan_to_num(mean, nan=1.0))), 1.0)


def _records(z: np.ndarray) -> np.ndarray:
    """``z`` where it beats RECORD_FACTOR x its maximum over RECORD_WINDOW points ending
    RECORD_GAP before it and every point since, else 0: a sustained change scores while it
    grows, not at every point."""
    older = _rolling_max(z, RECORD_WINDOW, RECORD_GAP)
    latest = _rolling_max(z, RECORD_GAP - 1, 1)
    return np.where((z > RECORD_FACTOR * older) & (z > latest), z, 0.0)


def _surprises(
    t: np.ndarray, x: np.ndarray, use: dict[str, bool]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per valid point: the surprise z, the forecast, and the scale used."""
    if len(x) == 0:
        return x, x, x
    candidates = _candidates(t, x, use)
    pick, forecast, scale, eligible = _choose(candidates)
    z = np.where(eligible, np.abs(x - forecast) / scale, 0.0)
    if use["tails"]:
        tails = _tail_factor(z)
        z, scale = z / tails, scale * tails
    keep = _records if use["records"] else (lambda a: a)
    surprise = z
    if use["shift"]:
        surprise = np.maximum(surprise, keep(_shift_surprise(candidates, pick)))
    return surprise, np.where(eligible, forecast, np.nan), scale


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


def score_series(
    timestamps: list[float | None],
    values: list[float | None],
    sensitivity: float = 0.5,
    *,
    parts: dict[str, bool] | None = None,
) -> dict[str, Any]:
    """Score every point of a series (see the module docstring); ``None`` values are gaps.
    ``parts`` switches parts of the detector off (``PARTS``; for the bench's ablation)."""
    use = {part: part != "lightgbm" for part in PARTS} | (parts or {})
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
    z, forecast, scale = _surprises(t, x, use)
    point_scores = score_of(z)
    threshold = threshold_for(sensitivity)
    band = surprise_of(threshold) * scale
    scores: list[float | None] = [None] * n
    expected: list[list[float] | None] = [None] * n
    anomalies = []
    for j, i in enumerate(where.tolist()):
        s = round(float(point_scores[j]), 6)  # the anomalies agree with the scores as sent
        scores[i] = s
        if not math.isnan(forecast[j]):
            f, b = float(forecast[j]), float(band[j])
            expected[i] = [f - b, f + b]
        if s >= threshold:
            anomalies.append(i)
    return {"scores": scores, "expected": expected, "threshold": threshold, "anomalies": anomalies}
