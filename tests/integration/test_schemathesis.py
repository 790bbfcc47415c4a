"""A bounded property-based run of schemathesis against the real API: every operation of the
OpenAPI document (about 10 generated requests each, a few hundred in all), then the stateful
phase on the links schemathesis infers; must report 0 failures (issue 9, items 10 and 3).

Every check runs on every operation, ``positive_data_acceptance`` included (a request the
document allows must not be refused), except on the operations in ``NOT_EXPRESSIBLE``: there
the server refuses, by design, some input a JSON Schema cannot rule out, and the reason is
stated next to each. Everywhere else the document is as strict as the server (derandomized, so
a run is repeatable). Schemathesis' pytest plugin does not work with pytest 9
(``Function._nodeid``), so operations are driven through its Python API."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

EXAMPLES = 10
STATEFUL_EXAMPLES = 20

_DEFINITION = (
    "a workflow definition is a graph checked by atom.workflow.definition (ids, references, "
    "cycles, templates), every problem listed with its node"
)
_WINDOW = "window: the pattern says a number and s/m/h/d; the range 1s .. 30d is not a pattern"
_TIMESTAMP = (
    "timestamps are ISO 8601 or epoch seconds, not ahead of the clock nor past the retention; "
    "the unit refuses control characters"
)
NOT_EXPRESSIBLE = {
    "POST /api/workflows": _DEFINITION,
    "POST /api/workflows/validate": _DEFINITION,
    "PUT /api/workflows/{workflow_id}": _DEFINITION,
    "POST /api/schedules": "exactly one of cron and interval_seconds; a cron expression that "
    "croniter accepts and that fires; a zone in the IANA database",
    "PATCH /api/schedules/{schedule_id}": "the same, checked on the stored schedule with the "
    "change applied",
    "GET /api/workflows/monitoring/metrics": _WINDOW,
    "GET /api/workflows/{workflow_id}/health": _WINDOW,
    "POST /api/workflows/monitoring/alerts": "the threshold's presence and range depend on the "
    "metric; the name refuses control characters (an email Subject header)",
    "PATCH /api/workflows/monitoring/alerts/rules/{rule_id}": "the same",
    "POST /api/workflows/automation/generate": "the request is English text that must name "
    "a service, event or action of the catalogue",
    "POST /api/workflows/monitoring/metrics": _TIMESTAMP,
    "POST /api/workflows/monitoring/metrics/batch": _TIMESTAMP,
    "GET /api/workflows/monitoring/metrics/points": "name is required for some kinds and "
    "workflow_id for the others; " + _TIMESTAMP,
    "POST /api/anomaly/detect": "the series' timestamps must be in time order, and an ISO 8601 "
    "one must be a moment Python's datetime can hold",
    "POST /api/workflows/optimization/analyze": "an inline `workflow` is a definition, "
    + _DEFINITION,
}
"""Operations where ``positive_data_acceptance`` is not run, and why."""


def _future_times():
    """``future-date-time`` (a key's ``expires_at``): an RFC 3339 time after now, within the
    ten years a key may live."""
    from datetime import UTC, datetime, timedelta, timezone

    from hypothesis import strategies as st

    start = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=1)  # any zone: future
    zones = st.sampled_from([UTC, timezone(timedelta(hours=-11)), timezone(timedelta(hours=14))])
    return st.datetimes(
        min_value=start, max_value=start + timedelta(days=3600), timezones=zones
    ).map(lambda t: t.isoformat())


schemathesis.openapi.format("future-date-time", _future_times())


def _document(api_url: str):
    """The API's document; no NUL character is generated: the input guard refuses it in every
    string (PostgreSQL cannot store it), which a JSON Schema cannot say."""
    schema = schemathesis.openapi.from_url(api_url + "/api/openapi.json")
    schema.config.generation.update(allow_x00=False)
    return schema


def _excluded(label: str) -> list:
    skip = label in NOT_EXPRESSIBLE
    return [positive_data_acceptance] if skip else []


@pytest.fixture
def key(api_url: str, make_key) -> Iterator[str]:
    """An admin key of a tenant of its own; the schedules the run made are deleted after it
    (they would fire for the rest of the session), with a fresh key of the tenant (the run
    may have revoked its own: ``DELETE /api/keys/{id}`` with an id from ``GET /api/keys``)."""
    tenant = f"schemathesis-{uuid.uuid4().hex[:12]}"
    yield make_key("admin", tenant=tenant)
    headers = {"X-API-Key": make_key("admin", tenant=tenant)}
    while True:
        listed = requests.get(api_url + "/api/schedules?page_size=100", headers=headers, timeout=30)
        assert listed.status_code == 200, listed.text
        if not listed.json():
            break
        for schedule in listed.json():
            gone = requests.delete(
                f"{api_url}/api/schedules/{schedule['id']}", headers=headers, timeout=30
            )
            assert gone.status_code == 204


def test_every_operation_conforms(api_url: str, key: str, ml_worker):
    schema = _document(api_url)
    failures: dict[str, str] = {}
    operations = 0
    labels: set[str] = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        labels.add(operation.label)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=operation.as_strategy())
        def run(case) -> None:
            case.call_and_validate(
                headers={"X-API-Key": key}, excluded_checks=_excluded(case.operation.label)
            )

        try:
            run()
        except (
            Exception,
            BaseExceptionGroup,
        ) as e:  # every operation is run; all failures are reported together
            failures[operation.label] = f"{type(e).__name__}: {str(e)[:1500]}"
    assert operations >= 20
    assert labels >= set(NOT_EXPRESSIBLE), set(NOT_EXPRESSIBLE) - labels
    assert failures == {}, "\n\n".join(f"{k}\n{v}" for k, v in failures.items())


def test_stateful_sequences_conform(api_url: str, key: str, ml_worker):
    """Links inferred from the document (Location headers, ids in answers) chain calls."""
    schema = _document(api_url)
    machine = schema.as_state_machine()

    class Machine(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case):
            return {"headers": {"X-API-Key": key}}

        def validate_response(self, response, case, additional_checks=(), **kwargs):
            case.validate_response(response, excluded_checks=_excluded(case.operation.label))

    Machine.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=5,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
    )
