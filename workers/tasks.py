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
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery import Celery, Task, signals
from celery.exceptions import Ignore, SoftTimeLimitExceeded
from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from atom.actions import ActionContext, Handler, functions, handlers
from atom.celery_app import FINALIZE, MAINTENANCE_QUEUE, RUN_STEP, TROUBLESHOOT_FINISHED
from atom.clock import DB_CLOCK, db_now
from atom.config import Settings
from atom.errors import ExecutionError, PermanentError, RetryableError
from atom.observe import logs, metrics
from atom.runs import engine, events, parallel_limit, storable
from atom.runs.dispatch import HARD_LIMIT_GRACE
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
# The error type of a step failed because its worker died on every delivery.
WORKER_LOST = "worker_lost"
# The error type of a step failed because the database failed on ATOM_INFRA_RETRIES + 1
# deliveries in a row; the backoff between them doubles from 1 s up to this.
INFRASTRUCTURE_ERROR = "infrastructure_error"
INFRA_BACKOFF_MAX = 30.0
# How long a delivery that gives up keeps trying to record that it did.
GIVE_UP_RECORD_S = 60.0
_UNRENDERED = object()


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
                        .values(heartbeat_at=DB_CLOCK())
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
        self._node: Node | None = None  # known once the step is decided
        self._stored = 0  # bytes the execution had stored, this step's input included

    @property
    def _max_bytes(self) -> int:
        return self.ctx.settings.max_step_output_bytes

    def run(self) -> None:
        """Steps 1-5 of the module docstring.

        Celery's soft time limit is an exception raised wherever the task happens to be: in
        the action (handled in ``_run``), but also while the outcome is being recorded or the
        step claimed. Wherever it lands, the step ends ``failed`` with a timeout error here
        and the task returns normally, so the canvas goes on to ``finalize`` at once instead
        of leaving the step ``running`` for the reconciler.
        """
        try:
            self._run()
        except SoftTimeLimitExceeded:
            self._timed_out_outside_the_action()

    def _timeout_message(self, node: Node | None) -> str:
        limit = node.timeout if node is not None and node.timeout else None
        if limit:
            return f"step {self.node_id!r} timed out after {limit:g} s"
        return (
            f"step {self.node_id!r} timed out after {self.ctx.settings.step_timeout:g} s "
            "(ATOM_STEP_TIMEOUT)"
        )

    def _timed_out_outside_the_action(self) -> None:
        logger.warning(
            "step %s of %s: the time limit fired outside the action (claiming or recording "
            "it); the step fails as timed out",
            self.node_id,
            self.execution_id,
        )
        message = redact_values(
            self._timeout_message(self._node) + " (the limit was reached while the step "
            "was being started or its outcome recorded)",
            self.masked,
        )
        self._durably(lambda: self._fail_unfinished("TimeoutError", message))

    def _fail_unfinished(self, error_type: str, message: str) -> None:
        """Fail the step if it has not ended (running, or still pending under this epoch)."""
        with self.ctx.factory.begin() as s:
            execution = s.get(Execution, uuid.UUID(self.execution_id))
            if execution is None or execution.epoch != self.epoch:
                return
            step = self._step(s)
            active = execution.status in (ExecutionStatus.QUEUED, ExecutionStatus.RUNNING)
            if step.status == StepStatus.RUNNING or (step.status == StepStatus.PENDING and active):
                definition = engine.effective_definition(s, execution)
                self._end_failed(s, execution, definition, step, error_type, message)

    def _run(self) -> None:
        prepared = self._prepare()
        if prepared is None:
            return
        node, config, step_id, attempt = prepared
        try:
            with Heartbeat(self.ctx.factory, step_id, self.ctx.settings.heartbeat_interval):
                output = self._act(node, config, attempt)
            size = storable.check(output, f"step {node.id!r} output", self._max_bytes)
            storable.check_total(
                self._stored,
                size,
                f"step {node.id!r} output",
                self.ctx.settings.max_execution_bytes,
            )
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
                self._fail(node, "TimeoutError", self._timeout_message(node))
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
        """Decide, render, claim. The template is rendered between two short transactions,
        never under the execution row lock, so a heavy render cannot hold up pause or
        cancel; the second transaction checks everything again before it claims the step."""
        decided = self._decide()
        if decided is None:
            return None
        node, context, secrets = decided
        self._node = node
        try:
            config = vault.apply_auth(self._render(node, context), secrets)
            storable.check(config, f"step {node.id!r} input", self._max_bytes)
            rendered: Any = (config, secrets)
        except PermanentError as e:
            rendered = e
        except SoftTimeLimitExceeded:
            rendered = PermanentError(
                f"step {node.id!r}: rendering its templates took longer than its time limit"
            )
        return self._decide(rendered)

    def _decide(self, rendered: Any = _UNRENDERED) -> Any:
        """Under the execution row lock: may the step run? Without ``rendered``, returns the
        node, its template context and its credentials; with it, claims the step (or fails
        it when the render failed) and returns what ``run`` needs. None: nothing to run."""
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
                at=db_now(s),
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
            node = definition.node(self.node_id)
            if step.status == StepStatus.RUNNING and self._lost_too_often(
                s, execution, definition, step, node, log=rendered is _UNRENDERED
            ):
                return None
            if rendered is _UNRENDERED:
                try:
                    secrets = vault.for_step(
                        s, execution.tenant_id, node.config, settings.secret_key
                    )
                except PermanentError as e:
                    engine.mark_running(s, execution)
                    engine.claim_step(s, step, None, self.task.request.id)
                    self._end_failed(s, execution, definition, step, e.error_type, str(e))
                    return None
                context = {**_template_context(execution, steps), "credentials": secrets.values}
                return node, context, secrets
            engine.mark_running(s, execution)
            logs.update(tenant=str(execution.tenant_id), attempt=step.attempts + 1)
            # scoped by tenant name / settings; a cached http step keys its entries by tenant
            if node.action_type in ("python", "email") or (
                node.action_type == "http_request" and "cache_ttl" in node.config
            ):
                tenant = s.get(Tenant, execution.tenant_id)
                self.tenant = tenant.name if tenant else ""
                domains = ((tenant.settings or {}) if tenant else {}).get("email_allowed_domains")
                self.email_domains = tuple(domains or ())
            if isinstance(rendered, PermanentError):
                engine.claim_step(s, step, None, self.task.request.id)
                self._end_failed(s, execution, definition, step, rendered.error_type, str(rendered))
                return None
            config, secrets = rendered
            self.masked = frozenset(secrets.masked | secret_header_values(config))
            self.credentials = secrets.values
            # The handler gets the config; what is stored (and shown) has secrets as ***.
            shown = redact_step_input(config, self.masked)
            stored = storable.stored_bytes(s, execution.id, self.node_id)
            input_bytes = len(json.dumps(shown).encode())
            try:
                storable.check_total(
                    stored, input_bytes, f"step {node.id!r} input", settings.max_execution_bytes
                )
            except PermanentError as e:
                engine.claim_step(s, step, None, self.task.request.id)
                self._end_failed(s, execution, definition, step, e.error_type, str(e))
                return None
            # What the output may add is checked against this once the action has run.
            self._stored = stored + input_bytes
            engine.claim_step(s, step, shown, self.task.request.id)
            return node, config, step.id, step.attempts

    def _lost_too_often(
        self,
        s: Session,
        execution: Execution,
        definition: Definition,
        step: StepRun,
        node: Node,
        log: bool,
    ) -> bool:
        """A step found running with a stale heartbeat: the delivery that claimed it died with
        its worker (SIGKILL, segfault, OOM). Past the allowed deliveries it is failed as
        ``worker_lost`` (True) rather than delivered forever; otherwise it is taken over."""
        allowed = max(self.ctx.settings.max_deliveries, node.retry.max_retries + 1)
        if step.attempts >= allowed:
            self._end_failed(
                s,
                execution,
                definition,
                step,
                WORKER_LOST,
                f"step {node.id!r}: its worker was lost on each of {step.attempts} "
                f"deliveries (killed, crashed or out of memory); not delivered again "
                f"(limit {allowed}: ATOM_MAX_DELIVERIES or the retry policy)",
            )
            return True
        if log:
            logger.warning(
                "step %s of %s: delivery %s was lost with its worker; taking it over",
                node.id,
                self.execution_id,
                step.attempts,
            )
        return False

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
        # A business retry is progress: the count of database failures starts again.
        raise self.task.retry(countdown=delay, max_retries=None, kwargs={})

    def infrastructure_error(self, error: Exception, failures: int) -> None:
        """A delivery met a database error (PostgreSQL restarted, a connection cut, a lock
        timeout): retry it with backoff, ``ATOM_INFRA_RETRIES`` times in a row at most; then
        fail the step as ``infrastructure_error``, saying so. When even that cannot be
        recorded, the delivery fails and the reconciler re-drives the run once the database
        is back (its record, not this process, decides what is left)."""
        limit = self.ctx.settings.infra_retries
        detail = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if failures < limit:
            delay = min(INFRA_BACKOFF_MAX, 2.0**failures)
            logger.warning(
                "step %s of %s: database error (%s); delivery %d of at most %d, retry in %g s",
                self.node_id,
                self.execution_id,
                type(error).__name__,
                failures + 1,
                limit + 1,
                delay,
            )
            raise self.task.retry(
                countdown=delay,
                max_retries=None,
                kwargs={"infra_failures": failures + 1},
                exc=error,
            )
        message = redact_values(
            f"step {self.node_id!r}: the database failed on {failures + 1} deliveries in a row "
            f"(last: {detail[:300]}); not retried again (ATOM_INFRA_RETRIES is {limit})",
            self.masked,
        )
        logger.error("%s; failing the step", message)
        try:
            self._durably(
                lambda: self._fail_unfinished(INFRASTRUCTURE_ERROR, message), GIVE_UP_RECORD_S
            )
        except DB_ERRORS:
            logger.error(
                "step %s of %s: could not record the failure either; the reconciler re-drives "
                "the execution once the database is back",
                self.node_id,
                self.execution_id,
            )
            raise error from None

    def _durably(self, write: Callable[[], None], within: float | None = None) -> None:
        """Record a step's end, waiting out a database outage in this process.

        The step has run: its outcome is only in memory. Failing the delivery would run the
        step again (a side effect twice), so the write is retried with backoff (0.5 s up to
        5 s) for up to half the visibility timeout (or ``within`` seconds), logged once.
        """
        deadline = time.monotonic() + (within or self.ctx.settings.visibility_timeout / 2)
        delay = 0.5
        while True:
            try:
                write()
                return
            except DB_ERRORS as e:
                if time.monotonic() + delay > deadline:
                    raise
                if delay == 0.5:
                    logger.warning(
                        "step %s of %s ended but the database is unavailable (%s); "
                        "recording it as soon as it is back",
                        self.node_id,
                        self.execution_id,
                        type(e).__name__,
                    )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _end(self, status: StepStatus, output: Any, error: dict[str, Any] | None) -> None:
        output, error = redact_step_output(output, self.masked), redact_values(error, self.masked)
        self._durably(lambda: self._end_once(status, output, error))

    def _end_once(self, status: StepStatus, output: Any, error: dict[str, Any] | None) -> None:
        with self.ctx.factory.begin() as s:
            step = self._step(s)
            if step.status == StepStatus.RUNNING:
                engine.end_step(s, step, status, output=output, error=error)

    def _fail(self, node: Node, error_type: str, message: str, output: Any = None) -> None:
        message = redact_values(message, self.masked)
        output = redact_step_output(output, self.masked)
        self._durably(lambda: self._fail_once(error_type, message, output))

    def _fail_once(self, error_type: str, message: str, output: Any = None) -> None:
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
        # The default limits of a step that sets no timeout (a step's own timeout travels in
        # its message and overrides these): past the soft one the step fails as timed out.
        soft_time_limit=settings.step_timeout,
        time_limit=settings.step_timeout + HARD_LIMIT_GRACE,
        max_retries=None,
    )
    def run_step(
        self: Task, execution_id: str, node_id: str, epoch: int, infra_failures: int = 0
    ) -> None:
        runner = StepRunner(ctx, self, execution_id, node_id, epoch)
        try:
            runner.run()
        except DB_ERRORS as e:
            runner.infrastructure_error(e, infra_failures)

    @app.task(
        name=FINALIZE,
        acks_late=True,
        # Past these, the execution is left to the reconciler: every step has ended and no
        # finalize came, which it re-drives once the database is back.
        max_retries=settings.infra_retries,
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
            status, tenant_id = execution.status, execution.tenant_id
            linked = execution.troubleshooting_session_id is not None
        logger.info("execution %s finished: %s", execution_id, status)
        if (limit := parallel_limit.limit_of(app)) > 0:  # its slot is free: start the next waiting
            parallel_limit.admit(ctx.factory, app, tenant_id, limit)
        automatic = settings.auto_recovery_enabled and settings.auto_troubleshoot
        if (status == ExecutionStatus.FAILED.value and automatic) or (
            linked and status == ExecutionStatus.SUCCEEDED.value
        ):
            # Troubleshooting runs on the maintenance queue: diagnose, retry or close.
            app.send_task(TROUBLESHOOT_FINISHED, args=(execution_id,), queue=MAINTENANCE_QUEUE)

    return ctx
