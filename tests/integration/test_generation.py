"""The catalogue and the generator over HTTP, and a generated workflow that runs: the
catalogue's base URLs point at a loopback server, the event comes in through /api/events,
and the steps call the (loopback) Asana and Slack APIs with the email's data."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import pytest
import requests
from werkzeug.serving import make_server

from atom.client import Client
from atom.config import Settings
from tests.integration.loopback import LoopbackService

GUIDE = "When I receive important emails, create tasks and notify team"


def call(base: str, method: str, path: str, key: str | None = None, **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if key:
        headers["X-API-Key"] = key
    return requests.request(method, base + path, headers=headers, timeout=30, **kwargs)


@pytest.fixture
def sandbox_api(settings_with: Callable[..., Settings], service: LoopbackService) -> Iterator[str]:
    """An API whose catalogue sends every service's calls to the loopback service."""
    from api.app import create_app

    app = create_app(settings_with(catalogue_base_url=service.url))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_catalogue_is_listed_paginated_filtered_and_one_by_one(api_url: str, make_key):
    key = make_key("viewer")
    first = call(api_url, "GET", "/api/services?page_size=100", key)
    assert first.status_code == 200
    assert json.loads(first.headers["X-Pagination"])["total"] >= 180
    assert len(first.json()) == 100
    slugs = set()
    for page in (1, 2, 3, 4):
        slugs |= {
            s["slug"]
            for s in call(api_url, "GET", f"/api/services?page_size=100&page={page}", key).json()
        }
    assert len(slugs) >= 180 and {"gmail", "slack", "salesforce", "asana"} <= slugs
    chat = call(api_url, "GET", "/api/services?category=chat&page_size=100", key).json()
    assert chat and {s["category"] for s in chat} == {"chat"}
    assert [s["slug"] for s in call(api_url, "GET", "/api/services?q=gcal", key).json()] == [
        "google_calendar"
    ]
    slack = call(api_url, "GET", "/api/services/slack", key).json()
    assert slack["auth"] == {"type": "oauth2"} and "send_message" in {
        a["key"] for a in slack["actions"]
    }
    missing = call(api_url, "GET", "/api/services/no-such-thing", key)
    assert missing.status_code == 404 and "catalogue" in missing.json()["message"]
    assert call(api_url, "GET", "/api/services").status_code == 401


def test_generate_answers_the_contract_and_the_workflow_is_accepted_unchanged(
    api_url: str, make_key
):
    key = make_key("editor")
    answer = call(
        api_url, "POST", "/api/workflows/automation/generate", key, json={"user_input": GUIDE}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) >= {
        "workflow",
        "detected",
        "confidence",
        "missing",
        "pattern",
        "generation_ms",
    }
    assert body["detected"]["trigger"]["service"] == "gmail"
    assert [a["service"] for a in body["detected"]["actions"]] == ["asana", "slack"]
    assert 0 < body["confidence"] <= 1 and body["generation_ms"] < 1000
    assert all(set(m) == {"field", "question"} for m in body["missing"])
    refused = call(api_url, "POST", "/api/workflows", key, json=body["workflow"])
    assert refused.status_code == 422 and "credential 'asana'" in refused.text
    store_credentials(api_url, key, "asana", "slack")
    created = call(api_url, "POST", "/api/workflows", key, json=body["workflow"])
    assert created.status_code == 201, created.text


def test_preferred_services_decide_generic_words(api_url: str, make_key):
    key = make_key("viewer")
    context = {
        "timezone": "America/New_York",
        "preferred_services": {"email": "outlook", "chat": "Microsoft Teams"},
    }
    body = call(
        api_url,
        "POST",
        "/api/workflows/automation/generate",
        key,
        json={"user_input": GUIDE, "context": context},
    ).json()
    assert body["detected"]["trigger"]["service"] == "outlook"
    assert [a["service"] for a in body["detected"]["actions"]] == ["asana", "microsoft_teams"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_input": "hello, how are you"}, "user_input"),
        ({"user_input": ""}, "user_input"),
        ({}, "user_input"),
        ({"user_input": GUIDE, "context": {"timezone": "Mars/Olympus"}}, "context"),
        ({"user_input": GUIDE, "context": {"preferred_services": ["notaservice"]}}, "context"),
        ({"user_input": GUIDE, "surprise": 1}, "surprise"),
        ({"user_input": "x" * 5000}, "user_input"),
    ],
)
def test_bad_or_pointless_requests_are_a_422_naming_the_field(api_url: str, make_key, body, field):
    answer = call(
        api_url, "POST", "/api/workflows/automation/generate", make_key("viewer"), json=body
    )
    assert answer.status_code == 422, answer.text
    payload = answer.json()
    assert payload["code"] == 422 and field in json.dumps(payload["errors"])


def test_save_creates_the_workflow_and_its_schedule_and_needs_the_editor_role(
    api_url: str, make_key
):
    request = {
        "user_input": "every Monday at 9am post the weekly sales report to #sales in Slack",
        "context": {"timezone": "Europe/Paris"},
        "save": True,
    }
    viewer = make_key("viewer")
    refused = call(api_url, "POST", "/api/workflows/automation/generate", viewer, json=request)
    assert refused.status_code == 403
    editor = make_key("editor")
    store_credentials(api_url, editor, "slack")
    saved = call(api_url, "POST", "/api/workflows/automation/generate", editor, json=request)
    assert saved.status_code == 201, saved.text
    body = saved.json()
    assert body["detected"]["schedule"] == {"cron": "0 9 * * 1", "timezone": "Europe/Paris"}
    workflow = call(api_url, "GET", saved.headers["Location"].replace(api_url, ""), editor).json()
    assert (
        workflow["id"] == body["workflow_id"]
        and workflow["definition"]["nodes"][0]["config"]["kind"] == "schedule"
    )
    schedule = call(api_url, "GET", f"/api/schedules/{body['schedule_id']}", editor).json()
    assert (schedule["cron"], schedule["timezone"]) == ("0 9 * * 1", "Europe/Paris")
    assert len(schedule["next_runs"]) == 5
    call(api_url, "DELETE", f"/api/schedules/{body['schedule_id']}", editor)


def test_the_tenants_history_decides_a_generic_word(api_url: str, make_key):
    tenant = "history-" + make_key("viewer")[:8]
    key = make_key("editor", tenant)
    store_credentials(api_url, key, "typeform", "discord")
    saved = call(
        api_url,
        "POST",
        "/api/workflows/automation/generate",
        key,
        json={"user_input": "post new Typeform responses to Discord", "save": True},
    )
    assert saved.status_code == 201, saved.text
    generic = {"user_input": "send new form responses to the team chat"}
    mine = call(api_url, "POST", "/api/workflows/automation/generate", key, json=generic).json()
    assert mine["detected"]["trigger"]["service"] == "typeform"
    assert [a["service"] for a in mine["detected"]["actions"]] == ["discord"]
    other = call(
        api_url, "POST", "/api/workflows/automation/generate", make_key("viewer"), json=generic
    ).json()
    assert other["detected"]["trigger"]["service"] == "google_forms"
    assert [a["service"] for a in other["detected"]["actions"]] == ["slack"]
    assert {m["field"] for m in other["missing"]} >= {"trigger.service", "actions[0].service"}


def store_credentials(api_url: str, key: str, *slugs: str) -> None:
    """Put a token for each service in the tenant's vault: generated steps reference the
    tenant's credential by the service's slug, and saving refuses a missing one."""
    for slug in slugs:
        stored = call(
            api_url, "POST", "/api/credentials", key, json={"name": slug, "value": f"token-{slug}"}
        )
        assert stored.status_code == 201, stored.text


def test_a_generated_workflow_runs_against_the_services_it_names(
    sandbox_api: str, make_key, worker, service: LoopbackService
):
    service.route(r"POST /asana/tasks", lambda r, m: (201, {"data": {"gid": "42"}}))
    service.route(r"POST /slack/chat\.postMessage", lambda r, m: (200, {"ok": True}))
    key = make_key("editor")
    request = {
        "user_input": "When I receive important emails in Gmail, create a task in Asana "
        "and notify the team on Slack #ops",
    }
    body = call(sandbox_api, "POST", "/api/workflows/automation/generate", key, json=request).json()
    assert body["detected"]["trigger"] == {
        **body["detected"]["trigger"],
        "service": "gmail",
        "event": "new_email",
    }
    client = Client(sandbox_api, key)
    store_credentials(sandbox_api, key, "gmail", "asana", "slack")
    workflow = client.create_workflow(body["workflow"])
    assert workflow["event_type"] == "gmail.new_email"

    email = {
        "subject": "Contract renewal",
        "from": "jane@acme.com",
        "body": "Please sign",
        "labels": ["IMPORTANT"],
    }
    fired = client.request(
        "POST", "/api/events", json={"type": "gmail.new_email", "payload": email}
    )
    run = client.wait(fired["executions"][0]["id"])
    assert run["status"] == "succeeded", run
    task = service.calls("POST", "/asana/tasks")
    assert len(task) == 1 and task[0].body["data"]["name"] == "Contract renewal"
    assert task[0].headers["Authorization"] == "Bearer token-asana"
    message = service.calls("POST", "/slack/chat.postMessage")
    assert len(message) == 1 and message[0].body["channel"] == "#ops"
    assert "Contract renewal" in message[0].body["text"]

    # Not important: the condition is false and nothing is called.
    dull = {**email, "subject": "Newsletter", "labels": []}
    fired = client.request("POST", "/api/events", json={"type": "gmail.new_email", "payload": dull})
    run = client.wait(fired["executions"][0]["id"])
    assert run["status"] == "succeeded"
    assert {
        s["status"]
        for s in run["steps"]
        if s["node_id"] != "condition" and s["node_id"] != "trigger"
    } == {"skipped"}
    assert len(service.calls("POST", "/asana/tasks")) == 1
