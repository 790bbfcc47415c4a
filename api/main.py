"""``atom api``: gunicorn serving the Flask app (the Flask dev server with ``--dev``)."""

from __future__ import annotations

import argparse

from gunicorn.app.base import BaseApplication

from api.app import create_app
from atom.config import Settings
from atom.observe import logs


class _Gunicorn(BaseApplication):
    """gunicorn configured from code instead of a config file."""

    def __init__(self, app, options: dict):
        self.application, self.options = app, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return self.application


def main(settings: Settings, argv: list[str] | None = None) -> None:
    """Serve the API on ``PYTHON_API_PORT`` until stopped."""
    parser = argparse.ArgumentParser(prog="atom api")
    parser.add_argument("--dev", action="store_true", help="Flask's dev server, one process")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.api_port)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--threads",
        type=int,
        default=16,
        help="threads per gunicorn worker; an open event stream holds one",
    )
    args = parser.parse_args(argv)
    app = create_app(settings)
    if args.dev:
        app.run(host=args.host, port=args.port, threaded=True, use_reloader=False)
        return
    _Gunicorn(
        app,
        {
            "bind": f"{args.host}:{args.port}",
            "workers": args.workers,
            "threads": args.threads,
            "timeout": 60,
            "graceful_timeout": 10,
            # The app logs each request itself (one JSON line, atom.api.access).
            "accesslog": None,
            "logconfig_dict": logs.logging_config(settings.log_level, settings.log_format),
        },
    ).run()
