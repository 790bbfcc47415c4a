"""The Celery app: configuration and task names only, no task bodies.

The API sends work by task *name* through this app; ``workers/`` registers the bodies.
"""

from __future__ import annotations

from celery import Celery

from atom.config import Settings

RUN_STEP = "atom.run_step"
FINALIZE = "atom.finalize"
STEPS_QUEUE = "atom.steps"
MAINTENANCE_QUEUE = "atom.maintenance"


def make_celery(settings: Settings) -> Celery:
    """A Celery app configured for reliability: JSON only, late acks, prefetch 1."""
    app = Celery("atom", broker=settings.celery_broker, backend=settings.celery_backend,
                 set_as_current=False)
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
