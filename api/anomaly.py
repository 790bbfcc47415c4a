"""/api/anomaly: score any series for anomalies on the ML pool."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, fields, validate

from api.context import require
from api.decisions import ml
from api.guard import model_work
from atom.anomaly import series as series_input
from atom.celery_app import ML_ANOMALY_SCORE
from atom.security.auth import Role

blp = Blueprint(
    "anomaly",
    __name__,
    url_prefix="/api/anomaly",
    description="Streaming anomaly scores of a series (on the ML pool).",
)

_TIMESTAMP = {
    "description": "ISO 8601 text (UTC without a zone) or epoch seconds; in order",
    "oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}],
}
_POINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["timestamp", "value"],
    "properties": {
        "timestamp": _TIMESTAMP,
        "value": {"type": "number", "nullable": True, "description": "null is a gap"},
    },
}


class DetectInSchema(Schema):
    """``{series: [{timestamp, value}], sensitivity?}``."""

    class Meta:
        unknown = RAISE

    series = fields.Raw(
        required=True,
        metadata={
            "type": "array",
            "maxItems": series_input.MAX_POINTS,
            "items": _POINT,
            "description": "the points, in time order; checked point by point",
        },
    )
    sensitivity = fields.Float(
        load_default=0.5,
        allow_nan=False,
        validate=validate.Range(0.0, 1.0),
        metadata={"description": "moves the threshold for `anomalies`, never the scores"},
    )


class AnomalySchema(Schema):
    """A point whose score reached the threshold."""

    timestamp = fields.Raw(metadata=_TIMESTAMP)
    value = fields.Float()
    score = fields.Float()
    expected = fields.List(
        fields.Float(),
        allow_none=True,
        metadata={"description": "[low, high]: the range the detector expected there"},
    )


class DetectSchema(Schema):
    """Scores per point (null for a gap), the threshold, and the points over it."""

    scores = fields.List(fields.Float(allow_none=True))
    threshold = fields.Float()
    anomalies = fields.List(fields.Nested(AnomalySchema))


@blp.route("/detect")
class Detect(MethodView):
    """Score a series."""

    @model_work
    @require(Role.VIEWER)
    @blp.arguments(DetectInSchema)
    @blp.response(200, DetectSchema)
    @blp.alt_response(413, description="Body over ATOM_ML_MAX_BODY")
    @blp.alt_response(503, description="No ML worker answered within ATOM_ML_TIMEOUT (Retry-After)")
    def post(self, body: dict[str, Any]):
        """Each point's score in [0, 1] depends only on the points before it (streaming);
        ``sensitivity`` (default 0.5) moves the threshold, never the scores."""
        points = body["series"]
        checked = series_input.parse(points)
        answer = ml().call(
            ML_ANOMALY_SCORE,
            timestamps=checked.timestamps,
            values=checked.values,
            sensitivity=body["sensitivity"],
        )
        scores = answer["scores"]
        anomalies = [
            {
                "timestamp": points[i]["timestamp"],
                "value": points[i]["value"],
                "score": scores[i],
                "expected": answer["expected"][i],
            }
            for i in answer["anomalies"]
        ]
        return {"scores": scores, "threshold": answer["threshold"], "anomalies": anomalies}
