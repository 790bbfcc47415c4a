"""n8n workflow exports (JSON) -> ATOM definitions, with a node-by-node account of what could
not be converted.

Converted: the manual, webhook and schedule (cron) triggers, HTTP Request, Set (v1-v3 value
lists and assignments), IF (v1 conditions and v2 filters with the common operators), Wait
(seconds, minutes, hours) and No-Op. Everything else (Code, Function, app nodes such as Slack
or Google Sheets) becomes a ``log`` step that says what it stood for, so the graph keeps its
shape, and is listed as not converted. n8n expressions of the form ``{{ $json.a.b }}`` become
ATOM templates over the previous step's output (``input`` after the trigger, ``.body`` of an
HTTP step); any other expression is listed and kept as text. Nothing is executed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from atom.workflow.definition import parse_definition

_EXPR = re.compile(r"^\s*\{\{\s*\$json((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)\s*\}\}\s*$")
_INLINE = re.compile(r"\{\{\s*\$json((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)\s*\}\}")
_WAIT_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}
# IF operators (v1 `operation`, v2 `operator.operation`) -> sandbox comparison templates.
_COMPARE = {
    "equal": "{a} == {b}",
    "equals": "{a} == {b}",
    "notEqual": "{a} != {b}",
    "notEquals": "{a} != {b}",
    "larger": "{a} > {b}",
    "gt": "{a} > {b}",
    "largerEqual": "{a} >= {b}",
    "gte": "{a} >= {b}",
    "smaller": "{a} < {b}",
    "lt": "{a} < {b}",
    "smallerEqual": "{a} <= {b}",
    "lte": "{a} <= {b}",
    "contains": "{b} in {a}",
    "notContains": "{b} not in {a}",
    "true": "{a} == true",
    "false": "{a} == false",
}


@dataclass(frozen=True)
class Skipped:
    """One n8n node (or part of one) that did not convert, and why."""

    node: str
    type: str
    reason: str


@dataclass
class Conversion:
    """The ATOM definition and what could not be converted."""

    definition: dict[str, Any]
    skipped: list[Skipped] = field(default_factory=list)


class _Converter:
    def __init__(self, export: dict[str, Any]):
        self.export = export
        self.skipped: list[Skipped] = []
        self.ids: dict[str, str] = {}
        self.kinds: dict[str, str] = {}  # atom id -> "trigger" | "http" | other
        self.parents: dict[str, list[str]] = {}

    # ---- names and expressions --------------------------------------------------------------
    def _id(self, name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_").lower() or "node"
        if not base[0].isalpha():
            base = "n_" + base
        base, candidate, i = base[:60], base[:60], 2
        while candidate in self.ids.values():
            candidate, i = f"{base}_{i}", i + 1
        return candidate

    def _source(self, node: str) -> str:
        """What ``$json`` means for this node: its first parent's output."""
        parents = self.parents.get(node) or []
        # An IF passes its items through: look past conditions to what they tested.
        while parents and self.kinds.get(parents[0]) == "condition":
            parents = self.parents.get(parents[0]) or []
        if not parents or self.kinds.get(parents[0]) == "trigger":
            return "input"
        parent = parents[0]
        return f"steps.{parent}.output" + (".body" if self.kinds.get(parent) == "http" else "")

    def _value(self, node: str, name: str, kind: str, value: Any, bare: bool = False) -> Any:
        """An n8n parameter value: expressions become templates (or expressions, ``bare``)."""
        if isinstance(value, dict):
            return {k: self._value(node, name, kind, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._value(node, name, kind, v) for v in value]
        if not (isinstance(value, str) and value.startswith("=")):
            return value
        text = value[1:]
        whole = _EXPR.match(text)
        if whole:
            path = self._source(node) + whole.group(1)
            return path if bare else "{{ " + path + " }}"
        if not bare:
            converted = _INLINE.sub(lambda m: "{{ " + self._source(node) + m.group(1) + " }}", text)
            if all("$" not in part for part in re.findall(r"\{\{(.*?)\}\}", converted)):
                return converted
        self.skipped.append(
            Skipped(name, kind, f"expression {text!r} is not $json.<path>: kept as text")
        )
        return "{% raw %}" + text + "{% endraw %}" if "{" in text else text

    # ---- nodes ------------------------------------------------------------------------------
    def _node(self, raw: dict[str, Any]) -> dict[str, Any]:
        name, kind = raw["name"], str(raw.get("type", ""))
        atom_id = self.ids[name]
        params = raw.get("parameters") or {}
        short = kind.rsplit(".", 1)[-1]
        handler = getattr(self, f"_n_{short}", None)
        if handler is not None:
            node = handler(atom_id, name, kind, params)
            if node is not None:
                node.setdefault("name", name)
                return node
        else:
            self.skipped.append(Skipped(name, kind, "no ATOM equivalent: became a log step"))
        self.kinds[atom_id] = "log"
        return {
            "id": atom_id,
            "type": "action",
            "name": name,
            "config": {
                "action_type": "log",
                "message": f"n8n node {name!r} ({kind}) was not converted",
                "level": "warning",
            },
        }

    def _trigger(self, atom_id: str, kind: str) -> dict[str, Any]:
        self.kinds[atom_id] = "trigger"
        return {"id": atom_id, "type": "trigger", "config": {"kind": kind}}

    def _n_manualTrigger(self, atom_id, name, kind, params):
        return self._trigger(atom_id, "manual")

    def _n_start(self, atom_id, name, kind, params):
        return self._trigger(atom_id, "manual")

    def _n_webhook(self, atom_id, name, kind, params):
        return self._trigger(atom_id, "webhook")

    def _n_scheduleTrigger(self, atom_id, name, kind, params):
        self.skipped.append(
            Skipped(name, kind, "its timing is not converted: create it with POST /api/schedules")
        )
        return self._trigger(atom_id, "schedule")

    def _n_cron(self, atom_id, name, kind, params):
        return self._n_scheduleTrigger(atom_id, name, kind, params)

    def _pairs(self, atom_id, name, kind, block: Any) -> dict[str, Any]:
        items = (block or {}).get("parameters") or []
        return {
            p["name"]: self._value(atom_id, name, kind, p.get("value"))
            for p in items
            if isinstance(p, dict) and p.get("name")
        }

    def _n_httpRequest(self, atom_id, name, kind, params):
        self.kinds[atom_id] = "http"
        config: dict[str, Any] = {
            "action_type": "http_request",
            "url": self._value(atom_id, name, kind, params.get("url", "")),
            "method": str(params.get("method") or params.get("requestMethod") or "GET").upper(),
        }
        if headers := self._pairs(atom_id, name, kind, params.get("headerParameters")):
            config["headers"] = headers
        if query := self._pairs(atom_id, name, kind, params.get("queryParameters")):
            config["params"] = query
        if body := self._pairs(atom_id, name, kind, params.get("bodyParameters")):
            config["json"] = body
        elif isinstance(params.get("jsonBody"), str) and params["jsonBody"].strip():
            self.skipped.append(
                Skipped(name, kind, "a raw JSON body (jsonBody) is not converted: set config.json")
            )
        if isinstance(params.get("options"), dict) and params["options"].get("timeout"):
            config["timeout"] = float(params["options"]["timeout"]) / 1000
        return {"id": atom_id, "type": "action", "config": config}

    def _n_set(self, atom_id, name, kind, params):
        output: dict[str, Any] = {}
        for group in ("string", "number", "boolean"):
            for item in (params.get("values") or {}).get(group, []):
                output[item["name"]] = self._value(atom_id, name, kind, item.get("value"))
        for item in (params.get("assignments") or {}).get("assignments", []):
            output[item["name"]] = self._value(atom_id, name, kind, item.get("value"))
        self.kinds[atom_id] = "set"
        return {
            "id": atom_id,
            "type": "action",
            "config": {"action_type": "transform", "output": output},
        }

    def _operand(self, atom_id, name, kind, value: Any) -> str:
        converted = self._value(atom_id, name, kind, value, bare=True)
        if isinstance(value, str) and value.startswith("=") and converted != value[1:]:
            return str(converted)
        return json.dumps(converted)

    def _n_if(self, atom_id, name, kind, params):
        parts: list[str] = []
        conditions = params.get("conditions") or {}
        if isinstance(conditions.get("conditions"), list):  # v2 filter
            items = [
                (
                    c.get("leftValue"),
                    (c.get("operator") or {}).get("operation"),
                    c.get("rightValue"),
                )
                for c in conditions["conditions"]
            ]
            combinator = conditions.get("combinator", "and")
        else:  # v1: {string|number|boolean: [{value1, operation, value2}]}
            items = [
                (c.get("value1"), c.get("operation", "equal"), c.get("value2"))
                for group in ("string", "number", "boolean")
                for c in conditions.get(group, [])
            ]
            combinator = "or" if params.get("combineOperation") == "any" else "and"
        for left, operation, right in items:
            template = _COMPARE.get(str(operation))
            if template is None:
                self.skipped.append(
                    Skipped(name, kind, f"IF operation {operation!r} not converted")
                )
                return None
            a = self._operand(atom_id, name, kind, left)
            b = self._operand(atom_id, name, kind, right)
            parts.append("(" + template.format(a=a, b=b) + ")")
        if not parts:
            self.skipped.append(Skipped(name, kind, "an IF without conditions"))
            return None
        self.kinds[atom_id] = "condition"
        expression = f" {combinator} ".join(parts)
        return {"id": atom_id, "type": "condition", "config": {"expression": expression}}

    def _n_wait(self, atom_id, name, kind, params):
        unit = params.get("unit", "seconds")
        if unit not in _WAIT_UNITS or params.get("resume") not in (None, "timeInterval"):
            self.skipped.append(Skipped(name, kind, "only a Wait for a time interval converts"))
            return None
        seconds = float(params.get("amount", 1)) * _WAIT_UNITS[unit]
        self.kinds[atom_id] = "delay"
        return {
            "id": atom_id,
            "type": "action",
            "config": {"action_type": "delay", "seconds": seconds},
        }

    def _n_noOp(self, atom_id, name, kind, params):
        self.kinds[atom_id] = "noop"
        return {
            "id": atom_id,
            "type": "action",
            "config": {"action_type": "transform", "output": None},
        }

    # ---- the whole workflow -----------------------------------------------------------------
    def _edges(self) -> list[tuple[str, str, int]]:
        """(source, target, output index) for every connection between known nodes."""
        edges = []
        for source, outputs in (self.export.get("connections") or {}).items():
            if source not in self.ids:
                continue
            for index, targets in enumerate((outputs or {}).get("main") or []):
                for target in targets or []:
                    if target.get("node") in self.ids:
                        child = self.ids[target["node"]]
                        edges.append((self.ids[source], child, index))
                        self.parents.setdefault(child, []).append(self.ids[source])
        return edges

    def _order(self, ids: list[str], edges: list[tuple[str, str, int]]) -> list[str]:
        """Parents before children, so a child knows what its parent's output looks like."""
        ordered: list[str] = []
        waiting = {i: len(set(self.parents.get(i, []))) for i in ids}
        ready = [i for i, n in waiting.items() if n == 0]
        while ready:
            current = ready.pop(0)
            ordered.append(current)
            for target in dict.fromkeys(t for s, t, _ in edges if s == current):
                waiting[target] -= 1
                if waiting[target] == 0:
                    ready.append(target)
        return ordered + [i for i in ids if i not in ordered]  # a cycle: validation says so

    def convert(self) -> Conversion:
        """The definition and the list of what did not convert."""
        raw_nodes = [
            n
            for n in self.export.get("nodes") or []
            if n.get("type") != "n8n-nodes-base.stickyNote"
        ]
        for raw in raw_nodes:
            self.ids[raw["name"]] = self._id(raw["name"])
        edges = self._edges()
        by_id = {self.ids[raw["name"]]: raw for raw in raw_nodes}
        nodes = [self._node(by_id[i]) for i in self._order(list(by_id), edges)]
        types = {n["id"]: n["type"] for n in nodes}
        triggers = [n for n in nodes if n["type"] == "trigger"]
        for extra in triggers[1:]:  # ATOM runs one trigger per workflow
            self.skipped.append(
                Skipped(extra["name"], "trigger", "a second trigger: became a pass-through step")
            )
            extra.update(type="action", config={"action_type": "transform", "output": None})
            types[extra["id"]] = "action"
            edges.append((triggers[0]["id"], extra["id"], 0))  # reachable from the one trigger
        if not triggers:
            start_id = self._id("start")
            roots = [str(n["id"]) for n in nodes if n["id"] not in self.parents]
            nodes.insert(0, {"id": start_id, "type": "trigger", "config": {"kind": "manual"}})
            edges += [(start_id, root, 0) for root in roots]
        connections = []
        for source, target, index in edges:
            edge: dict[str, Any] = {"source": source, "target": target}
            if types.get(source) == "condition":
                edge["when"] = "true" if index == 0 else "false"
            connections.append(edge)
        definition = {
            "name": str(self.export.get("name") or "imported from n8n")[:200],
            "description": "Imported from n8n",
            "nodes": nodes,
            "connections": connections,
        }
        return Conversion(definition, self.skipped)


def convert(export: Any) -> Conversion:
    """Convert an n8n export; the definition is validated (``DefinitionError`` if invalid)."""
    if not isinstance(export, dict) or not isinstance(export.get("nodes"), list):
        raise ValueError("not an n8n workflow export: no 'nodes' list")
    conversion = _Converter(export).convert()
    parse_definition(conversion.definition)
    return conversion
