"""Turn a plan into a Celery canvas and send it. Signatures are immutable: data travels
through PostgreSQL, not task arguments."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, chain, chord, group
from celery.canvas import Signature
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from atom.celery_app import FINALIZE, RUN_STEP, STEPS_QUEUE
from atom.store.models import Execution, WorkflowVersion
from atom.workflow.compiler import compile_graph, step_graph
from atom.workflow.definition import Definition, parse_definition

# Celery's hard limit comes this long after the soft one, so the step can record its timeout.
HARD_LIMIT_GRACE = 5.0


# Per-tenant fairness: a tenant with many executions in flight gets its new ones sent at a
# lower broker priority, so another tenant's first runs overtake its backlog. Redis (kombu)
# emulates priorities with one list per step, 0 served first.
PRIORITY_STEPS = ((10, 0), (50, 3), (200, 6))
"""(fewer than N active executions of the tenant, priority); more than the last: 9."""


def fair_priority(session: Session, tenant_id: Any) -> int:
    """The broker priority of a tenant's next execution, from its executions in flight."""
    active = session.scalar(
        select(func.count())
        .select_from(Execution)
        .where(
            Execution.tenant_id == tenant_id,
            Execution.status.in_(("queued", "running")),
        )
    )
    for limit, priority in PRIORITY_STEPS:
        if (active or 0) < limit:
            return priority
    return 9


def build_canvas(
    app: Celery,
    plan: dict[str, Any],
    definition: Definition,
    execution_id: str,
    epoch: int,
    priority: int = 0,
) -> Signature:
    """The canvas for one plan tree, bound to an execution and epoch; every task carries
    ``priority`` (the whole run keeps it, its later steps included)."""

    def build(tree: dict[str, Any]) -> Signature:
        kind = tree["type"]
        if kind == "step":
            node = definition.node(tree["node"])
            options: dict[str, Any] = {"queue": node.queue or STEPS_QUEUE, "priority": priority}
            if node.timeout:
                options["soft_time_limit"] = node.timeout
                options["time_limit"] = node.timeout + HARD_LIMIT_GRACE
            return app.signature(
                RUN_STEP, args=(execution_id, node.id, epoch), immutable=True, **options
            )
        if kind == "finalize":
            return app.signature(
                FINALIZE,
                args=(execution_id, epoch),
                immutable=True,
                queue=STEPS_QUEUE,
                priority=priority,
            )
        if kind == "chain":
            return chain(*[build(t) for t in tree["tasks"]], app=app)
        if kind == "group":
            return group(*[build(t) for t in tree["tasks"]], app=app)
        if kind == "chord":
            return chord(
                group(*[build(t) for t in tree["header"]], app=app), build(tree["body"]), app=app
            )
        raise ValueError(f"unknown plan node {kind!r}")

    return build(plan["canvas"])


def residual_plan(definition: Definition, done: set[str]) -> dict[str, Any]:
    """The plan for the nodes not yet done (used by resume, retry and the reconciler)."""
    graph = step_graph(definition)
    return compile_graph(graph.subgraph(n for n in graph.nodes if n not in done))


def send(
    app: Celery,
    plan: dict[str, Any],
    definition: Definition,
    execution_id: str,
    epoch: int,
    priority: int = 0,
) -> None:
    """Send the canvas of ``plan`` to the broker."""
    build_canvas(app, plan, definition, execution_id, epoch, priority).apply_async()


@dataclass
class Outbox:
    """Executions recorded in a transaction, to send once it has committed.

    "Record, then send": a run exists in PostgreSQL before its first message does, so a crash
    between the two leaves a ``queued`` execution the reconciler re-drives, never a message
    about a run that was rolled back.
    """

    items: list[tuple[dict[str, Any], Definition, str, int, int]] = field(default_factory=list)

    def add(self, session: Session, execution: Execution) -> None:
        """Send the whole plan of the execution's version (a new run), at the tenant's fair
        priority (``fair_priority``)."""
        version = session.get(WorkflowVersion, execution.version_id)
        assert version is not None
        self.add_plan(
            version.plan,
            parse_definition(version.definition),
            execution.id,
            execution.epoch,
            fair_priority(session, execution.tenant_id),
        )

    def add_plan(
        self,
        plan: dict[str, Any],
        definition: Definition,
        execution_id: Any,
        epoch: int,
        priority: int = 0,
    ) -> None:
        """Send ``plan`` (a residual one, say) for the execution under ``epoch``."""
        self.items.append((plan, definition, str(execution_id), epoch, priority))

    def send(self, app: Celery) -> None:
        """Send everything added, in order."""
        for plan, definition, execution_id, epoch, priority in self.items:
            send(app, plan, definition, execution_id, epoch, priority)
        self.items.clear()


@contextmanager
def record_then_send(
    factory: sessionmaker[Session], app: Celery
) -> Iterator[tuple[Session, Outbox]]:
    """A transaction and an outbox: what the block adds is sent after the commit, and not at
    all if the block raises (the transaction is then rolled back)."""
    outbox = Outbox()
    with factory.begin() as session:
        yield session, outbox
    outbox.send(app)
