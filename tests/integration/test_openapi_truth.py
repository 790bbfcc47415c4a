"""The OpenAPI document says what the server does, and the server's answers carry the
headers HTTP asks for (issue 9, item 10)."""

from __future__ import annotations

import requests

from tests.integration.test_metrics import scrape, total


def _spec(api_url: str) -> dict:
    response = requests.get(api_url + "/api/openapi.json", timeout=30)
    assert response.status_code == 200
    return response.json()


def test_request_schemas_are_as_strict_as_the_server(api_url: str):
    spec = _spec(api_url)
    schemas = spec["components"]["schemas"]
    rule = schemas["AlertRuleIn"]
    assert rule["additionalProperties"] is False
    assert sorted(rule["required"]) == ["metric", "name"]
    assert rule["properties"]["cooldown"] == {
        "type": "integer",
        "default": 300,
        "minimum": 0,
        "maximum": 604800,
    }
    assert "nullable" not in rule["properties"]["threshold"]
    assert "required" not in schemas["AlertRuleChanges"]  # a PATCH names what it changes
    pages = [
        p
        for p in spec["paths"]["/api/executions"]["get"]["parameters"]
        if p["name"] in ("page", "page_size")
    ]
    assert {p["name"]: p["schema"].get("maximum") for p in pages} == {
        "page": 1_000_000,
        "page_size": 100,
    }
    window = next(
        p
        for p in spec["paths"]["/api/workflows/monitoring/metrics"]["get"]["parameters"]
        if p["name"] == "window"
    )
    assert window["schema"]["pattern"] == r"^\s*(\d{1,7})\s*([smhd])\s*$"
    assert spec["components"]["headers"]["PAGINATION"]["schema"] == {"type": "string"}


def test_405_names_the_allowed_methods_and_401_the_schemes(api_url: str):
    wrong = requests.delete(api_url + "/api/executions", timeout=30)
    assert wrong.status_code == 405
    assert set(wrong.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "OPTIONS"}
    assert wrong.json()["code"] == 405
    anonymous = requests.get(api_url + "/api/executions", timeout=30)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer ")
    assert "X-API-Key" in anonymous.headers["WWW-Authenticate"]


def test_the_input_guard_answers_after_the_key_and_is_counted(api_url: str, make_key):
    nan = {"data": '{"name": NaN}', "headers": {"Content-Type": "application/json"}}
    # No key: the body is not looked at; a stranger learns nothing about it.
    assert requests.post(api_url + "/api/workflows", timeout=30, **nan).status_code == 401
    before = total(scrape(api_url), "atom_http_requests_total", endpoint="/api/workflows")
    keyed = dict(nan, headers={**nan["headers"], "X-API-Key": make_key("editor")})
    refused = requests.post(api_url + "/api/workflows", timeout=30, **keyed)
    assert refused.status_code == 422
    assert refused.json()["errors"] == {"body": ["NaN is not JSON (JSON numbers are finite)"]}
    after = total(scrape(api_url), "atom_http_requests_total", endpoint="/api/workflows")
    assert after == before + 1  # the refusal went through the request clock and metrics
