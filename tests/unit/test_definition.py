"""parse_definition reads both spellings into typed definitions and reports every problem."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atom.errors import DefinitionError, Problem
from atom.workflow.definition import (
    Connection,
    FailurePolicy,
    NodeType,
    RetryPolicy,
    TriggerKind,
    TriggerRule,
    parse_definition,
)


def log(node_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "action",
        "config": {"action_type": "log", "message": node_id},
        **extra,
    }


def problems_of(document: Any) -> list[Problem]:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(document)
    return caught.value.problems


ATOM_DOCUMENT = {
    "name": "Big orders",
    "description": "Alert on big orders.",
    "on_failure": "continue",
    "nodes": [
        {"id": "start", "type": "trigger", "name": "Order webhook", "config": {"kind": "webhook"}},
        {
            "id": "fetch",
            "type": "action",
            "name": "Fetch order",
            "config": {
                "action_type": "http_request",
                "method": "GET",
                "timeout": 10,
                "url": "https://orders.example.test/orders/{{ input.order_id }}",
            },
            "retry": {"max_retries": 3, "retry_delay": 2, "backoff_multiplier": 3, "max_delay": 60},
            "timeout": 30,
            "queue": "io",
        },
        {
            "id": "big",
            "type": "condition",
            "config": {"expression": "steps.fetch.output.body.amount > 100"},
        },
        {
            "id": "alert",
            "type": "action",
            "config": {
                "action_type": "log",
                "level": "warning",
                "message": "big order {{ steps.fetch.output.body.id }}",
            },
        },
        {
            "id": "done",
            "type": "action",
            "trigger_rule": "none_failed",
            "config": {
                "action_type": "transform",
                "output": {"id": "{{ steps.fetch.output.body.id }}", "tags": ["x"]},
            },
        },
    ],
    "connections": [
        {"source": "start", "target": "fetch"},
        {"source": "fetch", "target": "big"},
        {"source": "big", "target": "alert", "when": "true"},
        {"source": "big", "target": "done", "when": False},
        {"source": "alert", "target": "done"},
    ],
}

AURAOS_DOCUMENT = {
    "name": "Aura order created",
    "onFailure": "continue",
    "nodes": [
        {"id": "t", "type": "trigger", "config": {"eventType": "order.created"}},
        {
            "id": "notify",
            "type": "action",
            "triggerRule": "all_done",
            "config": {"actionType": "log", "message": "order {{ input.id }}"},
            "retryPolicy": {
                "maxRetries": 2,
                "retryDelay": 1500,
                "backoffMultiplier": 2,
                "maxDelay": 60000,
            },
        },
        {"id": "wait", "type": "action", "config": {"actionType": "delay", "seconds": 5}},
    ],
    "connections": [
        {"sourceNodeId": "t", "targetNodeId": "notify"},
        {"sourceNodeId": "notify", "targetNodeId": "wait"},
    ],
}


# --- valid documents -----------------------------------------------------------------------


def test_atom_document():
    d = parse_definition(ATOM_DOCUMENT)
    assert d.name == "Big orders"
    assert d.description == "Alert on big orders."
    assert d.on_failure is FailurePolicy.CONTINUE
    assert [n.id for n in d.nodes] == ["start", "fetch", "big", "alert", "done"]
    assert [n.type for n in d.nodes] == [
        NodeType.TRIGGER,
        NodeType.ACTION,
        NodeType.CONDITION,
        NodeType.ACTION,
        NodeType.ACTION,
    ]
    assert d.trigger.id == "start"
    assert d.trigger_kind is TriggerKind.WEBHOOK
    fetch = d.node("fetch")
    assert fetch.name == "Fetch order"
    assert fetch.action_type == "http_request"
    assert fetch.retry == RetryPolicy(
        max_retries=3, retry_delay=2.0, backoff_multiplier=3.0, max_delay=60.0
    )
    assert fetch.timeout == 30.0
    assert fetch.queue == "io"
    assert fetch.trigger_rule is TriggerRule.ALL_SUCCESS
    assert d.node("big").action_type is None
    assert d.node("big").name == "big"  # the name defaults to the id
    assert d.node("done").trigger_rule is TriggerRule.NONE_FAILED
    assert d.node("alert").retry == RetryPolicy()
    assert d.connections == (
        Connection("start", "fetch"),
        Connection("fetch", "big"),
        Connection("big", "alert", "true"),
        Connection("big", "done", "false"),  # a JSON boolean becomes the string form
        Connection("alert", "done"),
    )


def test_auraos_document():
    d = parse_definition(AURAOS_DOCUMENT)
    assert d.on_failure is FailurePolicy.CONTINUE
    assert d.trigger_kind is TriggerKind.EVENT  # implied by eventType
    assert d.event_type == "order.created"
    notify = d.node("notify")
    assert notify.action_type == "log"
    assert "actionType" not in notify.config
    assert notify.trigger_rule is TriggerRule.ALL_DONE
    # milliseconds become seconds
    assert notify.retry == RetryPolicy(
        max_retries=2, retry_delay=1.5, backoff_multiplier=2.0, max_delay=60.0
    )
    assert d.node("wait").action_type == "delay"
    assert d.connections == (Connection("t", "notify"), Connection("notify", "wait"))


def test_parsing_does_not_change_the_document():
    document = json.loads(json.dumps(AURAOS_DOCUMENT))
    parse_definition(document)
    assert document == AURAOS_DOCUMENT


@pytest.mark.parametrize("document", [ATOM_DOCUMENT, AURAOS_DOCUMENT], ids=["atom", "auraos"])
def test_to_dict_round_trip(document):
    d = parse_definition(document)
    normalized = d.to_dict()
    assert parse_definition(normalized) == d
    assert parse_definition(json.loads(json.dumps(normalized))) == d
    assert parse_definition(normalized).to_dict() == normalized


def test_to_dict_uses_the_atom_spelling():
    text = json.dumps(parse_definition(AURAOS_DOCUMENT).to_dict())
    for alias in (
        "sourceNodeId",
        "targetNodeId",
        "actionType",
        "eventType",
        "retryPolicy",
        "triggerRule",
        "onFailure",
    ):
        assert alias not in text
    assert '"retry_delay": 1.5' in text


@settings(max_examples=100, deadline=None)
@given(
    retry=st.fixed_dictionaries(
        {},
        optional={
            "max_retries": st.integers(0, 100),
            "retry_delay": st.floats(0, 86400),
            "backoff_multiplier": st.floats(1, 100),
            "max_delay": st.floats(0, 86400),
        },
    ),
    timeout=st.none() | st.floats(0.001, 86400),
    rule=st.sampled_from([r.value for r in TriggerRule]),
    queue=st.none() | st.from_regex(r"[a-z0-9_.\-]{1,20}", fullmatch=True),
)
def test_round_trip_of_node_settings(retry, timeout, rule, queue):
    node = log("step", retry=retry, trigger_rule=rule)
    if timeout is not None:
        node["timeout"] = timeout
    if queue is not None:
        node["queue"] = queue
    d = parse_definition(
        {
            "name": "n",
            "nodes": [{"id": "t", "type": "trigger"}, node],
            "connections": [{"source": "t", "target": "step"}],
        }
    )
    assert parse_definition(d.to_dict()) == d
    assert d.node("step").retry == RetryPolicy(**retry)


def test_retry_delay_grows_and_is_capped():
    policy = RetryPolicy(max_retries=5, retry_delay=2.0, backoff_multiplier=3.0, max_delay=30.0)
    assert [policy.delay(i) for i in range(1, 5)] == [2.0, 6.0, 18.0, 30.0]


# --- invalid documents ---------------------------------------------------------------------


REACHABLE = [
    "a",
    "dup",
    "mystery",
    "nourl",
    "badmethod",
    "badtimeout",
    "noexpr",
    "badexpr",
    "check",
    "rule",
    "retrying",
    "aura",
    "tmpl",
]

INVALID_DOCUMENT = {
    "name": "many problems",
    "nodes": [
        {"id": "start", "type": "trigger"},
        log("a"),
        log("b"),
        log("dup"),
        log("dup"),
        log("lonely"),
        {"id": "mystery", "type": "action", "config": {"action_type": "teleport"}},
        {"id": "nourl", "type": "action", "config": {"action_type": "http_request"}},
        {
            "id": "badmethod",
            "type": "action",
            "config": {
                "action_type": "http_request",
                "url": "https://x.example.test/",
                "method": "FETCH",
            },
        },
        {
            "id": "badtimeout",
            "type": "action",
            "timeout": "30s",
            "config": {
                "action_type": "http_request",
                "url": "https://x.example.test/",
                "timeout": "soon",
            },
        },
        {"id": "noexpr", "type": "condition", "config": {}},
        {"id": "badexpr", "type": "condition", "config": {"expression": "input.x >"}},
        {"id": "check", "type": "condition", "config": {"expression": "input.x > 1"}},
        log("rule", trigger_rule="sometimes"),
        log(
            "retrying",
            retry={
                "max_retries": -1,
                "retry_delay": "soon",
                "backoff_multiplier": 0.5,
                "max_delay": 1e9,
                "jitter": True,
            },
        ),
        log("aura", retryPolicy={"maxRetries": 2.5, "retryDelay": 90_000_000}),
        {
            "id": "tmpl",
            "type": "action",
            "config": {"action_type": "log", "message": "{{ input.x "},
        },
    ],
    "connections": [
        *({"source": "start", "target": node} for node in REACHABLE),
        {"source": "a", "target": "b"},  # 13
        {"source": "b", "target": "a"},  # 14: cycle
        {"source": "start", "target": "ghost"},  # 15: unknown end
        {"source": "noexpr", "target": "a", "when": "true"},  # 16
        {"source": "badexpr", "target": "a", "when": "true"},  # 17
        {"source": "check", "target": "b", "when": "false"},  # 18
        {"source": "check", "target": "a"},  # 19: no when
        {"source": "a", "target": "rule", "when": "true"},  # 20: when on action
        {"source": "tmpl", "target": "start"},  # 21: into trigger
    ],
}


def test_every_problem_is_reported_at_once():
    problems = problems_of(INVALID_DOCUMENT)
    found = {(p.location, p.node): p.message for p in problems}
    expected = {
        ("nodes", "dup"): "duplicate node id 'dup'",
        ("connections[15].target", None): "unknown node 'ghost'",
        ("connections", "a"): "cycle: a -> b -> a",
        ("nodes[lonely]", "lonely"): "unreachable",
        ("nodes[mystery].config.action_type", "mystery"): "unknown action type 'teleport'",
        ("nodes[nourl].config.url", "nourl"): "is required",
        ("nodes[badmethod].config", "badmethod"): "method must be one of",
        ("nodes[badtimeout].timeout", "badtimeout"): "must be a number of seconds",
        ("nodes[badtimeout].config.timeout", "badtimeout"): "must be a number",
        ("nodes[noexpr].config.expression", "noexpr"): "is required",
        ("nodes[badexpr].config.expression", "badexpr"): "expression does not parse",
        ("connections[19].when", "check"): 'must say when: "true" or "false"',
        ("connections[20].when", "a"): "only a condition's connections take 'when'",
        ("connections[21].target", "start"): "nothing may connect into the trigger 'start'",
        ("nodes[rule].trigger_rule", "rule"): "must be one of all_success",
        ("nodes[retrying].retry.max_retries", "retrying"): "from 0 to 100",
        ("nodes[retrying].retry.retry_delay", "retrying"): "from 0 to 86400",
        ("nodes[retrying].retry.backoff_multiplier", "retrying"): "from 1 to 100",
        ("nodes[retrying].retry.max_delay", "retrying"): "from 0 to 86400",
        ("nodes[retrying].retry.jitter", "retrying"): "is not a retry setting",
        ("nodes[aura].retryPolicy.maxRetries", "aura"): "must be a whole number",
        ("nodes[aura].retryPolicy.retryDelay", "aura"): "from 0 to 86400",
        ("nodes[tmpl].config.message", "tmpl"): "template does not parse",
    }
    assert set(found) == set(expected)
    assert len(problems) == len(expected)
    for key, fragment in expected.items():
        assert fragment in found[key], (key, found[key])
    assert "'lonely'" in found[("nodes[lonely]", "lonely")]
    assert found[("connections", "a")] == "cycle: a -> b -> a"


def test_the_error_message_counts_the_problems():
    with pytest.raises(DefinitionError) as caught:
        parse_definition(INVALID_DOCUMENT)
    assert str(caught.value).startswith("The workflow definition has 23 problems: ")
    assert caught.value.http_status == 422
    assert caught.value.problems[0].to_dict()["location"] == caught.value.problems[0].location


def test_no_trigger_is_reported_with_the_other_problems():
    problems = problems_of(
        {
            "name": "x",
            "nodes": [log("a"), {"id": "b", "type": "action"}],
            "connections": [{"source": "a", "target": "b"}],
        }
    )
    assert [(p.location, p.node, p.message) for p in problems] == [
        (
            "nodes[b].config.action_type",
            "b",
            "unknown action type None; known: database_query, decision, delay, email, "
            "http_request, log, python, transform",
        ),
        ("nodes", None, "a workflow needs exactly one trigger node; it has none"),
    ]


def test_two_triggers_are_named():
    problems = problems_of(
        {
            "name": "x",
            "nodes": [{"id": "t1", "type": "trigger"}, {"id": "t2", "type": "trigger"}, log("a")],
            "connections": [{"source": "t1", "target": "a"}, {"source": "t2", "target": "a"}],
        }
    )
    assert [(p.location, p.message) for p in problems] == [
        ("nodes", "a workflow needs exactly one trigger node; it has 2: t1, t2")
    ]


def test_a_longer_cycle_names_its_nodes_in_order():
    problems = problems_of(
        {
            "name": "x",
            "nodes": [{"id": "t", "type": "trigger"}, log("a"), log("b"), log("c")],
            "connections": [
                {"source": "t", "target": "a"},
                {"source": "a", "target": "b"},
                {"source": "b", "target": "c"},
                {"source": "c", "target": "a"},
            ],
        }
    )
    assert [(p.location, p.node, p.message) for p in problems] == [
        ("connections", "a", "cycle: a -> b -> c -> a")
    ]


@pytest.mark.parametrize(
    "document, location",
    [
        ([], "$"),
        ({"nodes": [{"id": "t", "type": "trigger"}]}, "name"),
        ({"name": "x", "nodes": []}, "nodes"),
        (
            {"name": "x", "nodes": [{"id": "t", "type": "trigger"}], "connections": {}},
            "connections",
        ),
        ({"name": "x", "nodes": [{"id": "1bad", "type": "trigger"}]}, "nodes[0].id"),
        ({"name": "x", "nodes": [{"id": "t", "type": "robot"}]}, "nodes[t].type"),
        (
            {"name": "x", "nodes": [{"id": "t", "type": "trigger", "config": {"kind": "event"}}]},
            "nodes[t].config.event_type",
        ),
        (
            {"name": "x", "nodes": [{"id": "t", "type": "trigger", "config": {"kind": "cron"}}]},
            "nodes[t].config.kind",
        ),
        (
            {"name": "x", "on_failure": "explode", "nodes": [{"id": "t", "type": "trigger"}]},
            "on_failure",
        ),
    ],
)
def test_single_problems_are_located(document, location):
    assert [p.location for p in problems_of(document)] == [location]


def test_permission_entries_are_roles_key_ids_or_webhook_in_run():
    key = "key:6F1C0D1E-3B5A-4C1E-9A63-2F5B8F0B7E42"
    base = {"name": "p", "nodes": [{"id": "start", "type": "trigger", "config": {}}, log("a")]}
    base["connections"] = [{"source": "start", "target": "a"}]
    good = parse_definition(
        base | {"metadata": {"permissions": {"view": ["viewer", key], "run": ["webhook"]}}}
    )
    assert good.permissions == {"view": ("viewer", key.lower()), "run": ("webhook",)}
    assert good.to_dict()["metadata"]["permissions"]["view"] == ["viewer", key.lower()]
    bad = {"view": ["key:42", "root"], "edit": ["webhook"], "run": ["key:", None], "own": []}
    found = {p.location: p.message for p in problems_of(base | {"metadata": {"permissions": bad}})}
    assert set(found) == {
        "metadata.permissions.view[0]",
        "metadata.permissions.view[1]",
        "metadata.permissions.edit[0]",
        "metadata.permissions.run[0]",
        "metadata.permissions.run[1]",
        "metadata.permissions.own",
    }
    assert "UUID" in found["metadata.permissions.view[0]"]
    assert "only be listed in run" in found["metadata.permissions.edit[0]"]
