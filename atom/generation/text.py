"""Tokens and clauses: the request as words with their places, case and clause."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"[#@]?[A-Za-z0-9][A-Za-z0-9'&+.\-]*[A-Za-z0-9+]|[#@]?[A-Za-z0-9]|\$\d[\d,.]*")
_CLAUSE_BREAK = re.compile(r"[,;:!?\n()]|\.(?:\s|$)|\s-\s|\s–\s|->|=>|→")
BREAK_WORDS = frozenset({"then", "also", "plus", "afterwards", "next", "finally", "and"})
"""Words that start a new clause (``and`` only where it joins two verb phrases)."""


@dataclass(frozen=True)
class Token:
    """One word of the request."""

    text: str
    """Lower case, possessive ``'s`` removed."""
    raw: str
    start: int
    end: int
    clause: int


def _clean(raw: str) -> str:
    text = raw.lower().replace("\u2019", "'")
    if text.endswith("'s"):
        text = text[:-2]
    return text.rstrip("'")


def tokenize(text: str, verbs: frozenset[str] = frozenset()) -> list[Token]:
    """The words of ``text``; a clause ends at punctuation, at ``then``/``also``, and at an
    ``and`` followed by one of ``verbs``."""
    text = text.replace("\u2019", "'").replace("/", " ")
    breaks = [m.start() for m in _CLAUSE_BREAK.finditer(text)]
    raw = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text)]
    tokens: list[Token] = []
    clause, b = 0, 0
    for i, (word, start, end) in enumerate(raw):
        while b < len(breaks) and breaks[b] < start:
            clause, b = clause + 1, b + 1
        lower = _clean(word)
        nxt = _clean(raw[i + 1][0]) if i + 1 < len(raw) else ""
        if lower in BREAK_WORDS and (lower != "and" or nxt in verbs):
            clause += 1
        tokens.append(Token(text=lower, raw=word, start=start, end=end, clause=clause))
    return tokens


def is_title_case(tokens: list[Token]) -> bool:
    """True when most longer words are capitalised (a recipe title): capitals then say nothing."""
    words = [t.raw for t in tokens if len(t.raw) > 3 and t.raw[0].isalpha()]
    if len(words) < 3:
        return False
    return sum(w[0].isupper() for w in words) >= 0.6 * len(words)
