"""The HTTP contract: validation errors, auth and roles, tenant isolation, error shapes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
import requests

from tests.integration.helpers import action, trigger, workflow

VALID = workflow(
    "ok", [trigger(), action("say", "log", message="hi {{ input.who }}")], [("start", "say")]
)


def call(
    api_url: str, method: str, path: str, key: str | None = None, **kwargs
) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if key:
        headers["X-API-Key"] = key
    return requests.request(method, api_url + path, headers=headers, timeout=10, **kwargs)


def test_invalid_definition_lists_every_problem(api_url: str, make_key: Callable[..., str]):
    bad = {
        "name": "broken",
        "nodes": [
            {"id": "start", "type": "trigger"},
            {"id": "a", "type": "action", "config": {"action_type": "teleport"}},
            {"id": "b", "type": "action", "config": {"action_type": "http_request"}},
            {"id": "c", "type": "action", "config": {"action_type": "log", "message": "x"}},
            {"id": "d", "type": "action", "config": {"action_type": "log", "message": "y"}},
        ],
        "connections": [
            {"source": "start", "target": "a"},
            {"source": "a", "target": "ghost"},
            {"source": "c", "target": "d"},
            {"source": "d", "target": "c"},
        ],
    }
    response = call(api_url, "POST", "/api/workflows", make_key("editor"), json=bad)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == 422 and body["status"] == "Unprocessable Entity"
    assert "problem" in body["message"]
    problems = {(p["location"], p.get("node")): p["message"] for p in body["errors"]["definition"]}
    assert "unknown action type 'teleport'" in problems[("nodes[a].config.action_type", "a")]
    assert problems[("nodes[b].config.url", "b")] == "is required"
    assert "'ghost'" in problems[("connections[1].target", None)]
    cycle = [m for (loc, _), m in problems.items() if m.startswith("cycle")]
    assert cycle == ["cycle: c -> d -> c"]
    assert any("unreachable" in m for m in problems.values())

    validated = call(api_url, "POST", "/api/workflows/validate", make_key("viewer"), json=bad)
    assert validated.status_code == 422
    assert len(validated.json()["errors"]["definition"]) == len(body["errors"]["definition"])


def test_validate_returns_the_plan_without_saving(api_url: str, make_key: Callable[..., str]):
    key = make_key("viewer")
    response = call(api_url, "POST", "/api/workflows/validate", key, json=VALID)
    assert response.status_code == 200
    assert response.json()["valid"] is True
    assert response.json()["plan"]["canvas"]["tasks"][0] == {"type": "step", "node": "say"}
    assert call(api_url, "GET", "/api/workflows", key).json() == []


def test_auth_roles_and_error_shapes(api_url: str, make_key: Callable[..., str]):
    assert call(api_url, "GET", "/api/workflows").status_code == 401
    wrong = call(api_url, "GET", "/api/workflows", "atom_not-a-real-key")
    assert wrong.status_code == 401 and wrong.json()["message"]
    viewer = make_key("viewer")
    forbidden = call(api_url, "POST", "/api/workflows", viewer, json=VALID)
    assert forbidden.status_code == 403 and "editor" in forbidden.json()["message"]
    bearer = call(api_url, "GET", "/api/workflows", headers={"Authorization": f"Bearer {viewer}"})
    assert bearer.status_code == 200
    missing = call(api_url, "GET", "/api/nowhere", viewer)
    assert missing.status_code == 404 and missing.json()["code"] == 404
    not_uuid = call(api_url, "GET", "/api/executions/not-a-uuid", viewer)
    assert not_uuid.status_code == 404


def test_operator_executes_but_cannot_edit(api_url: str, make_key: Callable[..., str], worker):
    tenant = "ops-tenant"
    editor, operator = make_key("editor", tenant), make_key("operator", tenant)
    created = call(api_url, "POST", "/api/workflows", editor, json=VALID).json()
    run = call(
        api_url,
        "POST",
        f"/api/workflows/{created['id']}/execute",
        operator,
        json={"input": {"who": "ops"}},
    )
    assert run.status_code == 202
    assert run.headers["Location"].endswith(f"/api/executions/{run.json()['id']}")
    assert call(api_url, "DELETE", f"/api/workflows/{created['id']}", operator).status_code == 403
    viewer = make_key("viewer", tenant)
    assert (
        call(
            api_url, "POST", f"/api/workflows/{created['id']}/execute", viewer, json={}
        ).status_code
        == 403
    )


def test_tenants_never_see_each_other(api_url: str, make_key: Callable[..., str], worker):
    mine, theirs = make_key("admin"), make_key("admin")
    created = call(api_url, "POST", "/api/workflows", mine, json=VALID)
    assert created.status_code == 201
    assert created.headers["Location"].endswith(f"/api/workflows/{created.json()['id']}")
    wf = created.json()["id"]
    run = call(api_url, "POST", f"/api/workflows/{wf}/execute", mine, json={}).json()
    for method, path in [
        ("GET", f"/api/workflows/{wf}"),
        ("GET", f"/api/workflows/{wf}/plan"),
        ("PUT", f"/api/workflows/{wf}"),
        ("DELETE", f"/api/workflows/{wf}"),
        ("POST", f"/api/workflows/{wf}/execute"),
        ("GET", f"/api/executions/{run['id']}"),
    ]:
        response = call(api_url, method, path, theirs, json=VALID if method == "PUT" else {})
        assert response.status_code == 404, (method, path, response.text)
    assert call(api_url, "GET", "/api/workflows", theirs).json() == []
    assert call(api_url, "GET", "/api/executions", theirs).json() == []
    assert [e["id"] for e in call(api_url, "GET", "/api/executions", mine).json()] == [run["id"]]
    assert call(api_url, "GET", f"/api/workflows/{wf}", mine).status_code == 200


def test_list_pagination_filters_and_soft_delete(api_url: str, make_key: Callable[..., str]):
    key = make_key("editor")
    ids = [
        call(api_url, "POST", "/api/workflows", key, json={**VALID, "name": f"report-{i}"}).json()[
            "id"
        ]
        for i in range(3)
    ]
    call(api_url, "POST", "/api/workflows", key, json={**VALID, "name": "other"})
    page = call(api_url, "GET", "/api/workflows?name=report&page=1&page_size=2", key)
    assert page.status_code == 200 and len(page.json()) == 2
    assert '"total": 3' in page.headers["X-Pagination"]
    assert call(api_url, "GET", "/api/workflows?page_size=101", key).status_code == 422
    assert call(api_url, "DELETE", f"/api/workflows/{ids[0]}", key).status_code == 204
    assert call(api_url, "GET", f"/api/workflows/{ids[0]}", key).status_code == 404
    names = {w["name"] for w in call(api_url, "GET", "/api/workflows?name=report", key).json()}
    assert names == {"report-1", "report-2"}


def test_body_over_the_limit_is_413_naming_the_limit_and_its_variable(
    api_url: str, make_key: Callable[..., str]
):
    huge = {**VALID, "description": "x" * (2 * 1024 * 1024)}
    response = call(api_url, "POST", "/api/workflows", make_key("editor"), json=huge)
    assert response.status_code == 413 and response.json()["code"] == 413
    size = int(response.request.headers["Content-Length"])
    assert response.json()["message"] == (
        f"The request body is {size} bytes; this endpoint takes at most 1048576 bytes "
        "(ATOM_MAX_REQUEST_BYTES)."
    )
    hook = call(api_url, "POST", "/api/hooks/some-token", data=b"[" + b"1," * 200_000 + b"1]")
    assert hook.status_code == 413
    assert "at most 262144 bytes (ATOM_WEBHOOK_MAX_BYTES)" in hook.json()["message"]
    # no Content-Length (chunked): found too large while reading, and said the same way
    chunks = iter([b'{"name": "', b"x" * 700_000, b"x" * 700_000, b'"}'])
    chunked = call(
        api_url,
        "POST",
        "/api/workflows",
        make_key("editor"),
        data=chunks,
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413, chunked.text
    assert "at most 1048576 bytes (ATOM_MAX_REQUEST_BYTES)" in chunked.json()["message"]


@pytest.mark.parametrize(
    ("headers", "said"),
    [
        ({}, "the request had no Content-Type header"),
        ({"Content-Type": "text/plain"}, "the request said 'text/plain'"),
        (
            {"Content-Type": "application/x-www-form-urlencoded"},
            "the request said 'application/x-www-form-urlencoded'",
        ),
    ],
)
def test_a_body_that_is_not_declared_json_is_a_415(
    api_url: str, make_key: Callable[..., str], headers: dict, said: str
):
    body = json.dumps(VALID)  # a valid definition, sent without saying it is JSON
    key = make_key("editor")
    for method, path in (("POST", "/api/workflows"), ("POST", "/api/events")):
        response = call(api_url, method, path, key, data=body, headers=dict(headers))
        assert response.status_code == 415, response.text
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["message"] == (
            f"The body must be JSON with 'Content-Type: application/json'; {said}."
        )
    # no key is still a 401 first; an empty body needs no type; JSON types are accepted
    assert call(api_url, "POST", "/api/workflows", data=body).status_code == 401
    created = call(api_url, "POST", "/api/workflows", key, json=VALID).json()
    hook = call(api_url, "POST", f"/api/workflows/{created['id']}/webhook", key, data=b"")
    assert hook.status_code == 201
    for kind in ("application/json; charset=utf-8", "application/merge-patch+json"):
        ok = call(api_url, "POST", "/api/workflows", key, data=body, headers={"Content-Type": kind})
        assert ok.status_code == 201, (kind, ok.text)


def test_invalid_json_is_a_400_with_line_and_column(api_url: str, make_key: Callable[..., str]):
    broken = '{"name": "x",\n "nodes": [}'
    key = make_key("editor")
    for path in ("/api/workflows", "/api/workflows/validate", "/api/hooks/any-token"):
        response = call(
            api_url, "POST", path, key, data=broken, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, (path, response.text)
        assert response.json()["message"] == (
            "The body is not valid JSON: Expecting value at line 2, column 12."
        )
        assert response.json()["errors"] == {
            "json": ["Expecting value at line 2, column 12 (character 25)"]
        }


@pytest.mark.parametrize(
    ("method", "path", "says"),
    [
        ("GET", "/api/workflows/not-a-uuid", "There is no workflow with the id 'not-a-uuid'"),
        ("POST", "/api/executions/123/cancel", "There is no execution with the id '123'"),
        ("GET", "/api/schedules/42", "There is no schedule with the id '42'"),
        ("DELETE", "/api/keys/k-1", "There is no key with the id 'k-1'"),
        ("GET", "/api/nothing-here", "Nothing is served at '/api/nothing-here'"),
    ],
)
def test_a_malformed_id_is_a_json_404_naming_it(
    api_url: str, make_key: Callable[..., str], method: str, path: str, says: str
):
    response = call(api_url, method, path, make_key("admin"))
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["message"].startswith(says), response.json()


@pytest.mark.parametrize("path", ["/api/openapi.json"])
def test_openapi_document_lists_the_contract(api_url: str, path: str):
    spec = requests.get(api_url + path, timeout=10).json()
    assert spec["openapi"].startswith("3.")
    for expected in [
        "/api/workflows",
        "/api/workflows/{workflow_id}",
        "/api/workflows/{workflow_id}/plan",
        "/api/workflows/{workflow_id}/execute",
        "/api/workflows/validate",
        "/api/executions",
        "/api/executions/{execution_id}",
    ]:
        assert expected in spec["paths"], expected


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/api/workflows", '{"name": "a\\u0000b", "nodes": []}', "body.name"),
        ("POST", "/api/workflows/validate", '{"name": "\\ud800", "nodes": []}', "body.name"),
        ("POST", "/api/events", '{"type": "x", "payload": {"n": NaN}}', "body"),
        (
            "POST",
            "/api/events",
            '{"type": "x", "payload": ' + "[" * 5000 + "]" * 5000 + "}",
            "body",
        ),
        ("POST", "/api/events", '{"type": "x", "payload": ' + "9" * 5000 + "}", "body"),
        ("GET", "/api/workflows?page=9223372036854775807", None, "page"),
        ("GET", "/api/workflows?name=%00", None, "name"),
    ],
)
def test_input_the_database_cannot_store_is_a_422(
    api_url: str, make_key, method, path, body, field
):
    response = call(
        api_url,
        method,
        path,
        make_key("admin"),
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert field in response.json()["errors"]


def test_enum_fields_holding_lists_are_422s_not_500s(api_url: str, make_key):
    bad = {
        "name": "t",
        "on_failure": [1],
        "nodes": [
            {"id": "start", "type": ["trigger"]},
            {"id": "a", "type": "action", "trigger_rule": {}, "config": {"action_type": []}},
        ],
    }
    response = call(api_url, "POST", "/api/workflows/validate", make_key("viewer"), json=bad)
    assert response.status_code == 422
    locations = {p["location"] for p in response.json()["errors"]["definition"]}
    assert {"on_failure", "nodes[start].type", "nodes[a].trigger_rule"} <= locations


def test_saving_a_template_that_reads_a_missing_step_is_a_422(
    api_url: str, make_key: Callable[..., str]
):
    doc = workflow(
        "Greeter",
        [
            trigger(),
            action("fetch", "transform", output={"name": "Ada"}),
            action("greet", "log", message="hi {{ steps.fetchh.output.name }}"),
            {
                "id": "check",
                "type": "condition",
                "config": {"expression": "steps['ghost'].output.vip"},
            },
            action("vip", "log", message="{{ steps.fetch.output.name }}"),
        ],
        [("start", "fetch"), ("fetch", "greet"), ("fetch", "check")],
    )
    doc["connections"].append({"source": "check", "target": "vip", "when": "true"})
    key = make_key("editor")
    for method, path in (("POST", "/api/workflows"), ("POST", "/api/workflows/validate")):
        response = call(api_url, method, path, key, json=doc)
        assert response.status_code == 422, response.text
        problems = response.json()["errors"]["definition"]
        assert problems == [
            {
                "location": "nodes[greet].config.message",
                "node": "greet",
                "message": "the template 'hi {{ steps.fetchh.output.name }}' reads step "
                "'fetchh', which workflow 'Greeter' does not have (its steps: start, fetch, "
                "greet, check, vip)",
            },
            {
                "location": "nodes[check].config.expression",
                "node": "check",
                "message": "the expression \"steps['ghost'].output.vip\" reads step 'ghost', "
                "which workflow 'Greeter' does not have (its steps: start, fetch, greet, "
                "check, vip)",
            },
        ]
    doc["nodes"][2]["config"]["message"] = "hi {{ steps.fetch.output.name }}"
    doc["nodes"][3]["config"]["expression"] = "steps.fetch.output.name == 'Ada'"
    created = call(api_url, "POST", "/api/workflows", key, json=doc)
    assert created.status_code == 201, created.text
    doc["nodes"][4]["config"]["message"] = "{{ steps.nobody.status }}"
    changed = call(api_url, "PUT", f"/api/workflows/{created.json()['id']}", key, json=doc)
    assert changed.status_code == 422
    assert changed.json()["errors"]["definition"][0]["node"] == "vip"


def test_saving_an_http_step_the_guard_will_refuse_is_a_422_naming_the_setting(
    api_url: str, make_key: Callable[..., str]
):
    def calls(*urls: str) -> dict:
        nodes = [trigger()] + [
            action(f"call{i}", "http_request", url=url) for i, url in enumerate(urls)
        ]
        edges = [("start", f"call{i}") for i in range(len(urls))]
        return workflow("outbound", nodes, edges)

    key = make_key("editor")
    refused = calls(
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/{{ input.path }}",
        "http://user@api.example.com/",
    )
    response = call(api_url, "POST", "/api/workflows", key, json=refused)
    assert response.status_code == 422, response.text
    problems = {p["node"]: p for p in response.json()["errors"]["definition"]}
    assert problems["call0"]["location"] == "nodes[call0].config.url"
    assert problems["call0"]["message"] == (
        "http_request: 169.254.169.254 is a private, loopback or link-local address, which "
        "the platform does not call; add it to ATOM_HTTP_ALLOWLIST to allow it"
    )
    assert "10.1.2.3" in problems["call1"]["message"]
    assert "ATOM_HTTP_ALLOWLIST" in problems["call1"]["message"]
    assert "user information" in problems["call2"]["message"]
    # the test installation's ATOM_HTTP_ALLOWLIST admits loopback; names resolve at run time
    allowed = calls("http://127.0.0.1:9/x", "http://localhost/", "https://{{ input.host }}/")
    assert call(api_url, "POST", "/api/workflows", key, json=allowed).status_code == 201


def test_the_docs_page_loads_every_asset_from_this_server(api_url: str):
    page = requests.get(api_url + "/api/docs", timeout=10)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) >= 3 and "/api/openapi.json" in page.text
    for asset in assets:  # nothing from a CDN: the page works with no network
        assert asset.startswith("/api/docs/assets/"), asset
        got = requests.get(api_url + asset, timeout=10)
        assert got.status_code == 200 and len(got.content) > 10_000, asset
    bundle = requests.get(api_url + "/api/docs/assets/swagger-ui-bundle.js", timeout=10)
    assert bundle.headers["Content-Type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in bundle.text
    outside = requests.get(api_url + "/api/docs/assets/..%2F__init__.py", timeout=10)
    assert outside.status_code == 404  # the package's folder, and nothing above it
