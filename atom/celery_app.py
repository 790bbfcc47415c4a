"""The Celery app: configuration and task names only, no task bodies.

The API sends work by task *name* through this app; ``workers/`` registers the bodies.
"""

from __future__ import annotations

from celery import Celery
from celery.backends.redis import RedisBackend

from atom.config import Settings

RUN_STEP = "atom.run_step"
FINALIZE = "atom.finalize"
RECONCILE = "atom.maintenance.reconcile"
STEPS_QUEUE = "atom.steps"
MAINTENANCE_QUEUE = "atom.maintenance"


class NoWaitRedisBackend(RedisBackend):
    """The Redis result backend, minus the per-task result subscription.

    Celery's Redis backend subscribes to every sent task's result channel so that a later
    ``.get()`` is fast. ATOM never waits on a task result (PostgreSQL holds the truth), so
    that is one wasted Redis round trip per task sent, and subscriptions left behind.
    Chord counting, which ATOM does rely on, is unchanged.
    """

    def on_task_call(self, producer, task_id):
        """Do not subscribe to the task's result channel."""
        return None

    def on_result_fulfilled(self, result):
        """Nothing was subscribed, so nothing to unsubscribe (runs from AsyncResult.__del__)."""
        return None


def _backend_url(url: str) -> str:
    if url.split("://", 1)[0] in {"redis", "rediss"}:
        return f"atom.celery_app:NoWaitRedisBackend+{url}"
    return url


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for reliability: JSON only, late acks, prefetch 1."""
    app = Celery("atom", broker=settings.celery_broker,
                 backend=_backend_url(settings.celery_backend), set_as_current=False)
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
        },
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
        redbeat_redis_url=settings.events_redis,
        redbeat_key_prefix="atom:redbeat:",
    )
    return app
