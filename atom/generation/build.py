"""A Reading becomes a workflow definition built from the catalogue's step templates: the
trigger node, one condition node if the request states conditions, then the actions in
order, with templates that carry the trigger's data (the task's title is the email's
subject) and an AI step's answer into the steps after it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from atom.catalogue import Catalogue, Service, build_step
from atom.catalogue.events import ROLE_SOURCES
from atom.generation.conditions import Condition
from atom.generation.understand import Reading, Step

AI_OUTPUT = {
    "openai": "output.body.choices[0].message.content",
    "anthropic": "output.body.content[0].text",
    "google_gemini": "output.body.candidates[0].content.parts[0].text",
    "deepl": "output.body.translations[0].text",
    "google_translate": "output.body.data.translations[0].translatedText",
}
"""Where an AI step's answer is in its output: the next steps' text comes from there."""
_MESSAGE_OPS = re.compile(
    r"send|post|notification|message|status|tweet|sms|call|comment|incident|alert"
)
_CHANNEL = re.compile(r"(?<![\w&])#([a-z0-9][\w-]{0,79})", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_PHONE = re.compile(r"(?<!\w)\+?\d[\d\s().-]{7,}\d")
_CHANNEL_PARAMS = ("channel", "channel_id", "stream", "space", "room_id", "chat_id")


@dataclass
class Built:
    """The definition and what it leaves open."""

    definition: dict[str, Any]
    missing: list[dict[str, str]] = field(default_factory=list)


def _ref(field_name: str) -> str:
    return "{{ input.%s }}" % field_name  # noqa: UP031 (braces)


def _given(text: str) -> dict[str, Any]:
    """Parameter values the request states itself: a #channel, an address, a phone number."""
    given: dict[str, Any] = {}
    channel = _CHANNEL.search(text)
    if channel:
        for name in _CHANNEL_PARAMS:
            given[name] = "#" + channel.group(1)
    return given


def _explicit_roles(text: str, conditions: list[Condition]) -> dict[str, str]:
    taken = {str(c.value) for c in conditions}
    roles: dict[str, str] = {}
    for address in _EMAIL.findall(text):
        if address not in taken:
            roles.setdefault("to", address)
            roles.setdefault("email", address)
    phone = _PHONE.search(text)
    if phone:
        roles["phone"] = re.sub(r"[\s().-]", "", phone.group(0))
    return roles


def _trigger_data(service: Service | None, key: str, summary: str) -> dict[str, str]:
    """Data roles filled from the trigger's payload (or, with no payload, from the request)."""
    if service is None or key not in service.triggers:
        # The request's own words, never as a template: a user's "{{ ... }}" stays text.
        plain = re.sub(r"[{}%#]+", " ", summary).strip() or "Workflow run"
        return {"title": plain, "text": plain, "message": plain}
    fields = service.triggers[key].fields
    data: dict[str, str] = {}
    for role, sources in ROLE_SOURCES.items():
        found = next((f for f in sources if f in fields), None)
        if found:
            data[role] = _ref(found)
    event = service.triggers[key].name.lower()
    if "title" in data:
        link = f" {_ref('url')}" if "url" in fields else ""
        data["message"] = f"{service.name}: {event}: {data['title']}{link}"
    return data


class Builder:
    """Builds definitions against one catalogue; ``base_url`` (tests) replaces every
    service's API base with ``<base_url>/<slug>``."""

    def __init__(self, catalogue: Catalogue, base_url: str | None = None):
        self.catalogue = catalogue
        self.base_url = base_url.rstrip("/") if base_url else None

    def _trigger_node(self, reading: Reading, schedule: dict[str, str] | None) -> dict[str, Any]:
        if reading.trigger is not None:
            step = reading.trigger
            service = self.catalogue.services[step.choice.slug]
            name = f"{service.name}: {service.triggers[step.key].name}"
            config = {"kind": "event", "event_type": f"{service.slug}.{step.key}"}
            return {"id": "trigger", "type": "trigger", "name": name, "config": config}
        if schedule is not None:
            config = {"kind": "schedule", **schedule}
            return {
                "id": "trigger",
                "type": "trigger",
                "name": f"Schedule: {schedule['cron']}",
                "config": config,
            }
        return {
            "id": "trigger",
            "type": "trigger",
            "name": "Run on request",
            "config": {"kind": "manual"},
        }

    def _node_id(self, step: Step, used: set[str]) -> str:
        base = f"{step.choice.slug}_{step.key}"[:60]
        node_id, n = base, 2
        while node_id in used:
            node_id, n = f"{base}_{n}", n + 1
        used.add(node_id)
        return node_id

    def _action(
        self,
        step: Step,
        data: dict[str, str],
        given: dict[str, Any],
        index: int,
        missing: list[dict[str, str]],
    ) -> dict[str, Any]:
        service = self.catalogue.services[step.choice.slug]
        operation = service.actions[step.key]
        roles = dict(data)
        if _MESSAGE_OPS.search(step.key) and "message" in roles:
            roles["text"] = roles["message"]
        base = f"{self.base_url}/{service.slug}" if self.base_url else None
        config, asked = build_step(service, operation, roles, given, base)
        for name in asked:
            missing.append(
                {
                    "field": f"actions[{index}].params.{name}",
                    "question": f"Which {name.replace('_', ' ')} should {service.name} use "
                    f"for '{operation.name.lower()}'?",
                }
            )
        return {
            "id": "",
            "type": "action",
            "name": f"{service.name}: {operation.name}",
            "config": config,
        }

    def build(
        self,
        reading: Reading,
        name: str,
        request: str,
        schedule: dict[str, str] | None,
        conditions: list[Condition],
    ) -> Built:
        """The definition for ``reading``; ``missing`` gathers the parameters left open."""
        missing: list[dict[str, str]] = []
        trigger = self._trigger_node(reading, schedule)
        nodes = [trigger]
        connections: list[dict[str, str]] = []
        previous = "trigger"
        if conditions and reading.actions:
            expression = " and ".join(f"({c.expression})" for c in conditions)
            nodes.append(
                {
                    "id": "condition",
                    "type": "condition",
                    "name": "Only when " + ", ".join(c.text for c in conditions),
                    "config": {"expression": expression},
                }
            )
            connections.append({"source": "trigger", "target": "condition"})
            previous = "condition"
        tservice = self.catalogue.get(reading.trigger.choice.slug) if reading.trigger else None
        data = _trigger_data(tservice, reading.trigger.key if reading.trigger else "", name)
        data.update(_explicit_roles(request, conditions))
        given = _given(request)
        used = {"trigger", "condition"}
        for index, step in enumerate(reading.actions):
            node = self._action(step, data, given, index, missing)
            node["id"] = self._node_id(step, used)
            nodes.append(node)
            edge = {"source": previous, "target": node["id"]}
            if previous == "condition":
                edge["when"] = "true"
            connections.append(edge)
            previous = node["id"]
            if step.choice.slug in AI_OUTPUT:
                answer = "{{ steps.%s.%s }}" % (node["id"], AI_OUTPUT[step.choice.slug])  # noqa: UP031
                data = {**data, "text": answer, "message": answer}
        definition = {
            "name": name,
            "description": request[:2000],
            "nodes": nodes,
            "connections": connections,
        }
        return Built(definition, missing)
