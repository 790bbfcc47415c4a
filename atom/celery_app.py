"""The Celery app: configuration and task names only, no task bodies.

The API sends work by task *name* through this app; ``workers/`` registers the bodies.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
from celery import Celery, signals
from celery.backends.redis import RedisBackend
from kombu.transport import redis as kombu_redis

from atom.config import Settings, redis_tls

RUN_STEP = "atom.run_step"
FINALIZE = "atom.finalize"
RECONCILE = "atom.maintenance.reconcile"
FIRE_SCHEDULE = "atom.maintenance.fire_schedule"
SWEEP_SCHEDULES = "atom.maintenance.sweep_schedules"
EVALUATE_ALERTS = "atom.maintenance.evaluate_alerts"
SCORE_METRICS = "atom.maintenance.score_metrics"
PRUNE_METRICS = "atom.maintenance.prune_metrics"
TROUBLESHOOT_FINISHED = "atom.maintenance.troubleshoot_finished"
TROUBLESHOOT_RETRY = "atom.maintenance.troubleshoot_retry"
OPTIMIZE_WORKFLOWS = "atom.maintenance.optimize_workflows"
STEPS_QUEUE = "atom.steps"
MAINTENANCE_QUEUE = "atom.maintenance"
ML_QUEUE = "atom.ml"
ML_DECIDE = "atom.ml.decide"
ML_EXPLAIN = "atom.ml.explain"
ML_TRAIN = "atom.ml.train"
ML_RETRAIN_DUE = "atom.ml.retrain_due"
ML_PREDICT_RUN = "atom.ml.predict_run"
ML_PING = "atom.ml.ping"
ML_PREDICT_USER = "atom.ml.predict_user"
ML_ANOMALY_SCORE = "atom.ml.anomaly_score"


class NoWaitRedisBackend(RedisBackend):
    """The Redis result backend, minus the per-task result subscription.

    Celery's Redis backend subscribes to every sent task's result channel so that a later
    ``.get()`` is fast. ATOM never waits on a task result (PostgreSQL holds the truth), so
    that is one wasted Redis round trip per task sent, and subscriptions left behind.
    Chord counting, which ATOM does rely on, is unchanged.

    It also never saves a chord header's result structure (``apply_chord``), so every chord
    body starts as soon as the header's counter is full, whatever the header's shape.
    """

    def apply_chord(self, header_result_args: Any, body: Any, **kwargs: Any) -> None:
        """Count the header, never join it: do not save its ``GroupResult``.

        Celery's Redis backend saves the header's ``GroupResult`` when a member's result is
        a group (a chain ending in a group: ``a -> (b || c)`` beside ``d``). When the
        counter is full, the worker then restores it and calls ``join_native``, which reads
        the header's ids once with ``get_many(max_iterations=1)``; the inner group's id never
        has a task result, so ``get_many`` sleeps its 0.5 s interval before giving up: every
        such body started 0.5 s late (bench/joins.py). The saved structure only shapes the
        results handed to the body, and ATOM's signatures are immutable (data travels
        through PostgreSQL), so nothing is lost: with nothing saved, the worker takes the
        counted path and hands the body the flat list of results it stashed. The counting
        itself (the header's size, every task of an inner group counted) is Celery's,
        unchanged; a failed header task still fails the body (``ChordError``).
        """
        return None

    def on_task_call(self, producer, task_id):
        """Do not subscribe to the task's result channel."""
        return None

    def on_result_fulfilled(self, result):
        """Nothing was subscribed, so nothing to unsubscribe (runs from AsyncResult.__del__)."""
        return None


logger = logging.getLogger(__name__)


class _TolerantChannel(kombu_redis.Channel):
    """A Redis channel that discards a malformed queue item instead of dying on it, and
    survives a Redis restart.

    kombu pops the item, then fails to parse it: an item that is not JSON takes the whole
    worker down, and a JSON item that is no message envelope makes the consumer drop and
    re-establish its connection. Anything able to LPUSH to a queue could disrupt every
    worker that way.

    When Redis restarts under a worker, the consumer closes its connection to reconnect;
    closing the channel restores its unacknowledged messages, which needs a new client, but
    kombu has already detached the transport from its connection, so building one raised
    ``AttributeError: 'NoneType' object has no attribute 'hostname'`` and Celery stopped the
    worker ("Unrecoverable error"). Here that attempt raises a connection error instead,
    which the close ignores: the worker reconnects and goes on. Nothing is lost by not
    restoring: Redis itself redelivers what stays unacknowledged after the visibility
    timeout, and the reconciler re-drives what a restarted Redis forgot.
    """

    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is already closed")
        return super()._connparams(asynchronous=asynchronous)

    def _brpop_read(self, **options):
        try:
            return super()._brpop_read(**options)
        except (ValueError, KeyError, TypeError) as exc:  # the item is already popped
            logger.error("discarded a malformed broker message (%s: %s)", type(exc).__name__, exc)
            return True


class TolerantRedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with the tolerant channel."""

    Channel = _TolerantChannel


def _backend_url(url: str) -> str:
    if url.split("://", 1)[0] in {"redis", "rediss"}:
        return f"atom.celery_app:NoWaitRedisBackend+{url}"
    return url


def _keep_atom_logging(**_: object) -> None:
    """Celery leaves logging alone when a receiver handles this signal: the process set it up
    already (``atom.telemetry``), one JSON object per line."""


def _without_credentials(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its user and password, and those as redis client options."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url, {}
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    options = {"password": unquote(parts.password or "")}
    if parts.username:
        options["username"] = unquote(parts.username)
    return urlunsplit(parts._replace(netloc=netloc)), options


def make_celery(settings: Settings, *, wait_for_results: bool = False) -> Celery:
    """A Celery app configured for reliability: JSON only, late acks, prefetch 1.

    ``wait_for_results`` keeps Celery's own Redis result subscription, for the one caller
    that waits on a task: the ML client (``atom.ml.client``).
    """
    signals.setup_logging.connect(_keep_atom_logging, weak=False, dispatch_uid="atom.logging")
    app = Celery(
        "atom",
        broker=settings.celery_broker,
        backend=settings.celery_backend
        if wait_for_results
        else _backend_url(settings.celery_backend),
        set_as_current=False,
    )
    if settings.celery_broker.split("://", 1)[0] in {"redis", "rediss"}:
        app.conf.broker_transport = "atom.celery_app:TolerantRedisTransport"
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        # A step is acknowledged only when it finished, and requeued if its worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
        result_expires=3600,
        task_default_queue=STEPS_QUEUE,
        task_routes={
            RUN_STEP: {"queue": STEPS_QUEUE},
            FINALIZE: {"queue": STEPS_QUEUE},
            "atom.maintenance.*": {"queue": MAINTENANCE_QUEUE},
            "atom.ml.*": {"queue": ML_QUEUE},
        },
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
        redbeat_key_prefix="atom:redbeat:",
        atom_max_parallel_executions=settings.max_parallel_executions,
    )
    # Celery censors setting names it knows (broker_url, *backend*, *PASS*), and workers
    # show their settings to Flower: keep the password out of redbeat's URL, in its options.
    url, credentials = _without_credentials(settings.events_redis)
    app.conf.update(redbeat_redis_url=url, redbeat_redis_options=credentials)
    # rediss://: verify the server's certificate unless the URL says otherwise.
    if (tls := redis_tls(settings.celery_broker)) is not None:
        app.conf.broker_use_ssl = tls
    if (tls := redis_tls(settings.celery_backend)) is not None:
        app.conf.redis_backend_use_ssl = tls
    if (tls := redis_tls(settings.events_redis)) is not None:
        app.conf.redbeat_redis_use_ssl = tls
    return app
