"""The step task and ``finalize``: the task bodies of the workflow engine.

``run_step(execution_id, node_id, epoch)`` every time it starts (DESIGN §4):
1. loads the execution; a task of an older epoch exits at once;
2. if its step already ended, returns (a redelivery after a crash is harmless); if another
   delivery is running it (fresh heartbeat), waits for it; a stale heartbeat means that
   delivery's worker died, and this one takes the step over;
3. cancelled, or failed fast -> the step is cancelled; paused -> left pending;
4. applies the node's trigger rule to its predecessors: run, or end ``skipped``;
5. renders its config, runs the action under its time limit with a heartbeat, retries
   transient failures with backoff through Celery (parking long delays in PostgreSQL), and
   records status, attempts, output, error and timing.
Business failures are data, not exceptions, so every canvas drains to ``finalize``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from typing import Any

from celery import Celery, Task, signals
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from atom.actions import ActionContext, Handler, functions, handlers
from atom.celery_app import FINALIZE, MAINTENANCE_QUEUE, RUN_STEP, TROUBLESHOOT_FINISHED
from atom.clock import now
from atom.config import Settings
from atom.errors import ExecutionError, PermanentError, RetryableError
from atom.observe import logs, metrics
from atom.runs import engine, events
from atom.runs.engine import Admission, ExecutionStatus, StepStatus
from atom.security import vault
from atom.security.redaction import (
    redact_step_input,
    redact_step_output,
    redact_values,
    secret_header_values,
)
from atom.store.db import make_engine, make_sessionmaker
from atom.store.models import Execution, StepRun, Tenant
from atom.workflow.definition import Definition, Node, NodeType
from atom.workflow.templating import evaluate, render

logger = logging.getLogger("atom.worker")

# A database hiccup (PostgreSQL restarted, a connection killed) retries the whole delivery.
DB_ERRORS = (OperationalError, DBAPIError)


class WorkerContext:
    """Per-process resources; the database engine is made after the prefork fork."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.handlers: dict[str, Handler] = handlers()
        self._factory: sessionmaker[Session] | None = None
        self._pid = 0

    @property
    def factory(self) -> sessionmaker[Session]:
        """A session factory owned by this process."""
        if self._factory is None or self._pid != os.getpid():
            assert self.settings.database_url
            publisher = events.Publisher(self.settings.events_redis)
            self._factory = make_sessionmaker(
                make_engine(self.settings.database_url, pool_size=2),
                **{events.PUBLISHER: publisher, engine.STEP_OBSERVER: metrics.observe_step},
            )
            self._pid = os.getpid()
        return self._factory

    @property
    def park_after(self) -> float:
        """Retry delays longer than this are parked in PostgreSQL, not kept as countdowns."""
        return self.settings.visibility_timeout / 2


def _template_context(execution: Execution, steps: dict[str, StepRun]) -> dict[str, Any]:
    return {
        "input": execution.input,
        "steps": {k: {"output": s.output, "status": s.status} for k, s in steps.items()},
        "execution": {"id": str(execution.id)},
    }


def _check_json(output: Any, node_id: str) -> Any:
    try:
        json.dumps(output)
    except (TypeError, ValueError) as e:
        raise PermanentError(f"step {node_id!r} returned output that is not JSON: {e}") from e
    return output


class Heartbeat:
    """Refreshes ``step_runs.heartbeat_at`` while a step runs, from a background thread."""

    def __init__(self, factory: sessionmaker[Session], step_id: int, interval: float):
        self.factory, self.step_id, self.interval = factory, step_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="atom-heartbeat")

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                with self.factory.begin() as s:
                    s.execute(
                        update(StepRun)
                        .where(StepRun.id == self.step_id, StepRun.status == StepStatus.RUNNING)
                        .values(heartbeat_at=now())
                    )
            except DB_ERRORS:
                logger.warning("heartbeat of step run %s failed; will try again", self.step_id)


class StepRunner:
    """Runs one delivery of ``atom.run_step``."""

    def __init__(self, ctx: WorkerContext, task: Task, execution_id: str, node_id: str, epoch: int):
        self.ctx, self.task = ctx, task
        self.execution_id, self.node_id, self.epoch = execution_id, node_id, epoch
        self.log = {"execution_id": execution_id, "node_id": node_id}
        self.masked: frozenset[str] = frozenset()
        self.tenant = ""
        self.credentials: dict[str, Any] = {}
        self.email_domains: tuple[str, ...] = ()

    def run(self) -> None:
        """Steps 1-5 of the module docstring."""
        prepared = self._prepare()
        if prepared is None:
            return
        node, config, step_id, attempt = prepared
        try:
            with Heartbeat(self.ctx.factory, step_id, self.ctx.settings.heartbeat_interval):
                output = _check_json(self._act(node, config, attempt), node.id)
        except SoftTimeLimitExceeded:
            if self._cancelled():
                self._end(
                    StepStatus.CANCELLED,
                    None,
                    engine.step_error(
                        node.id, "Cancelled", "interrupted: the execution was cancelled"
                    ),
                )
            else:
                self._fail(
                    node, "TimeoutError", f"step {node.id!r} timed out after {node.timeout:g} s"
                )
        except ExecutionError as e:
            status = (e.output or {}).get("status_code") if isinstance(e.output, dict) else None
            transient = isinstance(e, RetryableError) or status in node.retry.retry_on
            if transient and attempt <= node.retry.max_retries:
                self._retry_later(node, e, attempt)
            self._fail(node, e.error_type, str(e), e.output)
        except DB_ERRORS:
            raise
        except Exception as e:  # an unexpected error in a handler is retried like a transient one
            logger.exception("step %s of %s raised", node.id, self.execution_id)
            if attempt <= node.retry.max_retries:
                self._retry_later(node, e, attempt)
            self._fail(node, type(e).__name__, str(e))
        else:
            self._end(StepStatus.SUCCEEDED, output, None)

    def _step(self, session: Session) -> StepRun:
        return session.scalars(
            select(StepRun)
            .where(
                StepRun.execution_id == uuid.UUID(self.execution_id),
                StepRun.node_id == self.node_id,
            )
            .with_for_update()
        ).one()

    def _prepare(self) -> tuple[Node, Any, int, int] | None:
        settings = self.ctx.settings
        with self.ctx.factory.begin() as s:
            # The execution row lock serializes this decision with pause and cancel (and with
            # the other steps' decisions: a share lock here deadlocks on mark_running).
            execution = s.scalar(
                select(Execution)
                .where(Execution.id == uuid.UUID(self.execution_id))
                .with_for_update(key_share=True)
            )
            if execution is None or execution.epoch != self.epoch:
                return None
            definition = engine.effective_definition(s, execution)
            steps = {st.node_id: st for st in engine.steps_of(s, execution)}
            step = steps[self.node_id]
            verdict = engine.admit(
                execution,
                definition,
                steps,
                self.node_id,
                at=now(),
                heartbeat_timeout=settings.heartbeat_timeout,
            )
            if verdict.admission is Admission.DONE:
                return None
            if verdict.admission is Admission.BUSY:
                # Another delivery runs this step right now: check again once it may be done.
                raise self.task.retry(countdown=settings.heartbeat_interval, max_retries=None)
            if verdict.admission is Admission.EARLY:
                # The canvas should make this impossible; a duplicated message can make a
                # chord fire early. Never decide on a predecessor that has not ended.
                logger.warning(
                    "step %s of %s started before %s ended; waiting",
                    self.node_id,
                    self.execution_id,
                    ", ".join(verdict.waiting_for),
                )
                raise self.task.retry(countdown=1, max_retries=None)
            if verdict.admission in (Admission.CANCEL, Admission.SKIP):
                status, kind = (
                    (StepStatus.CANCELLED, "Cancelled")
                    if verdict.admission is Admission.CANCEL
                    else (StepStatus.SKIPPED, "Skipped")
                )
                engine.end_step(
                    s,
                    step,
                    status,
                    error=engine.step_error(self.node_id, kind, verdict.reason or kind.lower()),
                )
                return None
            engine.mark_running(s, execution)
            logs.update(tenant=str(execution.tenant_id), attempt=step.attempts + 1)
            node = definition.node(self.node_id)
            if node.action_type in ("python", "email"):  # scoped by tenant name / settings
                tenant = s.get(Tenant, execution.tenant_id)
                self.tenant = tenant.name if tenant else ""
                domains = ((tenant.settings or {}) if tenant else {}).get("email_allowed_domains")
                self.email_domains = tuple(domains or ())
            try:
                secrets = vault.for_step(s, execution.tenant_id, node.config, settings.secret_key)
                context = {**_template_context(execution, steps), "credentials": secrets.values}
                config = vault.apply_auth(self._render(node, context), secrets)
            except PermanentError as e:
                engine.claim_step(s, step, None, self.task.request.id)
                self._end_failed(s, execution, definition, step, e.error_type, str(e))
                return None
            self.masked = frozenset(secrets.masked | secret_header_values(config))
            self.credentials = secrets.values
            # The handler gets the config; what is stored (and shown) has secrets as ***.
            shown = redact_step_input(config, self.masked)
            engine.claim_step(s, step, shown, self.task.request.id)
            return node, config, step.id, step.attempts

    @staticmethod
    def _render(node: Node, context: dict[str, Any]) -> Any:
        config = {k: v for k, v in node.config.items() if k != "action_type"}
        if node.type is NodeType.CONDITION:
            where = f"nodes[{node.id}].config.expression"
            return {
                "expression": config["expression"],
                "value": evaluate(config["expression"], context, where),
            }
        return render(config, context, f"nodes[{node.id}].config")

    def _act(self, node: Node, config: Any, attempt: int) -> Any:
        if node.type is NodeType.CONDITION:
            value = config["value"]
            plain = value if isinstance(value, bool | int | float | str | None) else str(value)
            return {"result": bool(value), "value": plain}
        ctx = ActionContext(
            self.execution_id,
            node.id,
            attempt,
            self.ctx.settings,
            node.timeout,
            self.tenant,
            self.credentials,
            self.email_domains,
        )
        return self.ctx.handlers[node.action_type or ""](config, ctx)

    def _cancelled(self) -> bool:
        with self.ctx.factory.begin() as s:
            status = s.scalar(
                select(Execution.status).where(Execution.id == uuid.UUID(self.execution_id))
            )
        return status == ExecutionStatus.CANCELLED

    def _retry_later(self, node: Node, error: Exception, attempt: int) -> None:
        delay = node.retry.delay(attempt)
        with self.ctx.factory.begin() as s:
            engine.schedule_retry(
                s,
                self._step(s),
                engine.step_error(
                    node.id, type(error).__name__, redact_values(str(error), self.masked)
                ),
                delay,
            )
        logger.info(
            "step %s of %s: attempt %s failed (%s); retry in %.3g s",
            node.id,
            self.execution_id,
            attempt,
            error,
            delay,
        )
        if delay > self.ctx.park_after:
            # Longer than is safe to hold as a countdown under the broker's visibility
            # timeout: the reconciler re-drives the execution once retry_at has passed.
            raise Ignore()
        raise self.task.retry(countdown=delay, max_retries=None)

    def _end(self, status: StepStatus, output: Any, error: dict[str, Any] | None) -> None:
        output, error = redact_step_output(output, self.masked), redact_values(error, self.masked)
        with self.ctx.factory.begin() as s:
            step = self._step(s)
            if step.status == StepStatus.RUNNING:
                engine.end_step(s, step, status, output=output, error=error)

    def _fail(self, node: Node, error_type: str, message: str, output: Any = None) -> None:
        message = redact_values(message, self.masked)
        output = redact_step_output(output, self.masked)
        with self.ctx.factory.begin() as s:
            execution = s.get(Execution, uuid.UUID(self.execution_id))
            assert execution is not None
            definition = engine.effective_definition(s, execution)
            step = self._step(s)
            if step.status == StepStatus.RUNNING:
                self._end_failed(s, execution, definition, step, error_type, message, output)

    def _end_failed(
        self,
        s: Session,
        execution: Execution,
        definition: Definition,
        step: StepRun,
        error_type: str,
        message: str,
        output: Any = None,
    ) -> None:
        error = engine.step_error(step.node_id, error_type, message)
        engine.end_step(s, step, StepStatus.FAILED, output=output, error=error)
        engine.fail_fast(s, execution, definition, error)
        logger.info("step %s of %s failed: %s", step.node_id, self.execution_id, message)


_LOG_TOKENS: dict[str, Any] = {}


def _bind_log_context(task_id: str, task: Task, args: tuple, **_: Any) -> None:
    """Every log line of a step or finalize task names its execution (and node)."""
    if task.name == RUN_STEP and len(args) >= 2:
        _LOG_TOKENS[task_id] = logs.bind(execution_id=args[0], node_id=args[1])
    elif task.name == FINALIZE and args:
        _LOG_TOKENS[task_id] = logs.bind(execution_id=args[0])


def _unbind_log_context(task_id: str, **_: Any) -> None:
    token = _LOG_TOKENS.pop(task_id, None)
    if token is not None:
        logs.unbind(token)


def register(app: Celery, settings: Settings) -> WorkerContext:
    """Register the engine's tasks on ``app``; returns the per-process context."""
    ctx = WorkerContext(settings)
    functions.load(settings.function_modules)
    signals.task_prerun.connect(_bind_log_context, weak=False, dispatch_uid="atom.logs.bind")
    signals.task_postrun.connect(_unbind_log_context, weak=False, dispatch_uid="atom.logs.unbind")

    @app.task(
        name=RUN_STEP,
        bind=True,
        acks_late=True,
        max_retries=None,
        autoretry_for=DB_ERRORS,
        retry_backoff=1,
        retry_backoff_max=30,
        retry_jitter=True,
    )
    def run_step(self: Task, execution_id: str, node_id: str, epoch: int) -> None:
        StepRunner(ctx, self, execution_id, node_id, epoch).run()

    @app.task(
        name=FINALIZE,
        acks_late=True,
        max_retries=None,
        autoretry_for=DB_ERRORS,
        retry_backoff=1,
        retry_backoff_max=30,
        retry_jitter=True,
    )
    def finalize(execution_id: str, epoch: int) -> None:
        with ctx.factory.begin() as s:
            execution = s.get(Execution, uuid.UUID(execution_id), with_for_update=True)
            if execution is None or execution.epoch != epoch:
                return
            engine.finalize(s, execution)
            status = execution.status
            linked = execution.troubleshooting_session_id is not None
        logger.info("execution %s finished: %s", execution_id, status)
        automatic = settings.auto_recovery_enabled and settings.auto_troubleshoot
        if (status == ExecutionStatus.FAILED.value and automatic) or (
            linked and status == ExecutionStatus.SUCCEEDED.value
        ):
            # Troubleshooting runs on the maintenance queue: diagnose, retry or close.
            app.send_task(TROUBLESHOOT_FINISHED, args=(execution_id,), queue=MAINTENANCE_QUEUE)

    return ctx
