"""Limits found by review: templates that compute forever, huge definitions, reserved queues,
crons that never fire, alert inputs that broke notification, address ranges the guard missed."""

from __future__ import annotations

import pytest

from atom.alerts.validation import validate_rule
from atom.errors import DefinitionError, InvalidInput, PermanentError
from atom.schedules.validation import check_timing
from atom.security.netguard import check_target
from atom.workflow.definition import MAX_NODES, parse_definition
from atom.workflow.templating import render


@pytest.mark.parametrize(
    "template", ["{{ (3 ** 20000000 ** 2) % 7 }}", "{{ 'x' * 1000000000 }}", "{{ [0] * 10 ** 8 }}"]
)
def test_templates_cannot_compute_without_bound(template):
    with pytest.raises(PermanentError) as caught:
        render(template, {}, "nodes[t].config.output")
    assert "nodes[t].config.output" in str(caught.value)


def test_ordinary_arithmetic_still_works():
    assert render("{{ 2 ** 10 * 3 }}", {}) == 3072
    assert render("{{ 'ab' * 3 }}", {}) == "ababab"


def _chain(n: int) -> dict:
    nodes = [{"id": "start", "type": "trigger"}] + [
        {"id": f"n{i}", "type": "action", "config": {"action_type": "log", "message": "x"}}
        for i in range(n)
    ]
    edges = [{"source": "start", "target": "n0"}] + [
        {"source": f"n{i}", "target": f"n{i + 1}"} for i in range(n - 1)
    ]
    return {"name": "big", "nodes": nodes, "connections": edges}


def test_a_definition_over_the_node_limit_is_a_clear_422_not_a_crash():
    with pytest.raises(DefinitionError) as caught:
        parse_definition(_chain(1000))
    assert caught.value.problems[0].location == "nodes"
    assert f"at most {MAX_NODES}" in caught.value.problems[0].message
    assert len(parse_definition(_chain(MAX_NODES - 1)).nodes) == MAX_NODES


def test_platform_queues_are_reserved():
    doc = _chain(1)
    doc["nodes"][1]["queue"] = "atom.maintenance"
    with pytest.raises(DefinitionError) as caught:
        parse_definition(doc)
    assert "reserved" in caught.value.problems[0].message
    doc["nodes"][1]["queue"] = "reports"
    assert parse_definition(doc).nodes[1].queue == "reports"


def test_a_cron_that_never_fires_is_refused():
    problems = check_timing("0 0 30 2 *", None, "UTC")
    assert [p.location for p in problems] == ["cron"]
    assert "never fires" in problems[0].message


@pytest.mark.parametrize("url", ["https://h:99999/x", "http://h:abc/", "http://[::1"])
def test_alert_channel_urls_must_parse(url):
    with pytest.raises(InvalidInput) as caught:
        validate_rule(
            {"name": "r", "metric": "error_rate", "channels": [{"type": "webhook", "url": url}]}
        )
    assert "channels[0]" in caught.value.errors


def test_alert_rule_names_hold_no_control_characters():
    with pytest.raises(InvalidInput) as caught:
        validate_rule({"name": "bad\nBcc: x@y.z", "metric": "error_rate"})
    assert "control characters" in caught.value.errors["name"][0]


@pytest.mark.parametrize(
    "url", ["http://100.100.100.200/latest/meta-data", "http://[2002:7f00:1::]/"]
)
def test_shared_address_space_and_6to4_loopback_are_refused(url):
    with pytest.raises(PermanentError):
        check_target(url, ())
