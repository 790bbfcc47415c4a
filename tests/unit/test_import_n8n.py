"""n8n exports -> ATOM definitions: what converts, and the node-by-node list of what does not."""

from __future__ import annotations

import pytest

from atom.errors import DefinitionError
from atom.importers import n8n
from atom.workflow.definition import parse_definition


def export(url: str = "https://crm.example.com/leads") -> dict:
    """An n8n export as the n8n editor writes it (v1 IF, v3 Set, Code and Slack nodes)."""
    return {
        "name": "Lead router",
        "nodes": [
            {
                "id": "a1",
                "name": "When clicking 'Test workflow'",
                "type": "n8n-nodes-base.manualTrigger",
                "typeVersion": 1,
                "position": [0, 0],
                "parameters": {},
            },
            {
                "id": "a2",
                "name": "Fetch lead",
                "type": "n8n-nodes-base.httpRequest",
                "typeVersion": 4.2,
                "position": [200, 0],
                "parameters": {
                    "url": "=" + url + "/{{ $json.lead_id }}",
                    "sendHeaders": True,
                    "headerParameters": {"parameters": [{"name": "X-Source", "value": "atom"}]},
                    "options": {"timeout": 5000},
                },
            },
            {
                "id": "a3",
                "name": "Big deal?",
                "type": "n8n-nodes-base.if",
                "typeVersion": 1,
                "position": [400, 0],
                "parameters": {
                    "conditions": {
                        "number": [
                            {"value1": "={{ $json.amount }}", "operation": "larger", "value2": 1000}
                        ]
                    }
                },
            },
            {
                "id": "a4",
                "name": "Mark VIP",
                "type": "n8n-nodes-base.set",
                "typeVersion": 3.3,
                "position": [600, -100],
                "parameters": {
                    "assignments": {
                        "assignments": [
                            {"name": "tier", "value": "vip", "type": "string"},
                            {"name": "who", "value": "={{ $json.name }}", "type": "string"},
                        ]
                    }
                },
            },
            {
                "id": "a5",
                "name": "Score in code",
                "type": "n8n-nodes-base.code",
                "typeVersion": 2,
                "position": [600, 100],
                "parameters": {"jsCode": "return items;"},
            },
            {
                "id": "a6",
                "name": "Tell sales",
                "type": "n8n-nodes-base.slack",
                "typeVersion": 2,
                "position": [800, -100],
                "parameters": {"text": "={{ $node['Fetch lead'].json.name }}"},
            },
            {
                "id": "a7",
                "name": "Pause",
                "type": "n8n-nodes-base.wait",
                "typeVersion": 1,
                "position": [800, 100],
                "parameters": {"amount": 1, "unit": "seconds"},
            },
            {
                "id": "note",
                "name": "Sticky Note",
                "type": "n8n-nodes-base.stickyNote",
                "typeVersion": 1,
                "position": [0, 300],
                "parameters": {"content": "docs"},
            },
        ],
        "connections": {
            "When clicking 'Test workflow'": {
                "main": [[{"node": "Fetch lead", "type": "main", "index": 0}]]
            },
            "Fetch lead": {"main": [[{"node": "Big deal?", "type": "main", "index": 0}]]},
            "Big deal?": {
                "main": [
                    [{"node": "Mark VIP", "type": "main", "index": 0}],
                    [{"node": "Score in code", "type": "main", "index": 0}],
                ]
            },
            "Mark VIP": {"main": [[{"node": "Tell sales", "type": "main", "index": 0}]]},
            "Score in code": {"main": [[{"node": "Pause", "type": "main", "index": 0}]]},
        },
        "settings": {"executionOrder": "v1"},
    }


def test_an_n8n_export_converts_node_by_node():
    conversion = n8n.convert(export())
    definition = conversion.definition
    parse_definition(definition)  # valid
    nodes = {n["id"]: n for n in definition["nodes"]}
    assert set(nodes) == {
        "when_clicking_test_workflow",
        "fetch_lead",
        "big_deal",
        "mark_vip",
        "score_in_code",
        "tell_sales",
        "pause",
    }
    assert nodes["when_clicking_test_workflow"]["config"] == {"kind": "manual"}
    fetch = nodes["fetch_lead"]["config"]
    assert fetch == {
        "action_type": "http_request",
        "url": "https://crm.example.com/leads/{{ input.lead_id }}",
        "method": "GET",
        "headers": {"X-Source": "atom"},
        "timeout": 5.0,
    }
    assert nodes["big_deal"] == {
        "id": "big_deal",
        "type": "condition",
        "name": "Big deal?",
        "config": {"expression": "(steps.fetch_lead.output.body.amount > 1000)"},
    }
    assert nodes["mark_vip"]["config"]["output"] == {
        "tier": "vip",
        "who": "{{ steps.fetch_lead.output.body.name }}",
    }
    assert nodes["pause"]["config"] == {"action_type": "delay", "seconds": 1.0}
    assert nodes["score_in_code"]["config"]["action_type"] == "log"
    branches = {(c["source"], c["target"]): c.get("when") for c in definition["connections"]}
    assert branches[("big_deal", "mark_vip")] == "true"
    assert branches[("big_deal", "score_in_code")] == "false"
    skipped = {(s.node, s.type): s.reason for s in conversion.skipped}
    assert set(skipped) == {
        ("Score in code", "n8n-nodes-base.code"),
        ("Tell sales", "n8n-nodes-base.slack"),
    }
    assert all("log step" in reason for reason in skipped.values())


def test_expressions_that_do_not_convert_are_listed():
    doc = export()
    doc["nodes"][1]["parameters"]["url"] = "={{ $node['Other'].json.url }}"
    conversion = n8n.convert(doc)
    reasons = [s.reason for s in conversion.skipped if s.node == "Fetch lead"]
    assert reasons and "kept as text" in reasons[0]


def test_a_workflow_without_a_trigger_gets_a_manual_one_and_two_triggers_become_one():
    doc = export()
    doc["nodes"] = doc["nodes"][1:2]
    doc["connections"] = {}
    definition = n8n.convert(doc).definition
    assert definition["nodes"][0] == {
        "id": "start",
        "type": "trigger",
        "config": {"kind": "manual"},
    }
    assert definition["connections"] == [{"source": "start", "target": "fetch_lead"}]

    doc = export()
    doc["nodes"].append(
        {"name": "Hook", "type": "n8n-nodes-base.webhook", "parameters": {"path": "x"}}
    )
    doc["connections"]["Hook"] = {"main": [[{"node": "Fetch lead", "index": 0}]]}
    conversion = n8n.convert(doc)
    assert sum(n["type"] == "trigger" for n in conversion.definition["nodes"]) == 1
    assert any("second trigger" in s.reason for s in conversion.skipped)


def test_not_an_export():
    with pytest.raises(ValueError, match="not an n8n workflow export"):
        n8n.convert({"name": "x"})
    doc = export()
    doc["connections"]["Pause"] = {"main": [[{"node": "Fetch lead", "index": 0}]]}  # a cycle
    with pytest.raises(DefinitionError):
        n8n.convert(doc)
