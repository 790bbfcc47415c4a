"""The Flask application factory."""

from __future__ import annotations

from flask import Flask, g

from api import errors, executions, schedules, triggers, workflows
from api.context import AppState
from atom.celery_app import make_celery
from atom.config import Settings
from atom.db import make_engine, make_sessionmaker


def create_app(settings: Settings) -> Flask:
    """A Flask app serving the ATOM API for ``settings``."""
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set (atom api starts embedded services "
                           "when nothing is configured)")
    app = Flask("atom")
    app.config.update(
        API_TITLE="ATOM",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_SPEC_OPTIONS={"components": {"securitySchemes": {
            "ApiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "BearerAuth": {"type": "http", "scheme": "bearer"}}}},
    )
    app.extensions["atom"] = AppState(
        settings=settings,
        factory=make_sessionmaker(make_engine(settings.database_url)),
        celery=make_celery(settings),
    )
    api = errors.AtomApi(app)
    errors.register(app)
    api.register_blueprint(workflows.blp)
    api.register_blueprint(executions.blp)
    api.register_blueprint(schedules.blp)
    api.register_blueprint(triggers.blp)

    @app.teardown_appcontext
    def close_session(_exc: BaseException | None) -> None:
        db = g.pop("db", None)
        if db is not None:
            db.close()

    return app
