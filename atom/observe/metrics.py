"""Prometheus metrics: what the processes record, and what ``GET /metrics`` exposes.

Recorded (prometheus_client's multiprocess mode, so gunicorn workers and Celery prefork
children add up): API requests and their latency (``atom api``), step durations by action
type (``atom worker``). Each recording process writes under its own folder
``$ATOM_METRICS_DIR/<role>-<pid>/``, chosen by ``atom.telemetry.prepare_metrics`` before
prometheus_client is imported (``PROMETHEUS_MULTIPROC_DIR``). ``/metrics`` merges every
such folder on the machine, labelling each series with ``process``, so one process's
restart resets only its own series.

Read at scrape time (correct across machines): executions and steps by status, firing alerts
(PostgreSQL), queue depths (Redis), live workers (a ping) and the beat's heartbeat age.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample
from sqlalchemy import text

from atom.observe.telemetry import PROCESS_DIR
from atom.statuses import AlertStatus

logger = logging.getLogger(__name__)

PREFIX = "atom_"

INSTRUMENTS = CollectorRegistry(auto_describe=True)
"""The metrics this process records (not the global registry: Flower has its own)."""

HTTP_REQUESTS = Counter(
    "atom_http_requests",
    "API requests answered, by endpoint (URL rule), method and status.",
    ["endpoint", "method", "status"],
    registry=INSTRUMENTS,
)
HTTP_LATENCY = Histogram(
    "atom_http_request_duration_seconds",
    "Time to answer an API request (to the first byte of a stream), by endpoint and method.",
    ["endpoint", "method"],
    registry=INSTRUMENTS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
STEP_DURATION = Histogram(
    "atom_step_duration_seconds",
    "Steps that ran, from their first start to their end (retries included), by action "
    "type and final status.",
    ["action_type", "status"],
    registry=INSTRUMENTS,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count one API request."""
    HTTP_REQUESTS.labels(endpoint, method, str(status)).inc()
    HTTP_LATENCY.labels(endpoint, method).observe(seconds)


def observe_step(action_type: str, status: str, seconds: float) -> None:
    """Count one step that ended after running."""
    STEP_DURATION.labels(action_type, status).observe(max(0.0, seconds))


def multiprocess() -> bool:
    """Whether this process records into multiprocess files."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class ProcessFilesCollector:
    """The multiprocess files of every process folder under ``root`` (or only ``only``),
    each merged with prometheus_client's own ``MultiProcessCollector.merge`` and labelled
    with its folder as ``process``."""

    def __init__(self, root: Path, only: str | None = None):
        self.root, self.only = root, only

    def _folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(
            p
            for p in self.root.iterdir()
            if p.is_dir()
            and PROCESS_DIR.match(p.name)
            and (self.only is None or p.name == self.only)
        )

    def collect(self) -> Iterator[Metric]:
        """One family per metric name, samples from every process folder."""
        families: dict[str, Metric] = {}
        for folder in self._folders():
            try:
                merged = MultiProcessCollector.merge([str(p) for p in folder.glob("*.db")])
            except (OSError, ValueError) as e:  # a folder removed while being read
                logger.debug("metrics: skipped %s: %s", folder, e)
                continue
            for metric in merged:
                if not metric.name.startswith(PREFIX):
                    continue
                family = families.get(metric.name)
                if family is None:
                    family = families[metric.name] = Metric(
                        metric.name, metric.documentation, metric.type
                    )
                family.samples.extend(
                    Sample(
                        s.name,
                        {**s.labels, "process": folder.name},
                        s.value,
                        s.timestamp,
                        s.exemplar,
                    )
                    for s in metric.samples
                )
        yield from families.values()


class PlatformCollector:
    """Gauges read at scrape time from PostgreSQL, Redis and a worker ping."""

    def __init__(self, probe):  # atom.observe.probe.Probe (not imported: keeps this module light)
        self.probe = probe

    def collect(self) -> Iterator[Metric]:
        """The platform's state now."""
        up = GaugeMetricFamily(
            "atom_up", "Whether a part of the platform answers (1) or not.", labels=["component"]
        )
        yield from self._database(up)
        broker = self.probe.broker()
        up.add_metric(["broker"], 1.0 if broker else 0.0)
        if broker:
            yield from self._broker()
        yield up

    def _database(self, up: GaugeMetricFamily) -> Iterable[Metric]:
        started = time.monotonic()
        try:
            with self.probe.factory() as session:
                session.execute(text("SET LOCAL statement_timeout = 5000"))
                executions = session.execute(
                    text("SELECT status, count(*) FROM executions GROUP BY status")
                ).all()
                steps = session.execute(
                    text("SELECT status, count(*) FROM step_runs GROUP BY status")
                ).all()
                alerts = session.execute(
                    text(
                        "SELECT severity, count(*) FROM alerts WHERE status = :firing "
                        "GROUP BY severity"
                    ),
                    {"firing": AlertStatus.FIRING.value},
                ).all()
        except Exception as e:
            logger.warning("metrics: database unavailable: %s", type(e).__name__)
            up.add_metric(["database"], 0.0)
            return
        up.add_metric(["database"], 1.0)
        for name, doc, label, rows in (
            (
                "atom_executions",
                "Executions by current status (all tenants).",
                "status",
                executions,
            ),
            ("atom_step_runs", "Step runs by current status (all tenants).", "status", steps),
            ("atom_alerts_firing", "Alerts firing now, by severity.", "severity", alerts),
        ):
            family = GaugeMetricFamily(name, doc, labels=[label])
            for key, count in rows:
                family.add_metric([key], float(count))
            yield family
        yield GaugeMetricFamily(
            "atom_metrics_database_seconds",
            "Time the database part of this scrape took.",
            value=time.monotonic() - started,
        )

    def _broker(self) -> Iterable[Metric]:
        queues = GaugeMetricFamily(
            "atom_queue_depth", "Messages waiting in a broker queue.", labels=["queue"]
        )
        try:
            for queue, depth in self.probe.queues().items():
                queues.add_metric([queue], float(depth))
        except Exception as e:
            logger.warning("metrics: queue depths unavailable: %s", type(e).__name__)
        yield queues
        yield GaugeMetricFamily(
            "atom_workers",
            "Workers that answered a ping (cached 5 s).",
            value=float(len(self.probe.workers())),
        )
        beat = self.probe.beat()
        if beat["age_s"] is not None:
            yield GaugeMetricFamily(
                "atom_beat_heartbeat_age_seconds",
                "Seconds since the active beat last ticked.",
                value=float(beat["age_s"]),
            )


def registry(root: Path, probe=None, only: str | None = None) -> CollectorRegistry:
    """What ``/metrics`` (or ``atom worker --metrics-port``) exposes."""
    exposed = CollectorRegistry(auto_describe=False)
    exposed.register(ProcessFilesCollector(root, only))
    if not multiprocess():  # this process records in memory: expose it directly
        exposed.register(_InMemory())
    if probe is not None:
        exposed.register(PlatformCollector(probe))
    return exposed


class _InMemory:
    def collect(self) -> Iterator[Metric]:
        yield from INSTRUMENTS.collect()


def render(exposed: CollectorRegistry) -> bytes:
    """The text exposition format."""
    return generate_latest(exposed)
