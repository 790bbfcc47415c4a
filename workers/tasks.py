"""The step task and ``finalize``: the only task bodies of the workflow engine.

``run_step(execution_id, node_id, epoch)`` every time it starts (DESIGN §4):
1. loads the execution; a task of an older epoch exits at once;
2. if its step already ended, returns (a redelivery after a crash is harmless);
3. cancelled or failed execution -> the step is cancelled; paused -> left pending;
4. applies the node's trigger rule to its predecessors: run, or end ``skipped``;
5. renders its config, runs the action under its time limit, retries transient failures with
   backoff through Celery, and records status, attempts, output, error and timing.
Business failures are data, not exceptions, so every canvas drains to ``finalize``.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session, sessionmaker

from atom import engine
from atom.celery_app import FINALIZE, RUN_STEP
from atom.config import Settings
from atom.db import make_engine, make_sessionmaker, transaction
from atom.definition import Definition, Node, NodeType
from atom.engine import ExecutionStatus, StepStatus
from atom.errors import ExecutionError, PermanentError, RetryableError
from atom.models import Execution, StepRun
from atom.templating import evaluate, render
from workers.actions import ActionContext, Handler, handlers

logger = logging.getLogger("atom.worker")


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
            self._factory = make_sessionmaker(make_engine(self.settings.database_url,
                                                          pool_size=2))
            self._pid = os.getpid()
        return self._factory


def _template_context(execution: Execution, steps: dict[str, StepRun]) -> dict[str, Any]:
    return {"input": execution.input,
            "steps": {k: {"output": s.output, "status": s.status} for k, s in steps.items()},
            "execution": {"id": str(execution.id)}}


class StepRunner:
    """Runs one delivery of ``atom.run_step``."""

    def __init__(self, ctx: WorkerContext, task: Task, execution_id: str, node_id: str,
                 epoch: int):
        self.ctx, self.task = ctx, task
        self.execution_id, self.node_id, self.epoch = execution_id, node_id, epoch

    def run(self) -> None:
        """Steps 1-5 of the docstring above."""
        prepared = self._prepare()
        if prepared is None:
            return
        node, config, attempt = prepared
        try:
            output = self._act(node, config, attempt)
        except SoftTimeLimitExceeded:
            self._fail(node, "TimeoutError", f"step {node.id!r} timed out after "
                       f"{node.timeout:g} s")
        except RetryableError as e:
            if attempt <= node.retry.max_retries:
                self._retry_later(node, e, attempt)
            self._fail(node, e.error_type, str(e), e.output)
        except ExecutionError as e:
            self._fail(node, e.error_type, str(e), e.output)
        except Exception as e:  # an unexpected error in a handler is retried like a transient one
            logger.exception("step %s of %s raised", node.id, self.execution_id)
            if attempt <= node.retry.max_retries:
                self._retry_later(node, e, attempt)
            self._fail(node, type(e).__name__, str(e))
        else:
            with transaction(self.ctx.factory) as s:
                step = self._step(s)
                if step.status == StepStatus.RUNNING.value:
                    engine.end_step(s, step, StepStatus.SUCCEEDED.value, output=output)

    def _step(self, session: Session) -> StepRun:
        from sqlalchemy import select

        return session.scalars(select(StepRun).where(
            StepRun.execution_id == uuid.UUID(self.execution_id),
            StepRun.node_id == self.node_id).with_for_update()).one()

    def _prepare(self) -> tuple[Node, Any, int] | None:
        with transaction(self.ctx.factory) as s:
            execution = s.get(Execution, uuid.UUID(self.execution_id))
            if execution is None or execution.epoch != self.epoch:
                return None
            definition = engine.load_definition(s, execution.version_id)
            steps = {st.node_id: st for st in engine.steps_of(s, execution)}
            step = steps[self.node_id]
            if step.status in engine.TERMINAL_STEP:
                return None
            if reason := engine.stop_reason(execution, definition):
                engine.end_step(s, step, StepStatus.CANCELLED.value,
                                error=engine.step_error(self.node_id, "Cancelled", reason))
                return None
            if execution.status == ExecutionStatus.PAUSED.value:
                return None
            decision = engine.decide(definition, self.node_id, steps)
            if not decision.run:
                engine.end_step(s, step, StepStatus.SKIPPED.value, error=engine.step_error(
                    self.node_id, "Skipped", decision.reason or "skipped"))
                return None
            engine.mark_running(s, execution)
            node = definition.node(self.node_id)
            context = _template_context(execution, steps)
            config = {k: v for k, v in node.config.items() if k != "action_type"}
            try:
                if node.type is NodeType.CONDITION:
                    config = {"expression": config["expression"],
                              "value": evaluate(config["expression"], context,
                                                f"nodes[{node.id}].config.expression")}
                else:
                    config = render(config, context, f"nodes[{node.id}].config")
            except PermanentError as e:
                engine.claim_step(s, step, None)
                self._end_failed(s, execution, definition, step, e.error_type, str(e))
                return None
            engine.claim_step(s, step, config)
            return node, config, step.attempts

    def _act(self, node: Node, config: Any, attempt: int) -> Any:
        if node.type is NodeType.CONDITION:
            return {"result": bool(config["value"]), "value": _jsonable(config["value"])}
        action = node.action_type or ""
        ctx = ActionContext(self.execution_id, node.id, attempt, self.ctx.settings, node.timeout)
        return self.ctx.handlers[action](config, ctx)

    def _retry_later(self, node: Node, error: Exception, attempt: int) -> None:
        delay = node.retry.delay(attempt)
        with transaction(self.ctx.factory) as s:
            step = self._step(s)
            step.status = StepStatus.PENDING.value
            step.error = engine.step_error(node.id, type(error).__name__, str(error))
            step.error["retry_in_s"] = round(delay, 3)
        logger.info("step %s of %s: attempt %s failed (%s); retry in %.3g s", node.id,
                    self.execution_id, attempt, error, delay)
        raise self.task.retry(countdown=delay, max_retries=None, exc=None)

    def _fail(self, node: Node, error_type: str, message: str, output: Any = None) -> None:
        with transaction(self.ctx.factory) as s:
            execution = s.get(Execution, uuid.UUID(self.execution_id))
            assert execution is not None
            definition = engine.load_definition(s, execution.version_id)
            self._end_failed(s, execution, definition, self._step(s), error_type, message,
                             output)

    def _end_failed(self, s: Session, execution: Execution, definition: Definition,
                    step: StepRun, error_type: str, message: str, output: Any = None) -> None:
        error = engine.step_error(step.node_id, error_type, message)
        engine.end_step(s, step, StepStatus.FAILED.value, output=output, error=error)
        engine.fail_fast(s, execution, definition, error)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | list | dict):
        return value
    return str(value)


def register(app: Celery, settings: Settings) -> WorkerContext:
    """Register the engine's tasks on ``app``; returns the per-process context."""
    ctx = WorkerContext(settings)

    @app.task(name=RUN_STEP, bind=True, acks_late=True, max_retries=None)
    def run_step(self: Task, execution_id: str, node_id: str, epoch: int) -> None:
        StepRunner(ctx, self, execution_id, node_id, epoch).run()

    @app.task(name=FINALIZE, acks_late=True)
    def finalize(execution_id: str, epoch: int) -> None:
        with transaction(ctx.factory) as s:
            execution = s.get(Execution, uuid.UUID(execution_id), with_for_update=True)
            if execution is None or execution.epoch != epoch:
                return
            engine.finalize(s, execution)
        logger.info("execution %s finished: %s", execution_id, execution.status)

    return ctx
