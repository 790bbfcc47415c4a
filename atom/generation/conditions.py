"""Conditions in plain English -> expressions the workflow's condition node evaluates.

"over $500" -> ``(input.get('amount') or 0) > 500``; "from my boss" -> a sender test whose
address the user is asked for; "important" -> Gmail's IMPORTANT label or an ``important``
flag. Expressions read the trigger's payload with ``.get`` so a missing field is a false
condition, not a failed run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_NUMBER = (
    r"(?P<cur>[$€£])?\s*(?P<n>\d[\d,]*(?:\.\d+)?)\s*(?P<k>k\b|m\b|thousand|million)?\s*"
    r"(?P<unit>dollars?|usd|eur|euros?|gbp|pounds?|degrees?|°[cf]?|%|percent)?"
)
_COMPARE = re.compile(
    r"\b(?P<op>over|above|more than|greater than|higher than|larger than|bigger than|exceeds?|"
    r"exceeding|at least|under|below|less than|lower than|smaller than|at most|worth more than|"
    r"worth over|>=|<=|>|<)\s*" + _NUMBER,
)
_OPS = {
    "under": "<",
    "below": "<",
    "less than": "<",
    "lower than": "<",
    "smaller than": "<",
    "at most": "<=",
    "at least": ">=",
    ">=": ">=",
    "<=": "<=",
    ">": ">",
    "<": "<",
}
_NOT_AMOUNT = re.compile(
    r"^\s*(?:minutes?|mins?|hours?|days?|weeks?|times?|people|users|items|rows|seconds?|secs?)\b"
)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_PEOPLE = (
    "boss",
    "manager",
    "ceo",
    "cto",
    "cfo",
    "team lead",
    "supervisor",
    "wife",
    "husband",
    "partner",
    "mom",
    "mum",
    "dad",
    "mother",
    "father",
    "client",
    "biggest client",
    "landlord",
    "accountant",
    "lawyer",
    "assistant",
    "vip",
    "vips",
    "investor",
    "investors",
    "family",
)
_FROM_PERSON = re.compile(
    r"\bfrom (?:my |our |the |a |an )?(?P<who>" + "|".join(_PEOPLE) + r")\b(?![@.\w-])"
)
_FROM_DOMAIN = re.compile(
    r"\bfrom (?:anyone at |someone at |people at |@)?"
    r"(?P<domain>[a-z0-9-]+\.(?:com|org|net|io|co|ai|dev|edu|gov|uk|de|fr))\b"
)
_CONTAINS = re.compile(
    r"\b(?:contain(?:s|ing)?|with the (?:word|phrase|keyword)|mention(?:s|ing)|with subject|"
    r"subject (?:line )?(?:contains|includes|has)|includ(?:es|ing) the (?:word|phrase)|"
    r"with keyword|"
    r"that (?:say|says|mention)|about|matching|with)\s+[\"'“‘](?P<word>[^\"'”’]{1,60})[\"'”’]"
)
_LABEL = re.compile(
    r"\b(?:label(?:l?ed)?|tagged|with (?:the )?(?:label|tag))\s+"
    r"[\"'“]?(?P<label>[\w-]{2,40})[\"'”]?"
)
_NOT_LABELS = frozenset({"as", "with", "in", "by", "on", "a", "the", "me", "at", "to"})
_IMPORTANT = re.compile(r"\b(?:important|high[- ]priority|priority|vip|starred|flagged)\b")
_URGENT = re.compile(r"\burgent(?:ly)?\b|\basap\b")
_ATTACHMENT = re.compile(
    r"\bwith (?:an? |the )?attachments?\b|\battached\b|"
    r"\bthat (?:have|has|include) (?:an? )?attachments?\b"
)
_FIELD_BY_UNIT = {"degree": "temperature", "°": "temperature", "%": "percent", "percent": "percent"}


@dataclass
class Condition:
    """One condition: the field it tests, how, the expression and the words it came from."""

    field: str
    operator: str
    value: object
    expression: str
    text: str
    ask: str | None = None
    """A question for the user when the value is not in the request."""

    def view(self) -> dict[str, object]:
        """The JSON shape in ``detected.conditions``."""
        return {
            "field": self.field,
            "operator": self.operator,
            "value": self.value,
            "expression": self.expression,
            "text": self.text,
        }


@dataclass
class Found:
    """The conditions of a request and the character spans they used."""

    conditions: list[Condition] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)


def _number(match: re.Match) -> float:
    value = float(match["n"].replace(",", ""))
    scale = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6}.get(match["k"] or "", 1)
    value *= scale
    return int(value) if value.is_integer() else value


def _text_of(*fields: str) -> str:
    parts = " ~ ' ' ~ ".join(f"(input.get('{f}') or '')" for f in fields)
    return f"({parts}).lower()"


def _comparisons(text: str, found: Found) -> None:
    for match in _COMPARE.finditer(text):
        if not (match["cur"] or match["unit"] or match["k"]) and _NOT_AMOUNT.match(
            text[match.end() :]
        ):
            continue
        unit = (match["unit"] or "").lower()
        name = next((f for u, f in _FIELD_BY_UNIT.items() if unit.startswith(u)), "amount")
        op = _OPS.get(match["op"], ">")
        value = _number(match)
        found.conditions.append(
            Condition(
                name, op, value, f"(input.get('{name}') or 0) {op} {value}", match.group(0).strip()
            )
        )
        found.spans.append(match.span())


def _senders(text: str, found: Found) -> None:
    for match in _EMAIL.finditer(text):
        before = text[max(0, match.start() - 12) : match.start()]
        if "from" not in before:
            continue
        address = match.group(0)
        found.conditions.append(
            Condition(
                "from",
                "contains",
                address,
                f"{json.dumps(address)} in {_text_of('from')}",
                match.group(0),
            )
        )
        found.spans.append(match.span())
    for match in _FROM_DOMAIN.finditer(text):
        domain = match["domain"]
        found.conditions.append(
            Condition(
                "from",
                "contains",
                domain,
                f"{json.dumps(domain)} in {_text_of('from')}",
                match.group(0),
            )
        )
        found.spans.append(match.span())
    for match in _FROM_PERSON.finditer(text):
        who = match["who"]
        placeholder = f"<{who.replace(' ', '_')}_email>"
        found.conditions.append(
            Condition(
                "from",
                "contains",
                placeholder,
                f"{json.dumps(placeholder)} in {_text_of('from')}",
                match.group(0),
                ask=f"What is the email address of your {who}?",
            )
        )
        found.spans.append(match.span())


def _flags(text: str, found: Found) -> None:
    for match in _CONTAINS.finditer(text):
        word = match["word"].strip().lower()
        found.conditions.append(
            Condition(
                "text",
                "contains",
                word,
                f"{json.dumps(word)} in {_text_of('subject', 'title', 'text', 'body')}",
                match.group(0),
            )
        )
        found.spans.append(match.span())
    labelled = _LABEL.search(text)
    if labelled and labelled["label"] not in _NOT_LABELS:
        label = labelled["label"]
        expression = (
            f"{json.dumps(label)} in ((input.get('labels') or []) + (input.get('tags') or []))"
        )
        found.conditions.append(
            Condition("labels", "contains", label, expression, labelled.group(0))
        )
        found.spans.append(labelled.span())
    flagged = _IMPORTANT.search(text)
    if flagged:
        expression = (
            "(input.get('important') or 'IMPORTANT' in (input.get('labels') or [])"
            " or (input.get('priority') or '') in ('high', 'urgent'))"
        )
        found.conditions.append(Condition("important", "is", True, expression, flagged.group(0)))
        found.spans.append(flagged.span())
    urgent = _URGENT.search(text)
    if urgent:
        expression = f"'urgent' in {_text_of('subject', 'title', 'text', 'body', 'priority')}"
        found.conditions.append(
            Condition("text", "contains", "urgent", expression, urgent.group(0))
        )
        found.spans.append(urgent.span())
    attached = _ATTACHMENT.search(text)
    if attached:
        expression = "(input.get('attachments') or []) | length > 0"
        found.conditions.append(
            Condition("attachments", "not_empty", True, expression, attached.group(0))
        )
        found.spans.append(attached.span())


def extract(text: str) -> Found:
    """Every condition the request states, in the order of the checks."""
    lower = text.lower()
    found = Found()
    _comparisons(lower, found)
    _senders(lower, found)
    _flags(lower, found)
    return found
