"""The HTTP contract: validation errors, auth and roles, tenant isolation, error shapes."""

from __future__ import annotations

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


def test_body_over_the_limit_is_413(api_url: str, make_key: Callable[..., str]):
    huge = {**VALID, "description": "x" * (2 * 1024 * 1024)}
    response = call(api_url, "POST", "/api/workflows", make_key("editor"), json=huge)
    assert response.status_code == 413 and response.json()["code"] == 413


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
