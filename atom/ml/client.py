"""Asking the ML pool: send a task by name, wait at most ``ATOM_ML_TIMEOUT``.

The API and the step workers never import LightGBM; they call the pool through this client.
No answer in time (no ML worker, or all of them busy) is ``MLUnavailable``: a 503 with
``Retry-After`` in the API, a retryable step error in a workflow.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from celery import Celery
from celery.exceptions import TimeoutError as CeleryTimeout
from kombu.exceptions import OperationalError

from atom.celery_app import ML_QUEUE, make_celery
from atom.config import Settings
from atom.errors import AtomError, Conflict, InvalidInput, NotFound


class MLUnavailable(AtomError):
    """No ML worker answered in time; try again after ``retry_after`` seconds."""

    http_status = 503

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


_ERRORS: dict[int, type[AtomError]] = {404: NotFound, 409: Conflict}


class MLClient:
    """Sends model work to the ``atom.ml`` queue and waits for the answer (one per process)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.timeout = settings.ml_timeout
        self._app: Celery | None = None
        self._pid = 0
        self._lock = threading.Lock()

    @property
    def app(self) -> Celery:
        """This process's Celery app with a result subscription (made after any fork)."""
        with self._lock:
            if self._app is None or self._pid != os.getpid():
                self._app = make_celery(self.settings, wait_for_results=True)
                # A request-response call needs no task-sent event for Flower: one Redis
                # round trip fewer on every decision.
                self._app.conf.task_send_sent_event = False
                self._pid = os.getpid()
            return self._app

    def call(self, task: str, **kwargs: Any) -> Any:
        """Run ``task`` on the ML pool and return its answer, or raise ``MLUnavailable``.

        The message expires with the wait, so a pool that comes back later does not work
        through requests nobody is waiting for.
        """
        retry_after = max(1, int(round(self.timeout)))
        try:
            # Straight to the queue (kombu's default exchange): publishing through the
            # ``atom.ml`` exchange costs a binding lookup in Redis on every message.
            result = self.app.send_task(
                task,
                kwargs=kwargs,
                queue=ML_QUEUE,
                exchange="",
                routing_key=ML_QUEUE,
                expires=self.timeout,
                # Celery would render the arguments (a whole context) for monitors; a
                # decision's context is the tenant's data, and rendering it costs time.
                argsrepr="()",
                kwargsrepr="{...}",
            )
        except OperationalError as e:
            raise MLUnavailable(f"the ML pool cannot be reached ({e})", retry_after) from e
        # The answer arrives on the result's pub/sub channel (no polling), which Celery
        # leaves once the answer is in. Its stored copy is not deleted on the way (a round
        # trip): the ML pool keeps results for a minute only (workers.ml).
        try:
            answer = result.get(timeout=self.timeout, disable_sync_subtasks=False)
        except CeleryTimeout as e:
            result.forget()  # no answer: leave the channel now
            raise MLUnavailable(
                f"no ML worker answered within {self.timeout:g} s; start one with "
                "`atom worker --pool ml`, or try again",
                retry_after,
            ) from e
        if isinstance(answer, dict) and "error" in answer:
            error = answer["error"]
            if error.get("status") == 422:
                raise InvalidInput(error.get("errors") or {"request": [error["message"]]})
            raise _ERRORS.get(error.get("status"), AtomError)(error["message"])
        return answer

    def send(self, task: str, **kwargs: Any) -> str:
        """Queue ``task`` on the ML pool without waiting (training); its task id."""
        return self.app.send_task(task, kwargs=kwargs, queue=ML_QUEUE, ignore_result=True).id
