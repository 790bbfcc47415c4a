"""Plain English -> a workflow that runs, locally and in milliseconds.

normalise -> schedule and condition extraction -> service detection (catalogue names and
aliases, longest phrase first, fuzzy for typos; generic words resolved through the user's
preferences, the tenant's history, else the most common service) -> trigger and action roles
and their order -> operations and events -> a definition built from the catalogue's step
templates -> validation. See README "Workflows from plain English".
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from atom.catalogue import Catalogue
from atom.catalogue import load as load_catalogue
from atom.errors import InvalidInput, Problem
from atom.generation import conditions as condition_text
from atom.generation import schedule as schedule_text
from atom.generation.build import Builder
from atom.generation.detect import Detector
from atom.generation.lexicon import ACTION_VERBS, PATTERNS
from atom.generation.text import is_title_case, tokenize
from atom.generation.understand import Choice, Reader, Reading, Resolver
from atom.workflow.definition import parse_definition

__all__ = ["Generated", "Generator", "NothingToAutomate", "generator"]

MAX_INPUT = 4000


class NothingToAutomate(InvalidInput):
    """The request names no service, event or schedule the catalogue knows (422)."""

    subject = "automation request"


@dataclass
class Generated:
    """The answer of ``POST /api/workflows/automation/generate``."""

    workflow: dict[str, Any]
    detected: dict[str, Any]
    confidence: float
    missing: list[dict[str, str]]
    pattern: str
    generation_ms: float = 0.0
    services: list[str] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        """The JSON body."""
        return {
            "workflow": self.workflow,
            "detected": self.detected,
            "confidence": self.confidence,
            "missing": self.missing,
            "pattern": self.pattern,
            "generation_ms": self.generation_ms,
        }


_PATTERNS = [
    (name, re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b"))
    for name, words in PATTERNS
]


def _pattern(text: str, reading: Reading, scheduled: bool) -> str:
    lower = text.lower()
    for name, regex in _PATTERNS:
        if regex.search(lower):
            if (
                name == "digest"
                and not scheduled
                and "digest" not in lower
                and "summar" not in lower
            ):
                continue
            return name
    if scheduled:
        return "scheduled"
    return "notification" if reading.actions else "automation"


def _asks_for_action(text: str) -> bool:
    """A request with no trigger and no schedule must still ask for something to be done
    ("send ...", "... to Slack"); "what's the weather like" does not."""
    words = {t.text for t in tokenize(text)}
    return bool(words & ACTION_VERBS) or bool(words & {"to", "into", "onto"})


def _name(text: str) -> str:
    words = re.sub(r"\s+", " ", text).strip()
    return (words[:77] + "...") if len(words) > 80 else words or "Generated workflow"


def _choice_missing(choice: Choice, where: str, catalogue: Catalogue) -> dict[str, str] | None:
    if choice.source != "default":
        return None
    service = catalogue.services.get(choice.slug)
    label = service.name if service else choice.slug
    return {
        "field": f"{where}.service",
        "question": f"Which service do you mean by '{choice.word}'? I used {label}, "
        "the most common choice; "
        "name another or set it in context.preferred_services.",
    }


class Generator:
    """Holds the catalogue and its indexes (built once); ``generate`` is a pure function of
    the request, the context and the tenant's history."""

    def __init__(self, catalogue: Catalogue, base_url: str | None = None):
        self.catalogue = catalogue
        self.detector = Detector(catalogue)
        self.builder = Builder(catalogue, base_url)

    def read(
        self,
        text: str,
        context: dict[str, Any] | None = None,
        history: dict[str, int] | None = None,
    ):
        """Tokens, schedule, conditions and the Reading of a request (no definition)."""
        context = context or {}
        found = condition_text.extract(text)
        schedule = schedule_text.extract(text)
        tokens = tokenize(text, ACTION_VERBS)
        mentions = self.detector.mentions(tokens, is_title_case(tokens))
        resolver = Resolver(self.catalogue, context.get("preferred_services"), history or {})
        reader = Reader(self.catalogue, resolver)
        reading = reader.read(tokens, mentions, schedule is not None)
        if schedule is not None and not schedule.firm and reading.trigger is None:
            # A bare "daily" may be the event's own word ("your daily Fitbit summary").
            unscheduled = reader.read(tokens, mentions, False)
            if unscheduled.trigger is not None:
                schedule, reading = None, unscheduled
        return schedule, found.conditions, reading

    def generate(
        self,
        text: str,
        context: dict[str, Any] | None = None,
        history: dict[str, int] | None = None,
    ) -> Generated:
        """A workflow for ``text``; NothingToAutomate (422) when there is nothing to automate."""
        started = time.perf_counter()
        context = context or {}
        text = text.strip()[:MAX_INPUT]
        schedule, conditions, reading = self.read(text, context, history)
        if (reading.trigger is None and not reading.actions) or (
            reading.trigger is None and schedule is None and not self._asks(text, reading)
        ):
            raise NothingToAutomate(
                [
                    Problem(
                        "user_input",
                        "names no service, event or action that ATOM can automate "
                        "(try e.g. 'when I get an email in Gmail, post it to Slack')",
                    )
                ]
            )
        stated = schedule_text.timezone_of(text) if schedule else None
        timezone = str(stated or context.get("timezone") or "UTC")
        sched = (
            {"cron": schedule.cron, "timezone": timezone}
            if schedule and reading.trigger is None
            else None
        )
        built = self.builder.build(reading, _name(text), text, sched, conditions)
        parse_definition(built.definition)  # a generated workflow always validates
        missing = self._missing(reading, sched, conditions, context) + built.missing
        detected = self._detected(reading, sched, conditions)
        scores = [
            s.choice.confidence * s.confidence
            for s in ([reading.trigger] if reading.trigger else []) + reading.actions
        ]
        confidence = round(sum(scores) / len(scores), 3) if scores else 0.5
        if reading.trigger is None and sched is None:
            confidence = round(confidence * 0.8, 3)
        return Generated(
            workflow=built.definition,
            detected=detected,
            confidence=confidence,
            missing=missing,
            pattern=_pattern(text, reading, sched is not None),
            generation_ms=round((time.perf_counter() - started) * 1000, 2),
            services=[s.choice.slug for s in reading.actions],
        )

    def _asks(self, text: str, reading: Reading) -> bool:
        """A request with no trigger and no schedule must still ask for something to be done:
        a verb ("send ..."), a destination ("... to Slack") or a message ("a notification")."""
        if _asks_for_action(text):
            return True
        categories = {self.catalogue.services[a.choice.slug].category for a in reading.actions}
        return bool(categories & {"email", "chat", "sms", "push"})

    def _detected(
        self, reading: Reading, sched: dict[str, str] | None, conditions: list
    ) -> dict[str, Any]:
        if reading.trigger is not None:
            t = reading.trigger
            trigger = {
                "service": t.choice.slug,
                "event": t.key,
                "confidence": round(t.choice.confidence * t.confidence, 3),
            }
        elif sched is not None:
            trigger = {"service": "schedule", "event": "cron", "confidence": 0.95}
        else:
            trigger = {"service": "manual", "event": "manual", "confidence": 0.5}
        return {
            "trigger": trigger,
            "actions": [
                {
                    "service": a.choice.slug,
                    "operation": a.key,
                    "confidence": round(a.choice.confidence * a.confidence, 3),
                }
                for a in reading.actions
            ],
            "schedule": sched,
            "conditions": [c.view() for c in conditions],
        }

    def _missing(
        self,
        reading: Reading,
        sched: dict[str, str] | None,
        conditions: list,
        context: dict[str, Any],
    ) -> list[dict[str, str]]:
        missing: list[dict[str, str]] = []
        if reading.trigger is not None:
            item = _choice_missing(reading.trigger.choice, "trigger", self.catalogue)
            if item:
                missing.append(item)
        elif sched is None:
            missing.append(
                {
                    "field": "trigger",
                    "question": "What should start this workflow: an event in a service, "
                    "a schedule, or a manual run?",
                }
            )
        if sched is not None and not context.get("timezone") and sched["timezone"] == "UTC":
            missing.append(
                {
                    "field": "schedule.timezone",
                    "question": "Which timezone is the schedule in? I used UTC.",
                }
            )
        for i, action in enumerate(reading.actions):
            item = _choice_missing(action.choice, f"actions[{i}]", self.catalogue)
            if item:
                missing.append(item)
        if not reading.actions:
            missing.append(
                {
                    "field": "actions",
                    "question": "What should happen when it runs? "
                    "Name a service and what it should do.",
                }
            )
        for i, condition in enumerate(conditions):
            if condition.ask:
                missing.append({"field": f"conditions[{i}].value", "question": condition.ask})
        for choice, why in reading.unsupported:
            missing.append(
                {
                    "field": "actions",
                    "question": f"{choice.slug} {why}; which other service should do this?",
                }
            )
        return missing


_GENERATORS: dict[str | None, Generator] = {}


def generator(base_url: str | None = None) -> Generator:
    """The process's generator for the packaged catalogue (built on first use)."""
    if base_url not in _GENERATORS:
        _GENERATORS[base_url] = Generator(load_catalogue(), base_url)
    return _GENERATORS[base_url]
