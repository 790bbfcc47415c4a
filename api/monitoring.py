"""/api/workflows/monitoring: health (public), run statistics, alert rules and alerts, the
monitor's status; and /api/workflows/{id}/health, a workflow's health score."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import func, select

from api.context import check_workflow, page_of, principal, require, session, state, tenant_id
from api.schemas import (
    AlertRuleChangesSchema,
    AlertRuleInSchema,
    AlertRuleSchema,
    AlertsSchema,
    HealthSchema,
    MetricBatchInSchema,
    MetricPointInSchema,
    MetricPointsArgs,
    MetricPointSchema,
    MetricSeriesArgs,
    MetricSeriesSchema,
    MonitoringMetricsSchema,
    MonitorStatusSchema,
    RecordedMetricsSchema,
    WindowArgs,
    WorkflowHealthArgs,
    WorkflowHealthSchema,
)
from atom.alerts import rules, views
from atom.anomaly import store as metric_series
from atom.errors import InvalidInput, NotFound
from atom.observe import health, stats
from atom.security import permissions
from atom.security.auth import Role
from atom.statuses import AlertStatus
from atom.store import workflows
from atom.store.models import Alert, AlertRule, MetricSeries

logger = logging.getLogger(__name__)

blp = Blueprint(
    "monitoring",
    __name__,
    url_prefix="/api/workflows",
    description="Monitoring: health, run statistics, alert rules and alerts.",
)


def _referenced(workflow_id: uuid.UUID | None) -> None:
    """A rule may name only a workflow the key may view: another is a 422, like an unknown
    one (``metadata.permissions``)."""
    try:
        check_workflow(workflow_id, "view")
    except NotFound as e:
        raise InvalidInput({"workflow_id": [f"no workflow {workflow_id}"]}) from e


@blp.route("/monitoring/health")
class Health(MethodView):
    """The platform's health (public)."""

    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="The database or the broker is down")
    def get(self):
        """Database (SELECT 1), broker (PING), workers (a 1 s ping), beat (its heartbeat)."""
        report = state().probe.health()
        return report, 503 if report["status"] == "down" else 200


@blp.route("/monitoring/metrics")
class Metrics(MethodView):
    """The tenant's run statistics."""

    @require(Role.VIEWER)
    @blp.arguments(WindowArgs, location="query")
    @blp.response(200, MonitoringMetricsSchema)
    def get(self, args: dict[str, Any]):
        """Executions by status, success rate, duration p50/p95/p99, per workflow; queue
        depths and workers."""
        window = args["window"]
        db = session()
        visible = permissions.visible_ids(db, tenant_id(), principal())
        report = stats.window_metrics(db, tenant_id(), stats.parse_window(window), visible=visible)
        probe = state().probe
        try:
            report["queues"] = probe.queues()
        except Exception as e:  # the broker is down: the statistics still stand
            logger.warning("monitoring: queue depths unavailable: %s", type(e).__name__)
            report["queues"] = {}
        report.update(window=window, workers={"count": len(probe.workers())})
        return report

    @require(Role.OPERATOR)
    @blp.arguments(MetricPointInSchema)
    @blp.response(201, RecordedMetricsSchema)
    def post(self, point: dict[str, Any]):
        """Record a custom metric point (the guide's ``record_metric``); 422 lists every
        problem, a workflow that is not yours is a 404."""
        return _record([point])


@blp.route("/monitoring/metrics/batch")
class MetricsBatch(MethodView):
    """Custom metric points, many at once."""

    @require(Role.OPERATOR)
    @blp.arguments(MetricBatchInSchema)
    @blp.response(201, RecordedMetricsSchema)
    def post(self, batch: dict[str, Any]):
        """Record up to 1000 points in one request (all or none)."""
        return _record(batch["points"])


def _record(points: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    for workflow_id in {p["workflow_id"] for p in points if p.get("workflow_id")}:
        check_workflow(workflow_id)  # one the key may not view is a 404, like a foreign one
    db = session()
    stored = metric_series.record(db, tenant_id(), points, state().settings.metric_retention_days)
    db.commit()
    return {"recorded": len(stored), "points": stored}, 201


@blp.route("/monitoring/metrics/points")
class MetricPoints(MethodView):
    """A series read back."""

    @require(Role.VIEWER)
    @blp.arguments(MetricPointsArgs, location="query")
    @blp.response(200, MetricPointSchema(many=True))
    @blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, args: dict[str, Any], pagination_parameters: Any):
        """The points of one series, oldest first, each with its anomaly score and expected
        range once scored (``?kind=custom&name=&workflow_id=&since=&until=&min_score=``)."""
        check_workflow(args.get("workflow_id"))
        db = session()
        query = permissions.restrict(
            metric_series.points_query(
                db,
                tenant_id(),
                args["kind"],
                args.get("name"),
                args.get("workflow_id"),
                args.get("since"),
                args.get("until"),
                args.get("min_score"),
            ),
            MetricSeries.workflow_id,
            tenant_id(),
            principal(),
        )
        pagination_parameters.item_count = db.scalar(
            select(func.count()).select_from(query.order_by(None).subquery())
        )
        rows = db.execute(
            query.offset(pagination_parameters.first_item).limit(pagination_parameters.page_size)
        ).all()
        return [metric_series.point_view(point, series) for point, series in rows]


@blp.route("/monitoring/metrics/series")
class MetricSeriesCollection(MethodView):
    """The metric series a tenant can read."""

    @require(Role.VIEWER)
    @blp.arguments(MetricSeriesArgs, location="query")
    @blp.response(200, MetricSeriesSchema(many=True))
    @blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, args: dict[str, Any], pagination_parameters: Any):
        """Your custom metrics and run-metric series, and the platform's queue depths."""
        check_workflow(args.get("workflow_id"))
        db = session()
        query = permissions.restrict(
            metric_series.series_query(
                db, tenant_id(), args.get("kind"), args.get("workflow_id"), args.get("name")
            ),
            MetricSeries.workflow_id,
            tenant_id(),
            principal(),
        )
        return [metric_series.series_view(s) for s in page_of(db, query, pagination_parameters)]


@blp.route("/monitoring/alerts")
class Alerts(MethodView):
    """Alert rules and alerts."""

    @require(Role.VIEWER)
    @blp.response(200, AlertsSchema)
    def get(self):
        """Firing alerts, the 50 most recently resolved, and every rule (built-ins too)."""
        db = session()
        if rules.ensure_default_rules(db, tenant_id()):
            db.commit()
        return views.overview(db, tenant_id(), principal())

    @require(Role.EDITOR)
    @blp.arguments(AlertRuleInSchema)
    @blp.response(201, AlertRuleSchema)
    def post(self, document: dict[str, Any]):
        """Create a rule; 422 lists every problem."""
        _referenced(document.get("workflow_id"))
        db = session()
        rule = rules.create_rule(db, tenant_id(), document)
        db.commit()
        location = url_for("monitoring.AlertRuleItem", rule_id=rule.id)
        return views.rule_view(rule), 201, {"Location": location}


@blp.route("/monitoring/alerts/rules/<uuid:rule_id>")
class AlertRuleItem(MethodView):
    """One alert rule."""

    @require(Role.VIEWER)
    @blp.response(200, AlertRuleSchema)
    def get(self, rule_id: uuid.UUID):
        """The rule (channel URLs redacted)."""
        rule = rules.get_rule(session(), tenant_id(), rule_id)
        check_workflow(rule.workflow_id, "view")
        return views.rule_view(rule)

    @require(Role.EDITOR)
    @blp.arguments(AlertRuleChangesSchema)
    @blp.response(200, AlertRuleSchema)
    def patch(self, changes: dict[str, Any], rule_id: uuid.UUID):
        """Change some fields (tune a built-in rule); disabling resolves its alerts."""
        check_workflow(rules.get_rule(session(), tenant_id(), rule_id).workflow_id, "view")
        _referenced(changes.get("workflow_id"))
        db = session()
        rule = rules.update_rule(db, tenant_id(), rule_id, changes)
        db.commit()
        return views.rule_view(rule)

    @require(Role.EDITOR)
    @blp.response(204)
    @blp.alt_response(409, description="A built-in rule can only be disabled")
    def delete(self, rule_id: uuid.UUID):
        """Delete the rule and its alerts."""
        check_workflow(rules.get_rule(session(), tenant_id(), rule_id).workflow_id, "view")
        db = session()
        rules.delete_rule(db, tenant_id(), rule_id)
        db.commit()


@blp.route("/monitoring/status")
class MonitorStatus(MethodView):
    """The monitor itself."""

    @require(Role.VIEWER)
    @blp.response(200, MonitorStatusSchema)
    def get(self):
        """Whether it runs, how often, its last evaluation, the tenant's rules and alerts."""
        db = session()
        app_state = state()
        total, enabled = db.execute(
            select(func.count(), func.count().filter(AlertRule.enabled.is_(True))).where(
                AlertRule.tenant_id == tenant_id()
            )
        ).one()
        firing = db.scalar(
            select(func.count()).where(
                Alert.tenant_id == tenant_id(), Alert.status == AlertStatus.FIRING
            )
        )
        return {
            "enabled": app_state.settings.monitoring_enabled,
            "interval_s": app_state.settings.monitor_interval,
            "last_evaluation": app_state.probe.monitor_status(),
            "rules": {"total": total, "enabled": enabled},
            "alerts": {"firing": firing},
        }


@blp.route("/<uuid:workflow_id>/health")
class WorkflowHealth(MethodView):
    """A workflow's health score."""

    @require(Role.VIEWER)
    @blp.arguments(WorkflowHealthArgs, location="query")
    @blp.response(200, WorkflowHealthSchema)
    def get(self, args: dict[str, Any], workflow_id: uuid.UUID):
        """0-100 from its success rate, its p95 against its own baseline, its open alerts."""
        db = session()
        workflows.get_workflow(db, tenant_id(), workflow_id)
        report = health.workflow_health(
            db, tenant_id(), workflow_id, stats.parse_window(args["window"])
        )
        report["window"] = args["window"]
        return report
