"""Issue 11 on real processes: the holes an attack review found, and the vault, keys, rate
limits, audit log and tenant email allowlist. (URL forms and DNS rebinding: tests/unit/
test_ssrf.py.)"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
import requests
from werkzeug.serving import make_server

from atom.client import ApiError, Client
from atom.config import Settings
from tests.conftest import Processes, start_api
from tests.integration.functions import SCOPED_TENANT
from tests.integration.helpers import action, by_node, trigger, workflow
from tests.integration.loopback import LoopbackService

pytestmark = pytest.mark.integration


def _echo(service: LoopbackService) -> None:
    service.route("GET /echo.*", lambda r, m: (200, {"seen": r.headers}))
    service.route("POST /echo.*", lambda r, m: (200, {"seen": r.headers}))


def _http(node_id: str, url: str, **config) -> dict:
    return action(node_id, "http_request", url=url, **config)


def _chain(name: str, *nodes: dict) -> dict:
    ids = ["start", *[n["id"] for n in nodes]]
    return workflow(name, [trigger(), *nodes], list(zip(ids, ids[1:], strict=False)))


def _raw(url: str, key: str, method: str = "GET", **kwargs) -> requests.Response:
    return requests.request(method, url, headers={"X-API-Key": key}, timeout=30, **kwargs)


# --- hole 2: webhook tokens in the access log ---------------------------------------------


def test_webhook_tokens_never_reach_the_access_log(
    processes: Processes, settings: Settings, make_key, worker
):
    proc, base = start_api(processes, "--dev", name="api-dev")
    client = Client(base, make_key("admin"))
    wf = client.create_workflow(
        workflow("hooked", [trigger(kind="webhook"), action("a", "log", message="hi")], [])
        | {"connections": [{"source": "start", "target": "a"}]}
    )
    token = client.request("POST", f"/api/workflows/{wf['id']}/webhook")["token"]
    assert requests.post(f"{base}/api/hooks/{token}", json={"x": 1}, timeout=30).status_code == 202
    wrong = "not-a-real-token-" + uuid.uuid4().hex
    assert requests.post(f"{base}/api/hooks/{wrong}", json={}, timeout=30).status_code == 404
    time.sleep(0.5)
    log = Path(proc.log_path).read_text()
    assert "/api/hooks/***" in log  # the request lines are there, without their tokens
    assert token not in log and wrong not in log
    processes.stop(proc)


# --- hole 4: secret headers, email recipients, python functions ------------------------------


def test_secret_headers_read_stars_for_every_role(
    client: Client, make_key, api_url: str, service: LoopbackService
):
    _echo(service)
    secret = "s3cret-" + uuid.uuid4().hex
    wf = client.create_workflow(
        _chain(
            "headers",
            _http(
                "call",
                service.url + "/echo",
                headers={
                    "Authorization": f"Bearer {secret}",
                    "X-API-Key": secret,
                    "Cookie": f"sid={secret}",
                    "Accept": "application/json",
                },
            ),
        )
    )
    run = client.wait(client.execute(wf["id"])["id"])
    assert run["status"] == "succeeded"
    assert service.calls("GET", "/echo")[0].headers["Authorization"] == f"Bearer {secret}"
    for key in (_same_tenant_key(client, "viewer"), str(client.session.headers["X-API-Key"])):
        body = _raw(f"{api_url}/api/executions/{run['id']}", key).text
        headers = by_node(json.loads(body))["call"]["input"]["headers"]
        assert headers["Authorization"] == headers["X-API-Key"] == headers["Cookie"] == "***"
        assert headers["Accept"] == "application/json"
        assert f"Bearer {secret}" not in body and f"sid={secret}" not in body


def _same_tenant_key(client: Client, role: str) -> str:
    return client.request("POST", "/api/keys", json={"name": role, "role": role})["key"]


def test_email_goes_only_to_allowed_domains(client: Client):
    rule = {
        "name": "mail me",
        "metric": "error_rate",
        "threshold": 0.5,
        "channels": [{"type": "email", "to": ["ceo@victim.example", "ops@corp.example"]}],
    }
    with pytest.raises(ApiError) as refused:
        client.request("POST", "/api/workflows/monitoring/alerts", json=rule)
    assert refused.value.status == 422
    problem = refused.value.body["errors"]["channels[0]"][0]
    assert "ceo@victim.example" in problem and "email_allowed_domains" in problem

    with pytest.raises(ApiError) as bad:
        client.request("PUT", "/api/settings", json={"email_allowed_domains": ["not a domain"]})
    assert bad.value.status == 422 and "email_allowed_domains[0]" in bad.value.body["errors"]

    client.request("PUT", "/api/settings", json={"email_allowed_domains": ["corp.example"]})
    with pytest.raises(ApiError) as still:
        client.request("POST", "/api/workflows/monitoring/alerts", json=rule)
    assert "ceo@victim.example" in still.value.body["errors"]["channels[0]"][0]
    rule["channels"] = [{"type": "email", "to": ["ops@corp.example", "a@eu.corp.example"]}]
    assert client.request("POST", "/api/workflows/monitoring/alerts", json=rule)["id"]


def test_python_functions_are_scoped_per_tenant(api_url: str, make_key, worker):
    owner = Client(api_url, make_key("admin", tenant=SCOPED_TENANT))
    other = Client(api_url, make_key("admin"))
    definition = _chain("scoped", action("fn", "python", function="scoped_answer"))
    mine = owner.wait(owner.execute(owner.create_workflow(definition)["id"])["id"])
    assert mine["status"] == "succeeded" and by_node(mine)["fn"]["output"] == {"answer": 42}
    theirs = other.wait(other.execute(other.create_workflow(definition)["id"])["id"])
    assert theirs["status"] == "failed"
    message = by_node(theirs)["fn"]["error"]["message"]
    assert "no function registered as 'scoped_answer'" in message
    assert "scoped_answer" not in message.split("registered:")[1]


# --- the vault -----------------------------------------------------------------------------


def test_credentials_are_used_by_steps_and_never_shown(
    client: Client, service: LoopbackService, worker: subprocess.Popen
):
    _echo(service)
    token = "tok-" + uuid.uuid4().hex
    password = "pw-" + uuid.uuid4().hex
    created = client.request(
        "POST", "/api/credentials", json={"name": "crm_token", "value": token, "type": "token"}
    )
    assert set(created) >= {"id", "name", "type", "created_at"} and "value" not in created
    client.request(
        "POST",
        "/api/credentials",
        json={"name": "crm_basic", "value": {"username": "bot", "password": password}},
    )
    answers = [
        json.dumps(client.request("GET", "/api/credentials")),
        json.dumps(client.request("GET", "/api/credentials/crm_basic")),
    ]
    with pytest.raises(ApiError) as taken:
        client.request("POST", "/api/credentials", json={"name": "crm_token", "value": "x"})
    assert taken.value.status == 409

    with pytest.raises(ApiError) as missing:
        client.create_workflow(
            _chain("missing", _http("a", service.url + "/echo", auth={"credential": "nope"}))
        )
    assert missing.value.status == 422
    assert "'nope'" in json.dumps(missing.value.body["errors"])

    definition = _chain(
        "vault",
        _http("tpl", service.url + "/echo", headers={"X-Token": "{{ credentials.crm_token }}"}),
        _http("basic", service.url + "/echo", auth={"credential": "crm_basic"}),
        action("say", "log", message="token is {{ credentials.crm_token }}"),
    )
    wf = client.create_workflow(definition)
    run = client.wait(client.execute(wf["id"])["id"])
    assert run["status"] == "succeeded", run
    assert service.calls("GET", "/echo")[0].headers["X-Token"] == token
    basic = service.calls("GET", "/echo")[1].headers["Authorization"]
    assert basic.startswith("Basic ")
    steps = by_node(run)
    assert steps["tpl"]["input"]["headers"]["X-Token"] == "***"
    assert steps["basic"]["input"]["headers"]["Authorization"] == "***"
    assert steps["tpl"]["output"]["body"]["seen"]["X-Token"] == "***"  # echoed back: masked
    events = [json.dumps(data) for _, data in client.events(run["id"])]
    answers += [json.dumps(client.execution(run["id"])), *events]
    time.sleep(1)
    logs = Path(worker.log_path).read_text()  # type: ignore[attr-defined]
    assert "token is ***" in logs
    for secret in (token, password, basic.split()[1]):
        assert all(secret not in text for text in answers), secret
        assert secret not in logs, secret

    new_token = "tok2-" + uuid.uuid4().hex
    client.request("PUT", "/api/credentials/crm_token", json={"value": new_token})
    assert client.wait(client.execute(wf["id"])["id"])["status"] == "succeeded"
    assert service.calls("GET", "/echo")[-2].headers["X-Token"] == new_token

    client.request("DELETE", "/api/credentials/crm_token")
    failed = client.wait(client.execute(wf["id"])["id"])
    assert failed["status"] == "failed"
    assert "credential 'crm_token' does not exist" in by_node(failed)["tpl"]["error"]["message"]


def test_a_full_run_leaks_no_secret(
    processes: Processes,
    settings: Settings,
    make_key,
    worker: subprocess.Popen,
    service: LoopbackService,
):
    """Vault values in headers (a template and ``auth: {credential}``), the webhook token, the
    Redis password, the vault's key and the API key: searched for in every log line (API and
    workers at DEBUG), every response body and every event of a run that uses them."""
    from tests.conftest import wait_for_worker

    _echo(service)
    debug = {"ATOM_LOG_LEVEL": "DEBUG"}
    api, base = start_api(processes, "--workers", "1", env=debug, name="api-scan")
    scan_worker = processes.start(
        "worker", "--concurrency=1", "--loglevel=DEBUG", "-n", "scan@%h", env=debug, name="w-scan"
    )
    wait_for_worker(settings, scan_worker, hostname="scan@" + __import__("socket").gethostname())
    api_key = make_key("admin")
    client = Client(base, api_key)
    token_value = "tok-" + uuid.uuid4().hex
    password = "pw-" + uuid.uuid4().hex
    client.request("POST", "/api/credentials", json={"name": "bearer", "value": token_value})
    client.request(
        "POST",
        "/api/credentials",
        json={"name": "basic", "value": {"username": "bot", "password": password}},
    )
    nodes = [
        trigger(kind="webhook"),
        _http(
            "tpl",
            service.url + "/echo",
            method="POST",
            headers={"Authorization": "Bearer {{ credentials.bearer }}"},
            json={"token": "{{ credentials.bearer }}"},
        ),
        _http("basic", service.url + "/echo", auth={"credential": "basic"}),
        action("say", "log", message="using {{ credentials.bearer }}"),
    ]
    wf = client.create_workflow(
        workflow("leaky?", nodes, [("start", "tpl"), ("tpl", "basic"), ("basic", "say")])
    )
    hook_token = client.request("POST", f"/api/workflows/{wf['id']}/webhook")["token"]
    answers: list[str] = []
    delivered = requests.post(f"{base}/api/hooks/{hook_token}", json={"n": 1}, timeout=30)
    assert delivered.status_code == 202
    answers.append(delivered.text)
    run = client.wait(delivered.json()["id"])
    assert run["status"] == "succeeded", run
    assert service.calls("POST", "/echo")[0].headers["Authorization"] == f"Bearer {token_value}"
    basic = service.calls("GET", "/echo")[0].headers["Authorization"].split()[1]
    answers += [json.dumps(data) for _, data in client.events(run["id"])]
    for path in (
        f"/api/executions/{run['id']}",
        "/api/executions",
        f"/api/workflows/{wf['id']}",
        "/api/workflows",
        "/api/credentials",
        "/api/audit?page_size=100",
        "/api/keys",
        "/api/workflows/monitoring/metrics",
        "/api/workflows/monitoring/alerts",
        "/api/workflows/monitoring/status",
        "/api/workflows/monitoring/health",
        f"/api/workflows/{wf['id']}/health",
        "/metrics",
    ):
        answer = requests.get(base + path, headers={"X-API-Key": api_key}, timeout=30)
        assert answer.status_code == 200, (path, answer.text)
        answers.append(answer.text)
    time.sleep(1)  # the last log lines reach the files
    logs = {
        name: Path(proc.log_path).read_text()  # type: ignore[attr-defined]
        for name, proc in (("api", api), ("worker", worker), ("debug worker", scan_worker))
    }
    # the scan reads what it should: the delivery's request line, the run's step lines
    assert "/api/hooks/***" in logs["api"] and '"status": 202' in logs["api"]
    assert "using ***" in logs["worker"] + logs["debug worker"]  # the log step ran, masked
    redis_password = urlsplit(settings.redis_url or "").password
    assert redis_password
    secrets_ = {
        "bearer credential": token_value,
        "basic password": password,
        "basic header": basic,
        "webhook token": hook_token,
        "redis password": redis_password,
        "vault key": settings.secret_key,
        "api key": api_key,
    }
    found = [
        (what, where)
        for what, secret in secrets_.items()
        for where, text in [*((f"answer {i}", a) for i, a in enumerate(answers)), *logs.items()]
        if secret and secret in text
    ]
    assert found == []
    processes.stop(scan_worker)
    processes.stop(api)


def test_viewers_and_operators_cannot_touch_the_vault(client: Client, api_url: str):
    for role in ("viewer", "operator"):
        key = _same_tenant_key(client, role)
        assert _raw(f"{api_url}/api/credentials", key).status_code == 403
        answer = _raw(f"{api_url}/api/credentials", key, "POST", json={"name": "a", "value": "b"})
        assert answer.status_code == 403


def test_rotate_key_re_encrypts_every_credential(
    client: Client, settings: Settings, processes: Processes
):
    from atom.security import vault
    from atom.store.db import make_engine, make_sessionmaker
    from atom.store.models import Credential

    client.request("POST", "/api/credentials", json={"name": "rot", "value": "v-rotate"})
    new_key = f"new-secret,{settings.secret_key}"
    proc = processes.start(
        "credentials", "rotate-key", env={"ATOM_SECRET_KEY": new_key}, name="rotate"
    )
    assert proc.wait(60) == 0, Path(proc.log_path).read_text()
    assert "re-encrypted" in Path(proc.log_path).read_text()
    engine = make_engine(settings.database_url or "")
    try:
        with make_sessionmaker(engine).begin() as s:
            rows = list(s.query(Credential).filter(Credential.name == "rot"))
            assert [vault.decrypt(r.ciphertext, "new-secret") for r in rows] == ["v-rotate"]
            with pytest.raises(Exception, match="cannot be decrypted"):
                vault.decrypt(rows[0].ciphertext, settings.secret_key)
            # back to the test key, so the other tests' workers still read every value
            vault.rotate(s, f"{settings.secret_key},new-secret")
    finally:
        engine.dispose()


# --- keys ------------------------------------------------------------------------------------


def test_keys_expire_are_revoked_and_are_shown_once(client: Client, api_url: str, make_key):
    made = client.request(
        "POST", "/api/keys", json={"name": "ci", "role": "viewer", "expires_in": 2}
    )
    assert made["key"].startswith("atom_") and made["role"] == "viewer" and made["expires_at"]
    assert _raw(f"{api_url}/api/workflows", made["key"]).status_code == 200
    listed = client.request("GET", "/api/keys")
    assert made["id"] in [k["id"] for k in listed]
    assert made["key"] not in json.dumps(listed) and all("key" not in k for k in listed)
    one = client.request("GET", f"/api/keys/{made['id']}")
    assert one["last_used_at"] and one["revoked"] is False
    time.sleep(2.5)
    expired = _raw(f"{api_url}/api/workflows", made["key"])
    assert expired.status_code == 401 and "expired" in expired.json()["message"]

    other = client.request("POST", "/api/keys", json={"name": "op", "role": "operator"})
    assert _raw(f"{api_url}/api/workflows", other["key"]).status_code == 200
    admin = str(client.session.headers["X-API-Key"])
    assert _raw(f"{api_url}/api/keys/{other['id']}", admin, "DELETE").status_code == 204
    assert _raw(f"{api_url}/api/workflows", other["key"]).status_code == 401
    assert client.request("GET", f"/api/keys/{other['id']}")["revoked"] is True

    stranger = make_key("admin")
    assert _raw(f"{api_url}/api/keys/{other['id']}", stranger).status_code == 404
    with pytest.raises(ApiError) as invalid:
        client.request("POST", "/api/keys", json={"role": "root", "expires_in": -1, "extra": 1})
    assert invalid.value.status == 422
    assert set(invalid.value.body["errors"]) == {"role", "expires_in", "extra"}
    operator = _same_tenant_key(client, "operator")
    assert _raw(f"{api_url}/api/keys", operator).status_code == 403


def _serve(app) -> tuple[str, Callable[[], None]]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server.shutdown


def test_a_revocation_reaches_every_api_process_at_once_and_the_key_cache_is_bounded(
    settings_with: Callable[..., Settings], make_key
):
    """Two apps stand for two API processes, each with its own key cache: a key revoked
    through one is refused by the other on its next request (the Redis revocation counter),
    and a key revoked behind the API's back (in SQL) within ATOM_KEY_CACHE_SECONDS."""
    from sqlalchemy import update

    from api.app import create_app
    from atom.security.auth import hash_key
    from atom.store.db import make_engine, make_sessionmaker
    from atom.store.models import ApiKey

    cached = settings_with(key_cache_seconds=1.5)
    app_two = create_app(cached)
    (one, stop_one), (two, stop_two) = _serve(create_app(cached)), _serve(app_two)
    cache = app_two.extensions["atom"].keys
    engine = make_engine(cached.database_url or "")
    try:
        tenant = f"cache-{uuid.uuid4().hex[:8]}"
        admin = make_key("admin", tenant=tenant)
        made = Client(one, admin).request("POST", "/api/keys", json={"role": "viewer"})
        assert _raw(f"{two}/api/workflows", made["key"]).status_code == 200
        assert cache.holds(made["key"])
        assert _raw(f"{one}/api/keys/{made['id']}", admin, "DELETE").status_code == 204
        refused = _raw(f"{two}/api/workflows", made["key"])
        assert refused.status_code == 401 and "revoked" in refused.json()["message"]

        behind = make_key("viewer", tenant=tenant)
        assert _raw(f"{two}/api/workflows", behind).status_code == 200
        with make_sessionmaker(engine).begin() as db:  # no API call: no counter bump
            db.execute(
                update(ApiKey)
                .where(ApiKey.key_hash == hash_key(behind))
                .values(revoked_at=datetime.now(UTC))
            )
        assert cache.holds(behind)  # trusted without asking PostgreSQL...
        time.sleep(1.6)
        assert _raw(f"{two}/api/workflows", behind).status_code == 401  # ...for 1.5 s at most
        assert not cache.holds(behind)
    finally:
        stop_one()
        stop_two()
        engine.dispose()


# --- audit -----------------------------------------------------------------------------------


def test_the_audit_log_records_changes_and_commands(client: Client, api_url: str, make_key):
    wf = client.create_workflow(_chain("audited", action("a", "log", message="x")))
    run = client.execute(wf["id"])
    client.wait(run["id"])
    client.request("POST", "/api/credentials", json={"name": "audited", "value": "v"})
    client.request("DELETE", "/api/credentials/audited")
    with pytest.raises(ApiError):
        client.request("POST", f"/api/executions/{run['id']}/cancel")  # 409: recorded too
    entries = client.request("GET", "/api/audit", params={"page_size": 100})
    actions = [(e["action"], e["target_id"], e["status"]) for e in entries]
    assert ("workflow.create", wf["id"], 201) in actions
    assert ("workflow.execute", wf["id"], 202) in actions
    assert any(a == "credential.create" and s == 201 for a, _, s in actions)
    assert ("credential.delete", "audited", 204) in actions
    assert ("execution.cancel", run["id"], 409) in actions
    assert all(e["key_id"] and e["client"] == "127.0.0.1" and e["at"] for e in entries)
    only = client.request("GET", "/api/audit", params={"action": "workflow.execute"})
    assert [e["target_id"] for e in only] == [wf["id"]]
    assert _raw(f"{api_url}/api/audit", _same_tenant_key(client, "editor")).status_code == 403
    assert _raw(f"{api_url}/api/audit", make_key("admin")).json() == []  # another tenant


# --- rate limits, failed authentication, event streams (an app with small budgets) ----------


@pytest.fixture
def limited(settings_with: Callable[..., Settings], worker) -> Iterator[tuple[str, Settings]]:
    from api.app import create_app

    limited_settings = settings_with(
        rate_limit_enabled=True,
        rate_limit_execute="3/minute",
        rate_limit_tenant_execute="5/minute",
        rate_limit_webhooks="2/minute",
        auth_failures_per_minute=5,
        sse_max_per_key=2,
        sse_max_per_process=3,
    )
    app = create_app(limited_settings)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", limited_settings
    limits = app.extensions["atom"].limits
    limits._limiter.clear(limits.items["auth_failures"], "atom", "auth_failures", "127.0.0.1")
    server.shutdown()


def test_execute_budgets_per_key_and_per_tenant(limited, make_key):
    base, _ = limited
    tenant = f"limits-{uuid.uuid4().hex[:8]}"
    first, second = make_key("admin", tenant=tenant), make_key("admin", tenant=tenant)
    wf = Client(base, first).create_workflow(_chain("limited", action("a", "log", message="x")))
    url = f"{base}/api/workflows/{wf['id']}/execute"
    answers = [_raw(url, first, "POST", json={}) for _ in range(4)]
    assert [a.status_code for a in answers] == [202, 202, 202, 429]
    assert answers[0].headers["RateLimit-Limit"] == "3"
    assert answers[2].headers["RateLimit-Remaining"] == "0"
    assert int(answers[3].headers["Retry-After"]) >= 1
    assert "Rate limit" in answers[3].json()["message"]
    assert _raw(f"{base}/api/workflows", first).status_code == 200  # reads have their own budget
    # the tenant's budget (5) is shared by its keys: the second key gets two more
    more = [_raw(url, second, "POST", json={}).status_code for _ in range(3)]
    assert more == [202, 202, 429]


def test_webhook_budget(limited, make_key):
    base, _ = limited
    client = Client(base, make_key("admin"))
    wf = client.create_workflow(
        workflow("hook-limit", [trigger(kind="webhook"), action("a", "log", message="x")], [])
        | {"connections": [{"source": "start", "target": "a"}]}
    )
    token = client.request("POST", f"/api/workflows/{wf['id']}/webhook")["token"]
    codes = [
        requests.post(f"{base}/api/hooks/{token}", json={}, timeout=30).status_code
        for _ in range(3)
    ]
    assert codes == [202, 202, 429]


def test_failed_authentication_is_throttled_per_address(limited, make_key):
    base, _ = limited
    good = make_key("viewer")
    codes = [_raw(f"{base}/api/workflows", f"atom_guess{i}").status_code for i in range(6)]
    assert codes == [401] * 5 + [429]
    # past the budget the address waits, whatever key it sends
    blocked = _raw(f"{base}/api/workflows", good)
    assert blocked.status_code == 429 and "Retry-After" in blocked.headers


def test_event_streams_are_capped_and_health_keeps_answering(limited, make_key):
    base, _ = limited
    tenant = f"sse-{uuid.uuid4().hex[:8]}"
    a, b, c = (make_key("admin", tenant=tenant) for _ in range(3))
    client = Client(base, a)
    wf = client.create_workflow(_chain("slow", action("wait", "delay", seconds=30)))
    run = client.execute(wf["id"])
    url = f"{base}/api/executions/{run['id']}/events"
    opened: list[requests.Response] = []

    def stream(key: str) -> requests.Response:
        response = requests.get(url, headers={"X-API-Key": key}, stream=True, timeout=30)
        opened.append(response)
        return response

    try:
        assert [stream(a).status_code for _ in range(2)] == [200, 200]
        third = stream(a)
        assert third.status_code == 429 and "per API key" in third.json()["message"]
        assert stream(b).status_code == 200
        fourth = stream(c)
        assert fourth.status_code == 429 and "per API process" in fourth.json()["message"]
        health = requests.get(base + "/api/workflows/monitoring/health", timeout=10)
        assert health.status_code in (200, 503) and "components" in health.json()
    finally:
        for response in opened:
            response.close()
        client.request("POST", f"/api/executions/{run['id']}/cancel")
    deadline = time.monotonic() + 10
    while stream(c).status_code != 200:  # a closed stream frees its place
        assert time.monotonic() < deadline
        time.sleep(0.2)
    opened[-1].close()


def test_event_stream_caps_are_per_key_across_api_processes(limited, make_key):
    from api.app import create_app
    from atom.errors import TooManyRequests
    from atom.security.ratelimit import StreamCaps

    base, limited_settings = limited
    other = make_server("127.0.0.1", 0, create_app(limited_settings), threaded=True)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    second = f"http://127.0.0.1:{other.server_port}"
    key = make_key("admin")
    client = Client(base, key)
    run = client.execute(
        client.create_workflow(_chain("slow2", action("w", "delay", seconds=30)))["id"]
    )
    path = f"/api/executions/{run['id']}/events"
    opened: list[requests.Response] = []

    def stream(where: str) -> requests.Response:
        response = requests.get(where + path, headers={"X-API-Key": key}, stream=True, timeout=30)
        opened.append(response)
        return response

    try:
        assert [stream(base).status_code, stream(base).status_code] == [200, 200]
        refused = stream(second)  # another API process: the key's two slots are taken
        assert refused.status_code == 429, refused.text
        assert "across API processes" in refused.json()["message"]
        client.request("POST", f"/api/executions/{run['id']}/cancel")  # the streams end
        deadline = time.monotonic() + 10
        while stream(second).status_code != 200:  # an ended stream frees its slot everywhere
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        for response in opened:
            response.close()
        other.shutdown()

    # a process that dies holding slots (no release, no heartbeat) frees them after the TTL
    crashed = StreamCaps(2, 10, limited_settings.events_redis, ttl=1)
    alive = StreamCaps(2, 10, limited_settings.events_redis, ttl=1)
    gone = str(uuid.uuid4())
    crashed.acquire(gone), crashed.acquire(gone)
    with pytest.raises(TooManyRequests):
        alive.acquire(gone)
    time.sleep(2.1)
    alive.release(alive.acquire(gone))
    assert alive.count() == 0


# --- hole 3: Redis password, Flower -------------------------------------------------------


def test_the_embedded_redis_wants_a_password(redis_url: str):
    parts = urlsplit(redis_url)
    assert parts.password
    bare = redis.Redis(host=parts.hostname, port=parts.port, socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        bare.ping()
    assert redis.Redis.from_url(redis_url).ping()


def test_flower_hides_the_redis_password_and_guards_metrics(
    processes: Processes, settings: Settings, worker
):
    from cli.embedded import free_port
    from tests.conftest import wait_for_worker
    from tests.integration.test_flower import poll, wait_for_flower

    password = urlsplit(settings.redis_url or "").password
    assert password
    port = free_port()
    proc = processes.start(
        "flower", env={"FLOWER_PORT": str(port), "FLOWER_BASIC_AUTH": "ops:pw"}, name="flower-sec"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_flower(url, proc)
        assert requests.get(url + "/metrics", timeout=30).status_code == 401
        assert requests.get(url + "/metrics", auth=("ops", "pw"), timeout=30).status_code == 200
        name = wait_for_worker(settings, worker)
        workers = poll(
            lambda: requests.get(
                url + "/api/workers?refresh=1", auth=("ops", "pw"), timeout=30
            ).json(),
            lambda found: name in found and found[name].get("conf"),
        )
        text = json.dumps(workers)
        assert "redbeat_redis_url" in text  # the page does show the worker's settings
        assert password not in text
        broker = requests.get(url + "/broker", auth=("ops", "pw"), timeout=30).text
        assert password not in broker
    finally:
        processes.stop(proc)


# --- database_query and email --------------------------------------------------------------


@pytest.fixture
def tenant_database(database_url: str) -> Iterator[dict]:
    """A second database on the test server, standing in for a customer's database."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"customer_{uuid.uuid4().hex[:10]}"
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(database_url).set(database=name)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE users (id int primary key, email text)"))
        conn.execute(text("INSERT INTO users VALUES (1, 'a@x.example'), (2, 'b@x.example')"))
    engine.dispose()
    host = url.query["host"]
    yield {"host": host if isinstance(host, str) else host[0], "user": "postgres", "dbname": name}
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_database_query_binds_parameters_and_stays_read_only(
    client: Client, tenant_database: dict, database_url: str
):
    client.request("POST", "/api/credentials", json={"name": "ro", "value": tenant_database})
    client.request(
        "POST",
        "/api/credentials",
        json={"name": "rw", "value": {**tenant_database, "allow_write": True}},
    )

    def run(**config) -> dict:
        definition = _chain("sql", action("q", "database_query", **config))
        execution = client.wait(client.execute(client.create_workflow(definition)["id"])["id"])
        return by_node(execution)["q"]

    injected = "1 OR 1=1"
    found = run(
        credential="ro",
        query="select id, email from users where id = :id order by id",
        params={"id": injected},
    )
    assert found["status"] == "failed"  # bound as a value: '1 OR 1=1' is no integer
    assert "22P02" in found["error"]["message"] or "invalid input" in found["error"]["message"]
    ok = run(credential="ro", query="select id, email from users where id = :id", params={"id": 2})
    assert ok["status"] == "succeeded"
    assert ok["output"]["rows"] == [{"id": 2, "email": "b@x.example"}]
    capped = run(credential="ro", query="select id from users order by id", max_rows=1)
    assert capped["output"]["rows"] == [{"id": 1}] and capped["output"]["truncated"] is True
    two = run(credential="ro", query="select 1; delete from users")
    assert two["status"] == "failed" and "more than one statement" in two["error"]["message"]
    write = run(credential="ro", query="delete from users")
    assert "read-only" in write["error"]["message"]
    refused = run(credential="ro", query="delete from users", write=True)
    assert "allow_write" in refused["error"]["message"]
    slow = run(credential="ro", query="select pg_sleep(3)", statement_timeout=0.5)
    assert "statement_timeout" in slow["error"]["message"]
    deleted = run(
        credential="rw", query="delete from users where id = :id", params={"id": 1}, write=True
    )
    assert deleted["status"] == "succeeded" and deleted["output"]["row_count"] == 1
    assert run(credential="ro", query="select count(*) as n from users")["output"]["rows"] == [
        {"n": 1}
    ]

    from sqlalchemy.engine import make_url

    own = make_url(database_url)
    own_host = own.query["host"]
    client.request(
        "POST",
        "/api/credentials",
        json={
            "name": "own",
            "value": {
                "host": own_host if isinstance(own_host, str) else own_host[0],
                "user": "postgres",
                "dbname": own.database,
            },
        },
    )
    theirs = run(credential="own", query="select count(*) from api_keys")
    assert "ATOM's own database" in theirs["error"]["message"]


def test_the_email_action_obeys_the_allowlist(client: Client, settings: Settings):
    from aiosmtpd.controller import Controller

    from tests.integration.test_alerts import Inbox

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=settings.smtp_port)
    controller.start()
    try:
        definition = _chain(
            "mail",
            action("m", "email", to=["ops@corp.example"], subject="hi", body="{{ input.x }}"),
        )
        wf = client.create_workflow(definition)
        refused = by_node(client.wait(client.execute(wf["id"], {"x": 1})["id"]))["m"]
        assert refused["status"] == "failed"
        assert "email_allowed_domains" in refused["error"]["message"]
        assert inbox.messages == []
        client.request("PUT", "/api/settings", json={"email_allowed_domains": ["corp.example"]})
        sent = by_node(client.wait(client.execute(wf["id"], {"x": 1})["id"]))["m"]
        assert sent["status"] == "succeeded" and sent["output"] == {"sent_to": ["ops@corp.example"]}
        assert len(inbox.messages) == 1
    finally:
        controller.stop()


# --- per-workflow permissions ---------------------------------------------------------------


def test_workflow_permissions_apply_to_its_routes_and_runs(client: Client, api_url: str):
    definition = _chain("guarded", action("a", "log", message="x")) | {
        "metadata": {"permissions": {"view": ["operator", "editor"], "run": ["editor"], "edit": []}}
    }
    with pytest.raises(ApiError) as bad:
        client.create_workflow(definition | {"metadata": {"permissions": {"run": ["root"]}}})
    assert bad.value.status == 422
    wf = client.create_workflow(definition)
    assert client.request("GET", f"/api/workflows/{wf['id']}")["definition"]["metadata"] == {
        "permissions": {"view": ["operator", "editor"], "run": ["editor"], "edit": []}
    }
    run = client.execute(wf["id"])  # admin: always allowed
    viewer, operator, editor = (
        _same_tenant_key(client, r) for r in ("viewer", "operator", "editor")
    )
    base = f"{api_url}/api/workflows/{wf['id']}"
    assert _raw(base, viewer).status_code == 404
    assert _raw(f"{api_url}/api/executions/{run['id']}", viewer).status_code == 404
    assert _raw(base, operator).status_code == 200
    assert _raw(base + "/execute", operator, "POST", json={}).status_code == 403
    assert _raw(f"{api_url}/api/executions/{run['id']}/cancel", operator, "POST").status_code == 403
    assert _raw(base + "/execute", editor, "POST", json={}).status_code == 202
    assert _raw(base, editor, "PUT", json=definition).status_code == 403
    assert _raw(base, editor, "DELETE").status_code == 403
    assert _raw(base + "/webhook", editor, "POST").status_code == 403
    open_wf = client.create_workflow(_chain("open", action("a", "log", message="x")))
    assert _raw(f"{api_url}/api/workflows/{open_wf['id']}", viewer).status_code == 200


def _new_key(client: Client, role: str) -> tuple[str, str]:
    """A key of the client's tenant: ``(id, plaintext)``."""
    made = client.request("POST", "/api/keys", json={"name": f"perm-{role}", "role": role})
    return made["id"], made["key"]


def _listed(url: str, key: str, **params) -> tuple[list[dict], int]:
    answer = requests.get(url, headers={"X-API-Key": key}, params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json(), json.loads(answer.headers["X-Pagination"])["total"]


def test_permissions_filter_every_list_in_sql_and_name_keys(client: Client, api_url: str):
    op_id, op = _new_key(client, "operator")  # named in the guarded workflow's permissions
    _, other_op = _new_key(client, "operator")
    viewer = _same_tenant_key(client, "viewer")
    guarded_perms = {"view": ["editor", f"key:{op_id}"], "run": [f"key:{op_id}"]}
    guarded = client.create_workflow(
        _chain("guarded-list", action("a", "log", message="x"))
        | {"metadata": {"permissions": guarded_perms}}
    )
    open_wf = client.create_workflow(_chain("open-list", action("a", "log", message="x")))
    for wf in (guarded, open_wf, guarded):
        client.wait(client.execute(wf["id"])["id"])
        client.request(
            "POST", "/api/schedules", json={"workflow_id": wf["id"], "cron": "0 3 * * *"}
        )
        client.request(
            "POST", "/api/workflows/troubleshooting/analyze", json={"workflow_id": wf["id"]}
        )
    rule = client.request(
        "POST",
        "/api/workflows/monitoring/alerts",
        json={
            "name": "guarded failures",
            "metric": "error_rate",
            "comparison": ">",
            "threshold": 0.5,
            "window": "5m",
            "workflow_id": guarded["id"],
        },
    )
    lists = {
        "/api/workflows": lambda item: item["id"],
        "/api/executions": lambda item: item["workflow_id"],
        "/api/schedules": lambda item: item["workflow_id"],
        "/api/workflows/troubleshooting/sessions": lambda item: item["workflow_id"],
    }
    for path, workflow_of in lists.items():
        # page size 1: the total counts only what the key may see (filtered before paging)
        for key, expected in ((viewer, {open_wf["id"]}), (other_op, {open_wf["id"]})):
            items, total = _listed(api_url + path, key, page_size=1)
            everything, _ = _listed(api_url + path, key, page_size=100)
            assert {workflow_of(i) for i in everything} == expected, path
            assert total == len(everything) and len(items) == 1, path
        seen, _ = _listed(api_url + path, op, page_size=100)  # named by its key id
        assert {workflow_of(i) for i in seen} == {open_wf["id"], guarded["id"]}, path
    metrics = _raw(f"{api_url}/api/workflows/monitoring/metrics", viewer).json()
    assert [w["workflow_id"] for w in metrics["workflows"]] == [open_wf["id"]]
    assert metrics["executions"]["total"] == 1
    everything = client.request("GET", "/api/workflows/monitoring/metrics")
    assert everything["executions"]["total"] == 3
    alerts = _raw(f"{api_url}/api/workflows/monitoring/alerts", viewer).json()
    assert rule["id"] not in [r["id"] for r in alerts["rules"]]
    rule_url = f"{api_url}/api/workflows/monitoring/alerts/rules/{rule['id']}"
    assert _raw(rule_url, viewer).status_code == 404
    assert _raw(rule_url, op).status_code == 200
    schedule = client.request("GET", "/api/schedules", params={"workflow_id": guarded["id"]})[0]
    assert _raw(f"{api_url}/api/schedules/{schedule['id']}", viewer).status_code == 404
    assert _raw(f"{api_url}/api/schedules/{schedule['id']}/fires", viewer).status_code == 404
    # the key entry gives run; the operator role alone does not
    execute = f"{api_url}/api/workflows/{guarded['id']}/execute"
    assert _raw(execute, op, "POST", json={}).status_code == 202
    assert _raw(execute, other_op, "POST", json={}).status_code == 404
    # an editor may view but not run: no schedule, no webhook (it would run it)
    editor = _same_tenant_key(client, "editor")
    body = {"workflow_id": guarded["id"], "cron": "0 4 * * *"}
    assert _raw(f"{api_url}/api/schedules", editor, "POST", json=body).status_code == 403
    hook = f"{api_url}/api/workflows/{guarded['id']}/webhook"
    assert _raw(hook, editor, "POST").status_code == 403
    # a workflow only admins may see cannot be named by an editor's alert rule (like none)
    admins_only = client.create_workflow(
        _chain("admins-only", action("a", "log", message="x"))
        | {"metadata": {"permissions": {"view": []}}}
    )
    named = {"name": "x", "metric": "error_rate", "threshold": 0.5}
    rules = f"{api_url}/api/workflows/monitoring/alerts"
    refused = _raw(rules, editor, "POST", json=named | {"workflow_id": admins_only["id"]})
    assert refused.status_code == 422 and "workflow_id" in refused.json()["errors"]
    assert _raw(rules, editor, "POST", json=named | {"workflow_id": guarded["id"]}).ok


def test_permission_entries_are_validated_by_name(client: Client):
    own_id, _ = _new_key(client, "viewer")
    stranger = str(uuid.uuid4())
    perms = {
        "view": ["viewer", "key:nope", f"key:{own_id}"],
        "edit": ["webhook"],
        "run": [f"key:{stranger}", "webhook", 7],
    }
    with pytest.raises(ApiError) as bad:
        client.create_workflow(
            _chain("bad-perms", action("a", "log", message="x"))
            | {"metadata": {"permissions": perms}}
        )
    errors = bad.value.body["errors"]["definition"]
    assert bad.value.status == 422
    assert {e["location"] for e in errors} == {
        "metadata.permissions.view[1]",
        "metadata.permissions.edit[0]",
        "metadata.permissions.run[2]",
    }, errors
    perms = {"view": [f"key:{own_id}"], "run": [f"key:{stranger}"]}  # well formed, unknown key
    with pytest.raises(ApiError) as unknown:
        client.create_workflow(
            _chain("bad-key", action("a", "log", message="x"))
            | {"metadata": {"permissions": perms}}
        )
    assert unknown.value.status == 422
    problems = unknown.value.body["errors"]["definition"]
    assert [p["location"] for p in problems] == ["metadata.permissions.run[0]"]
    assert stranger in json.dumps(unknown.value.body["errors"])


def test_events_start_only_what_the_key_may_run(client: Client, api_url: str):
    op_id, op = _new_key(client, "operator")
    _, other_op = _new_key(client, "operator")
    event_type = f"order.paid.{uuid.uuid4().hex[:6]}"

    def on_event(name: str, **extra) -> dict:
        nodes = [trigger(kind="event", event_type=event_type), action("a", "log", message="x")]
        return client.create_workflow(
            workflow(name, nodes, [("start", "a")]) | ({"metadata": extra} if extra else {})
        )

    open_wf = on_event("open-event")
    mine = on_event("mine-event", permissions={"run": [f"key:{op_id}"]})
    hidden = on_event("hidden-event", permissions={"view": ["admin"]})
    event = {"type": event_type, "payload": {"n": 1}}

    def started(key: str) -> set[str]:
        answer = _raw(f"{api_url}/api/events", key, "POST", json=event)
        assert answer.status_code == 202, answer.text
        return {e["workflow_id"] for e in answer.json()["executions"]}

    assert started(other_op) == {open_wf["id"]}
    assert started(op) == {open_wf["id"], mine["id"]}
    assert started(client.session.headers["X-API-Key"]) == {open_wf["id"], mine["id"], hidden["id"]}


def test_webhook_deliveries_obey_run_and_are_audited(client: Client, api_url: str):
    def hooked(name: str, run: list[str]) -> tuple[str, str]:
        nodes = [trigger(kind="webhook"), action("a", "log", message="x")]
        wf = client.create_workflow(
            workflow(name, nodes, [("start", "a")]) | {"metadata": {"permissions": {"run": run}}}
        )
        made = client.request("POST", f"/api/workflows/{wf['id']}/webhook")
        return made["id"], made["token"]

    closed_id, closed_token = hooked("run-by-editors", ["editor"])
    allowed_id, allowed_token = hooked("run-by-hook", ["editor", "webhook"])
    refused = requests.post(f"{api_url}/api/hooks/{closed_token}", json={}, timeout=30)
    assert refused.status_code == 403 and "webhook" in refused.json()["message"]
    ok = requests.post(f"{api_url}/api/hooks/{allowed_token}", data=b"{not json", timeout=30)
    assert ok.status_code == 400
    ok = requests.post(f"{api_url}/api/hooks/{allowed_token}", json={"a": 1}, timeout=30)
    assert ok.status_code == 202
    assert requests.post(f"{api_url}/api/hooks/whk_nope", json={}, timeout=30).status_code == 404

    entries = client.request("GET", "/api/audit", params={"action": "webhook.deliver"})
    seen = sorted((e["status"], e["target_id"], e["key_id"], e["client"]) for e in entries)
    assert seen == [
        (202, allowed_id, None, "127.0.0.1"),
        (400, allowed_id, None, "127.0.0.1"),
        (403, closed_id, None, "127.0.0.1"),
    ]
    assert all(e["target_type"] == "webhook" and e["at"] for e in entries)
    text = json.dumps(client.request("GET", "/api/audit", params={"page_size": 100}))
    assert closed_token not in text and allowed_token not in text


def test_optimizer_results_and_metric_series_honour_permissions(client: Client, api_url: str):
    hidden = client.create_workflow(
        _chain("hidden-opt", action("a", "transform", output={"x": 1}))
        | {"metadata": {"permissions": {"view": ["admin"]}}}
    )
    shown = client.create_workflow(_chain("shown-opt", action("a", "transform", output={"x": 1})))
    results = "/api/workflows/optimization/results"
    for wf in (hidden, shown, hidden):
        body = {"workflow_id": wf["id"], "strategy": "cost"}
        client.request("POST", "/api/workflows/optimization/analyze", json=body)
        point = {"name": "orders.seen", "value": 1.0, "workflow_id": wf["id"]}
        client.request("POST", "/api/workflows/monitoring/metrics", json=point)
    viewer = _same_tenant_key(client, "viewer")
    operator = _same_tenant_key(client, "operator")
    items, total = _listed(api_url + results, viewer, page_size=1)
    assert total == 1 and [r["workflow_id"] for r in items] == [shown["id"]]
    series, total = _listed(
        api_url + "/api/workflows/monitoring/metrics/series", viewer, kind="custom", page_size=100
    )
    assert {s["workflow_id"] for s in series} == {shown["id"]} and total == 1
    points = f"{api_url}/api/workflows/monitoring/metrics/points"
    asked = {"kind": "custom", "name": "orders.seen", "workflow_id": hidden["id"]}
    assert (
        requests.get(points, headers={"X-API-Key": viewer}, params=asked, timeout=30).status_code
        == 404
    )
    point = {"name": "orders.seen", "value": 2.0, "workflow_id": hidden["id"]}
    recorded = _raw(f"{api_url}/api/workflows/monitoring/metrics", operator, "POST", json=point)
    assert recorded.status_code == 404
    everything, total = _listed(api_url + results, str(client.session.headers["X-API-Key"]))
    assert total == 3
