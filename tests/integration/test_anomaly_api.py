"""POST /api/anomaly/detect on a real ML worker: the round trip, 25,000 points in a body over
the general limit, every bad input a 422 saying where, 413 over ATOM_ML_MAX_BODY, and 503
with Retry-After when no ML worker answers.

The tests that need no ML worker come first: the module's ``ml_worker`` starts with the first
test that asks for it."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import requests

from atom.config import Settings

pytestmark = pytest.mark.integration

START = 1_767_225_600  # 2026-01-01 00:00 UTC


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def series(n: int, spike_at: int | None = None, as_iso: bool = True) -> list[dict]:
    rng = random.Random(5)
    points = []
    for i in range(n):
        value = 100 + 10 * math.sin(i / 30) + rng.gauss(0, 1)
        if i == spike_at:
            value += 40
        t = START + 60 * i
        points.append({"timestamp": iso(t) if as_iso else t, "value": round(value, 3)})
    return points


@pytest.fixture(scope="module")
def http(api_url: str, make_key: Callable[..., str]) -> Callable[..., requests.Response]:
    """POST to /api/anomaly/detect as a viewer (scoring reads nothing of the tenant)."""
    session = requests.Session()
    session.headers["X-API-Key"] = make_key("viewer")

    def post(body=None, data: bytes | None = None) -> requests.Response:
        headers = {"Content-Type": "application/json"}
        return session.post(
            f"{api_url}/api/anomaly/detect", json=body, data=data, headers=headers, timeout=60
        )

    return post


def test_no_ml_worker_is_a_503_with_retry_after_within_the_timeout(http, settings: Settings):
    started = time.monotonic()
    down = http({"series": series(50)})
    waited = time.monotonic() - started
    assert down.status_code == 503, down.text
    assert int(down.headers["Retry-After"]) >= 1
    assert "atom worker --pool ml" in down.json()["message"]
    assert waited < settings.ml_timeout + 2, waited


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ({"series": {"timestamp": 1, "value": 2}}, "series", "must be a list"),
        ({"series": "1,2,3"}, "series", "must be a list"),
        ({}, "series", "Missing data"),
        (
            {
                "series": [{"timestamp": 3, "value": 1}, {"timestamp": 4, "value": 1}]
                + [{"timestamp": 2, "value": 1}]
            },
            "series[2].timestamp",
            "must be in order",
        ),
        ({"series": [{"timestamp": "yesterday", "value": 1}]}, "series[0].timestamp", "ISO 8601"),
        ({"series": [{"timestamp": 1, "value": "7"}]}, "series[0].value", "finite number"),
        ({"series": [{"timestamp": 1}]}, "series[0].value", "required"),
        ({"series": [{"timestamp": 1, "value": 1, "x": 2}]}, "series[0]", "unknown"),
        ({"series": [5]}, "series[0]", "must be an object"),
        ({"series": series(3), "sensitivity": 1.5}, "sensitivity", "greater than or equal to 0.0"),
        ({"series": series(3), "sensitivity": -0.1}, "sensitivity", "greater than or equal to 0.0"),
        ({"series": series(3), "sensitivity": "high"}, "sensitivity", "number"),
        (
            {"series": [{"timestamp": i, "value": 1} for i in range(25_001)]},
            "series",
            "at most 25000",
        ),
    ],
)
def test_bad_input_is_a_422_saying_where(http, body: dict, where: str, says: str):
    answer = http(body)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["errors"]
    found = errors.get(where) or errors.get("json", {}).get(where)
    assert found and says in json.dumps(found), errors


def test_nan_is_a_422_and_every_problem_is_listed(http):
    nan = http(data=b'{"series": [{"timestamp": 1, "value": NaN}]}')
    assert nan.status_code == 422 and "NaN is not JSON" in nan.text
    bad = [{"timestamp": i, "value": "x"} for i in range(30)]
    many = http({"series": bad}).json()["errors"]
    assert "series[0].value" in many and "series[19].value" in many
    assert many["series"] == ["... and 10 more"]


def test_a_body_over_atom_ml_max_body_is_a_413_naming_it(
    http, api_url: str, make_key: Callable[..., str], settings: Settings
):
    huge = b'{"series": [' + b" " * (settings.ml_max_body + 10) + b"]}"
    too_big = http(data=huge)
    assert too_big.status_code == 413, too_big.text
    assert "ATOM_ML_MAX_BODY" in too_big.json()["message"]
    assert str(settings.ml_max_body) in too_big.json()["message"]
    # The decision engine is model work too: 2 MiB passes the door (its own context check
    # refuses it), 4 MiB + 10 is a 413 naming ATOM_ML_MAX_BODY.
    operator = {"X-API-Key": make_key("operator"), "Content-Type": "application/json"}
    context = {"model": "m", "context": {"x": "y" * (2 * 1024 * 1024)}, "actions": ["a", "b"]}
    big = requests.post(f"{api_url}/api/decisions", json=context, headers=operator, timeout=60)
    assert big.status_code == 422, big.text
    context["context"]["x"] = "y" * settings.ml_max_body
    bigger = requests.post(f"{api_url}/api/decisions", json=context, headers=operator, timeout=60)
    assert bigger.status_code == 413 and "ATOM_ML_MAX_BODY" in bigger.json()["message"]
    # Other routes keep the general limit, and say so.
    other = requests.post(
        f"{api_url}/api/workflows",
        data=b'{"name": "' + b"x" * (settings.max_request_bytes + 10) + b'"}',
        headers={"X-API-Key": make_key("editor"), "Content-Type": "application/json"},
        timeout=60,
    )
    assert other.status_code == 413 and "ATOM_MAX_REQUEST_BYTES" in other.json()["message"]


def test_a_series_is_scored_on_the_ml_pool(http, ml_worker):
    points = series(600, spike_at=400)
    points[100]["value"] = None  # a gap
    answer = http({"series": points})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["scores"]) == 600 and body["scores"][100] is None
    assert all(0 <= s <= 1 for s in body["scores"] if s is not None)
    spike = next(a for a in body["anomalies"] if a["timestamp"] == points[400]["timestamp"])
    assert spike["value"] == points[400]["value"] and spike["score"] >= body["threshold"]
    low, high = spike["expected"]
    assert low < high < spike["value"]
    assert body["threshold"] == pytest.approx(0.6)
    # Sensitivity moves the threshold, never the scores; epoch seconds score the same.
    strict = http({"series": series(600, 400, as_iso=False), "sensitivity": 0}).json()
    eager = http({"series": series(600, 400, as_iso=False), "sensitivity": 1}).json()
    assert strict["scores"] == eager["scores"]
    assert strict["scores"][:100] == body["scores"][:100]
    assert strict["threshold"] > eager["threshold"]
    assert len(strict["anomalies"]) <= len(eager["anomalies"])


def test_25000_points_over_the_general_body_limit_are_scored(http, ml_worker, settings: Settings):
    points = series(25_000, spike_at=20_000)
    body = json.dumps({"series": points}).encode()
    assert settings.max_request_bytes < len(body) < settings.ml_max_body
    started = time.monotonic()
    answer = http(data=body)
    took = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["scores"]) == 25_000
    assert points[20_000]["timestamp"] in {a["timestamp"] for a in answer.json()["anomalies"]}
    print(f"25,000 points scored through the API in {took:.2f} s")
