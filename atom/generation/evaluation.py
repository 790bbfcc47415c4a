"""Scoring the generator on labelled requests (tests/data/nl): ordered trigger/action
accuracy, exact service-set accuracy, service precision/recall and latency, for the full
method and for the dictionary-only floor."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atom.errors import InvalidInput
from atom.generation import Generator
from atom.generation.text import tokenize

NONE = ("", ())


@dataclass(frozen=True)
class Case:
    """One labelled request."""

    kind: str
    text: str
    trigger: str
    actions: tuple[str, ...]
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def automatable(self) -> bool:
        """False for a request that must be refused (no trigger and no actions labelled)."""
        return bool(self.trigger or self.actions)


def load_cases(path: Path) -> list[Case]:
    """Cases from a ``kind | text | trigger | actions [| context]`` file."""
    cases = []
    for line in path.read_text("utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split(" | ")]
        kind, text, trigger, actions = (parts + ["", "", "", ""])[:4]
        context = json.loads(parts[4]) if len(parts) > 4 and parts[4] else {}
        slugs = tuple(a.strip() for a in actions.split(",") if a.strip())
        cases.append(Case(kind, text, trigger.strip(), slugs, context))
    return cases


Predict = Callable[[Case], tuple[str, tuple[str, ...]]]
"""A method: a case -> (trigger slug | schedule | manual, action slugs); NONE when refused."""


def full_method(generator: Generator) -> Predict:
    """The generator as the API runs it."""

    def predict(case: Case) -> tuple[str, tuple[str, ...]]:
        try:
            result = generator.generate(case.text, case.context)
        except InvalidInput:
            return NONE
        detected = result.detected
        return detected["trigger"]["service"], tuple(a["service"] for a in detected["actions"])

    return predict


def floor_method(generator: Generator, fuzzy: bool = False) -> Predict:
    """The floor: catalogue names and aliases (exact, or also fuzzy for typos) in text order;
    the first that has triggers is the trigger when another follows (else manual), the rest
    are the actions. No generic words, no roles, no context."""
    catalogue = generator.catalogue
    detector = generator.detector

    def predict(case: Case) -> tuple[str, tuple[str, ...]]:
        tokens = tokenize(case.text)
        slugs: list[str] = []
        i = 0
        while i < len(tokens):
            found = None
            for n in range(min(detector.longest, len(tokens) - i), 0, -1):
                phrase = detector.phrases.get(tuple(t.text for t in tokens[i : i + n]))
                if phrase:
                    found = (phrase.slug, n)
                    break
            if found is None and fuzzy:
                mention = detector._fuzzy(tokens, i)
                found = (mention.slug or "", mention.end - i) if mention else None
            if found:
                if found[0] not in slugs:
                    slugs.append(found[0])
                i += found[1]
            else:
                i += 1
        if not slugs:
            return NONE
        if catalogue.services[slugs[0]].triggers and len(slugs) > 1:
            return slugs[0], tuple(slugs[1:])
        return "manual", tuple(slugs)

    return predict


@dataclass
class Score:
    """Figures for one method on one set of cases."""

    n: int
    ordered: float
    service_set: float
    trigger: float
    precision: float
    recall: float
    p50_ms: float
    p95_ms: float
    misses: list[tuple[Case, tuple[str, tuple[str, ...]]]]


def _services(trigger: str, actions: tuple[str, ...]) -> list[str]:
    return [s for s in (trigger, *actions) if s and s not in ("schedule", "manual")]


def score(cases: list[Case], predict: Predict) -> Score:
    """Run ``predict`` on every case and score it."""
    ordered = same_set = trigger_ok = tp = fp = fn = 0
    latencies: list[float] = []
    misses = []
    for case in cases:
        started = time.perf_counter()
        got = predict(case)
        latencies.append((time.perf_counter() - started) * 1000)
        gold = (case.trigger, case.actions) if case.automatable else NONE
        ok = got == gold
        ordered += ok
        gold_services, got_services = _services(*gold), _services(*got)
        same_set += set(gold_services) == set(got_services) and (case.automatable == (got != NONE))
        trigger_ok += got[0] == gold[0]
        remaining = list(gold_services)
        for s in got_services:
            if s in remaining:
                tp += 1
                remaining.remove(s)
            else:
                fp += 1
        fn += len(remaining)
        if not ok:
            misses.append((case, got))
    n = len(cases) or 1
    quantiles = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else [0.0] * 19
    return Score(
        n=len(cases),
        ordered=ordered / n,
        service_set=same_set / n,
        trigger=trigger_ok / n,
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=tp / (tp + fn) if tp + fn else 1.0,
        p50_ms=statistics.median(latencies) if latencies else 0.0,
        p95_ms=quantiles[18],
        misses=misses,
    )
