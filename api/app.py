"""The Flask application factory."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from importlib import resources
from pathlib import Path

from flask import Flask, Response, g, request, send_from_directory

from api import (
    anomaly,
    decisions,
    errors,
    executions,
    generation,
    guard,
    monitoring,
    optimization,
    schedules,
    security,
    services,
    triggers,
    troubleshooting,
    workflows,
)
from api.context import AppState, client_address
from atom.celery_app import make_celery
from atom.config import Settings
from atom.ml.client import MLClient
from atom.observe import logs, metrics
from atom.observe.probe import Probe
from atom.runs import engine, events
from atom.runs import triggers as triggers_store
from atom.security import audit, ratelimit
from atom.security.auth import KeyCache
from atom.security.ratelimit import RateLimits, StreamCaps
from atom.security.redaction import LogRedactor
from atom.store.db import make_engine, make_sessionmaker

access_log = logging.getLogger("atom.api.access")


METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format, version 0.0.4."""

SWAGGER_ASSETS_URL = "/api/docs/assets/"
"""Where /api/docs loads Swagger UI's scripts and styles from: this server, not a CDN."""


def swagger_ui_dist() -> Path:
    """Swagger UI's dist/ folder, as the pinned ``flask-swagger-ui`` package ships it."""
    return Path(str(resources.files("flask_swagger_ui") / "dist"))


def create_app(settings: Settings) -> Flask:
    """A Flask app serving the ATOM API for ``settings``."""
    if not settings.database_url:
        raise RuntimeError(
            "DATABASE_URL is not set (atom api starts embedded services when nothing is configured)"
        )
    app = Flask("atom")
    app.config.update(
        API_TITLE="ATOM",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL=SWAGGER_ASSETS_URL,
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_SPEC_OPTIONS={
            "components": {
                "securitySchemes": {
                    "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                    "BearerAuth": {"type": "http", "scheme": "bearer"},
                }
            }
        },
    )
    factory = make_sessionmaker(
        make_engine(settings.database_url),
        **{
            events.PUBLISHER: events.Publisher(settings.events_redis),
            engine.STEP_OBSERVER: metrics.observe_step,
        },
    )
    celery = make_celery(settings)
    probe = Probe(factory, celery, settings)
    app.extensions["atom"] = AppState(
        settings=settings,
        factory=factory,
        celery=celery,
        probe=probe,
        metrics=metrics.registry(settings.metrics_root, probe),
        limits=RateLimits(settings),
        streams=StreamCaps(
            settings.sse_max_per_key, settings.sse_max_per_process, settings.events_redis
        ),
        keys=KeyCache(settings.key_cache_seconds),
    )
    app.extensions[decisions.ML_CLIENT] = MLClient(settings)
    app.url_map.converters["model_name"] = decisions.ModelName
    api = errors.AtomApi(app)
    security.document(api.spec)
    api.register_converter(decisions.ModelName, lambda _: decisions.MODEL_NAME_DOC)
    errors.register(app)
    api.register_blueprint(monitoring.blp)  # before workflows: its paths are more specific
    api.register_blueprint(generation.blp)  # before workflows: /api/workflows/automation/...
    api.register_blueprint(troubleshooting.blp)  # likewise
    api.register_blueprint(optimization.blp)  # likewise
    api.register_blueprint(workflows.blp)
    api.register_blueprint(services.blp)
    api.register_blueprint(executions.blp)
    api.register_blueprint(schedules.blp)
    api.register_blueprint(triggers.blp)
    for blueprint in security.blueprints:
        api.register_blueprint(blueprint)
    api.register_blueprint(decisions.blp)
    api.register_blueprint(anomaly.blp)
    api.cap_pages(guard.MAX_PAGE)
    optimization.document_exactly_one(api)
    _observe_requests(app)  # first: the clock starts before anything can answer
    _protect(app)  # then a webhook delivery is counted and attributed, whatever its body
    guard.install(app, settings)
    generation.warm_up(settings)

    assets = swagger_ui_dist()

    @app.get(SWAGGER_ASSETS_URL + "<path:name>")
    def swagger_ui_asset(name: str) -> Response:
        """Swagger UI's own files (the page at /api/docs needs no network)."""
        return send_from_directory(assets, name, max_age=86400)

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        """Prometheus text format (see README 'Monitoring'); a bearer token if configured."""
        token = settings.metrics_token
        if token:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return Response(
                    "metrics need 'Authorization: Bearer <ATOM_METRICS_TOKEN>'\n",
                    status=401,
                    mimetype="text/plain",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        body = metrics.render(app.extensions["atom"].metrics)
        return Response(body, content_type=METRICS_CONTENT_TYPE)

    @app.teardown_appcontext
    def close_session(_exc: BaseException | None) -> None:
        db = g.pop("db", None)
        if db is not None:
            db.close()

    return app


AUDITED_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def _protect(app: Flask) -> None:
    """Webhook rate limits, rate-limit headers, and the audit log of every change."""
    # werkzeug's own request line (``atom api --dev``) would carry webhook tokens.
    logging.getLogger("werkzeug").addFilter(LogRedactor())

    @app.before_request
    def limit_webhooks() -> None:
        rule = request.url_rule.rule if request.url_rule else ""
        if rule.startswith("/api/hooks/") and request.method == "POST":
            token = str((request.view_args or {}).get("token", ""))
            app_state = app.extensions["atom"]
            with app_state.factory() as db:  # whose it is, for the audit log (never the token)
                hook = triggers_store.webhook_for_token(db, token)
                if hook is not None:
                    g.webhook_audit = (hook.tenant_id, hook.id)
            g.rate_verdict = app_state.limits.check_webhook(token, client_address())

    @app.after_request
    def finish(response: Response) -> Response:
        verdict = g.pop("rate_verdict", None)
        if verdict is not None:
            response.headers.update(ratelimit.headers(verdict))
        audited = g.pop("audited", None)  # by the view, in its own transaction
        if (
            request.method in AUDITED_METHODS
            and request.url_rule
            and audited != response.status_code
        ):
            if "key_id" in g:
                _audit(app, response)
            elif "webhook_audit" in g:
                _audit_webhook(app, response)
        return response


def _audit_webhook(app: Flask, response: Response) -> None:
    """A delivery to a webhook: the tenant, no key, the webhook's id (never its token)."""
    tenant, webhook_id = g.webhook_audit
    _record(app, response, tenant, None, ("webhook.deliver", "webhook", str(webhook_id)))


def _audit(app: Flask, response: Response) -> None:
    created = None
    if response.status_code in (201, 202) and response.is_json:
        body = response.get_json(silent=True)
        created = str(body.get("id")) if isinstance(body, dict) and body.get("id") else None
    assert request.url_rule is not None
    described = audit.describe(
        request.method, request.url_rule.rule, request.view_args or {}, created
    )
    _record(app, response, g.tenant_id, g.key_id, described)


def _record(
    app: Flask,
    response: Response,
    tenant_id: uuid.UUID,
    key_id: uuid.UUID | None,
    described: tuple[str, str, str | None],
) -> None:
    action, target_type, target_id = described
    try:
        with app.extensions["atom"].factory() as db:
            audit.record(
                db,
                tenant_id=tenant_id,
                key_id=key_id,
                action=action,
                target_type=target_type,
                target_id=target_id,
                client=client_address(),
                status=response.status_code,
            )
            db.commit()
    except Exception:  # the answer stands; a lost entry is logged loudly
        access_log.exception("audit: could not record %s on %s", action, target_id)


def _observe_requests(app: Flask) -> None:
    """Count and time every request (labelled by URL rule, never the raw path), log it as
    one JSON line, and give its log lines the request's context."""

    @app.before_request
    def start() -> None:
        g.started = time.perf_counter()
        execution_id = (request.view_args or {}).get("execution_id")
        g.log_token = logs.bind(execution_id=str(execution_id) if execution_id else None)

    @app.after_request
    def observe(response: Response) -> Response:
        started = g.pop("started", None)
        if started is None:
            return response
        seconds = time.perf_counter() - started
        endpoint = request.url_rule.rule if request.url_rule else "<unmatched>"
        metrics.observe_request(endpoint, request.method, response.status_code, seconds)
        # A path that carries a secret (a webhook trigger's token) is logged as its rule.
        secret = any(
            "token" in name for name in request.view_args or {}
        ) or request.path.startswith("/api/hooks/")
        path = (endpoint if request.url_rule else "/api/hooks/***") if secret else request.path
        access_log.info(
            "%s %s %s %.1f ms",
            request.method,
            path,
            response.status_code,
            seconds * 1000,
            extra={
                "method": request.method,
                "path": path,
                "endpoint": endpoint,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 1),
            },
        )
        return response

    @app.teardown_request
    def clear(_exc: BaseException | None) -> None:
        token = g.pop("log_token", None)
        if token is not None:
            logs.unbind(token)
