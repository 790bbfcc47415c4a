"""Which mentions are steps. Generic words often only describe a named service ("Gmail
emails", "files in Dropbox"), name the people a message goes to ("email it to the team"), or
set the scene ("We use HubSpot as our CRM."); these rules drop them."""

from __future__ import annotations

from dataclasses import dataclass

from atom.catalogue import Catalogue
from atom.generation.detect import Mention
from atom.generation.lexicon import ACTION_VERBS, KINDS, TRIGGER_CUES, TRIGGER_VERBS
from atom.generation.text import Token

COMMUNICATION = frozenset({"email", "sms", "push", "chat"})
PEOPLE = frozenset(
    {
        "team", "the team", "my team", "teammates", "coworkers", "colleagues", "everyone",
        "the group", "the office", "sales team", "support team", "dev team", "engineering",
    }
)  # fmt: skip
"""Chat words that name people: with another channel in the clause they are its recipients."""
_JOINING = frozenset(
    {"in", "on", "from", "of", "inside", "within", "at", "via", "through", "using", "with"}
)
_FILLERS = frozenset({"our", "my", "the", "your", "their", "a", "an"})
_DESCRIBING = frozenset({"for", "about", "regarding"})
_SPECIFIC = {"sms": 3, "email": 2, "chat": 1, "push": 0}
"""Among generic channels in one clause, the most specific wins ("alert me by SMS")."""
_CUE_WORDS = frozenset(cue for cue in TRIGGER_CUES if " " not in cue) | {"every", "each"}
_WISH_WORDS = frozenset({"want", "wants", "like", "love", "need", "needs", "wish"})


@dataclass
class _Scene:
    tokens: list[Token]
    mentions: list[Mention]
    named: list[Mention]
    in_region: list[Mention]
    region: tuple[int, int] | None
    catalogue: Catalogue


def _gap(a: Mention, b: Mention) -> int:
    return b.start - a.end if a.end <= b.start else a.start - b.end


def _between(tokens: list[Token], a: Mention, b: Mention) -> list[str]:
    lo, hi = (a.end, b.start) if a.end <= b.start else (b.end, a.start)
    return [t.text for t in tokens[lo:hi]]


def _describes(s: _Scene, m: Mention) -> bool:
    """A generic word right beside a named service ("Gmail emails", "files in our Dropbox")."""
    for n in s.named:
        if n.clause != m.clause:
            continue
        gap = _gap(m, n)
        if gap == 0:
            return True
        between = _between(s.tokens, m, n)
        between = [w for w in between if not w.startswith("#")]  # "in our #sales Slack"
        if between and between[0] in _JOINING and set(between) <= _JOINING | _FILLERS and gap <= 3:
            return True
    return False


def _category(s: _Scene, m: Mention) -> str:
    return s.catalogue.services[m.slug or ""].category


def _same_kind(s: _Scene, m: Mention) -> bool:
    kinds = set(KINDS.get(m.kind or "", ()))
    return any(n.clause == m.clause and _category(s, n) in kinds for n in s.named)


def _kind_of(s: _Scene, m: Mention) -> str:
    return m.kind or "" if m.generic else _category(s, m)


def _recipients(s: _Scene, m: Mention) -> bool:
    """'the team' in 'email it to the team': the people, not a chat service."""
    words = " ".join(t.text for t in s.tokens[m.start : m.end])
    if m.kind != "chat" or words not in PEOPLE:
        return False
    return any(
        o is not m and o.clause == m.clause and _kind_of(s, o) in COMMUNICATION for o in s.mentions
    )


def _less_specific(s: _Scene, m: Mention, kept: list[Mention]) -> bool:
    """A vaguer generic channel than another in the clause ("alert me by SMS"), or a repeat."""
    for k in s.mentions:
        if k is m or not k.generic or k.clause != m.clause:
            continue
        if k.kind == m.kind and k in kept:
            return True
        if {k.kind, m.kind} <= COMMUNICATION:
            mine, theirs = _SPECIFIC[m.kind or ""], _SPECIFIC[k.kind or ""]
            if theirs > mine or (theirs == mine and k in kept):
                return True
    return False


def _drop_generic(s: _Scene, m: Mention, kept: list[Mention]) -> bool:
    if _describes(s, m) or _same_kind(s, m):
        return True
    if s.region and s.region[0] <= m.start < s.region[1] and s.in_region:
        return True  # the event's own words ("a new video on my channel")
    before = [t.text for t in s.tokens[max(0, m.start - 3) : m.start] if t.clause == m.clause]
    if any(w in _DESCRIBING for w in before):
        return True  # "for the billing team", "about the deal"
    return _recipients(s, m) or _less_specific(s, m, kept)


def scene_setting(tokens: list[Token], mentions: list[Mention]) -> set[int]:
    """Clauses that only set the scene ("We use HubSpot as our CRM."): no verb of an event
    or an action, in a request whose other clauses have one."""
    verbs = ACTION_VERBS | TRIGGER_VERBS | _CUE_WORDS | _WISH_WORDS
    with_verbs = {t.clause for t in tokens if t.text in verbs}
    if len({t.clause for t in tokens}) < 2 or not with_verbs:
        return set()
    first = min(with_verbs)  # only the clauses before the request begins set the scene
    return {m.clause for m in mentions if m.clause < first}


def steps(
    tokens: list[Token],
    mentions: list[Mention],
    catalogue: Catalogue,
    region: tuple[int, int] | None,
) -> list[Mention]:
    """The mentions that are steps, in order (the rest describe or repeat them)."""
    scene = scene_setting(tokens, mentions)
    named = [m for m in mentions if not m.generic]
    in_region = [n for n in named if region and region[0] <= n.start < region[1]]
    s = _Scene(tokens, mentions, named, in_region, region, catalogue)
    kept: list[Mention] = []
    for m in mentions:
        if m.clause in scene:
            continue
        if m.generic and _drop_generic(s, m, kept):
            continue
        if not m.generic and any(k.slug == m.slug and k.clause == m.clause for k in kept):
            continue
        kept.append(m)
    return kept
