"""From mentions to meaning: which mention is the trigger, which are the actions and in what
order, which operation or event each one means, and which concrete service a generic word
stands for."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from atom.catalogue import Catalogue, Service
from atom.generation import filters
from atom.generation.detect import Mention
from atom.generation.lexicon import (
    ACTION_VERBS,
    DEFAULTS,
    GENERIC,
    KEY_WORDS,
    KINDS,
    STOP,
    TRIGGER_CUES,
    TRIGGER_VERBS,
)
from atom.generation.text import Token

_OWNER_WORDS = frozenset(
    {
        "new",
        "my",
        "your",
        "our",
        "latest",
        "incoming",
        "every",
        "each",
        "any",
        "recent",
        "starred",
        "liked",
        "saved",
        "tagged",
    }
)
_SOURCE_WORDS = frozenset({"from", "of", "on", "in"})
IMPERATIVES = frozenset(
    """send create add make save upload notify ping tell log append copy archive store put share
    publish mark assign book invite subscribe insert write jot remind forward reply draft generate
    summarize summarise translate turn blink flash deploy escalate move sync mirror dm backup
    start open""".split()
)
AMBIGUOUS_VERBS = frozenset(
    {
        "post",
        "text",
        "email",
        "message",
        "call",
        "tweet",
        "page",
        "alert",
        "update",
        "schedule",
        "record",
        "track",
        "file",
    }
)
_SUBJECTS = frozenset(
    {"customers", "users", "clients", "people", "members", "visitors", "buyers", "folks", "it"}
) | frozenset(
    {
        "i",
        "we",
        "someone",
        "somebody",
        "anyone",
        "they",
        "you",
        "he",
        "she",
        "who",
        "customer",
        "user",
        "client",
    }
)
_DETERMINERS = frozenset(
    {
        "a",
        "an",
        "the",
        "new",
        "every",
        "each",
        "my",
        "your",
        "our",
        "any",
        "this",
        "that",
        "i",
        "we",
        "someone",
        "is",
        "are",
        "gets",
        "get",
    }
)
_OBJECTS = frozenset(
    {
        "to",
        "me",
        "it",
        "them",
        "us",
        "a",
        "an",
        "the",
        "in",
        "on",
        "via",
        "into",
        "him",
        "her",
        "everyone",
        "my",
        "our",
        "about",
        "that",
    }
)
_ASKERS = frozenset({"i", "i'd", "we", "we'd", "could", "can", "would", "will"})
_WISHES = frozenset({"love", "like", "want", "need", "you", "would", "please"})
_PERSONS = frozenset({"i", "we", "someone", "somebody", "anyone", "i'm", "we're"})
_DESTINATIONS = frozenset({"to", "into", "onto", "become", "becomes", "as"})
_TARGET_WORDS = frozenset(
    {"to", "into", "onto", "in", "on", "via", "using", "through", "become", "becomes", "as"}
)


@dataclass
class Choice:
    """A concrete service chosen for a mention, and why."""

    slug: str
    confidence: float
    source: str
    """named, fuzzy, preferred, history or default."""
    kind: str | None = None
    word: str | None = None


@dataclass
class Step:
    """One resolved part of the request: the service, and its operation or event."""

    mention: Mention
    choice: Choice
    key: str
    confidence: float


@dataclass
class Reading:
    """What the request means, before it becomes a workflow."""

    trigger: Step | None
    actions: list[Step]
    unsupported: list[tuple[Choice, str]] = field(default_factory=list)


GENERAL_WORDS = frozenset(
    """new every each any whenever added created arrives add create make start open update
    updates change set send sends get gets save keep read later back""".split()
)


def event_words(service: Service) -> frozenset[str]:
    """The nouns that name what a service's triggers are about ("photos", "bookings")."""
    words = {
        w
        for key in service.triggers
        for part in key.split("_")
        for w in KEY_WORDS.get(part, (part,))
    }
    return frozenset(words - GENERAL_WORDS)


def key_score(key: str, words: set[str]) -> int:
    """How many of ``words`` stand for one of ``key``'s parts (each word counts once)."""
    vocabulary = {
        w for part in key.split("_") if part not in STOP for w in KEY_WORDS.get(part, (part,))
    }
    return len(vocabulary & words)


def best_key(keys: Iterable[str], words: set[str]) -> tuple[str | None, int]:
    """The key whose words best match; ties go to the catalogue's order (the primary one)."""
    best, best_score = None, -1
    for key in keys:
        score = key_score(key, words)
        if score > best_score:
            best, best_score = key, score
    return best, best_score


class Resolver:
    """Generic words -> services: the user's preferences, then the tenant's history, then the
    most common choice."""

    def __init__(self, catalogue: Catalogue, preferred: object, history: dict[str, int]):
        self.catalogue = catalogue
        self.history = history
        self.bound: dict[str, str] = {}
        """Generic kinds the preferences name ({"email": "outlook"})."""
        self.preferred = self._preferences(preferred)
        self.named: list[str] = []
        """Services the request itself names ("I run a small Etsy shop"): a generic word of
        their kind means them."""

    def _preferences(self, preferred: object) -> list[str]:
        slugs: list[str] = []
        items: list[tuple[str | None, object]] = []
        if isinstance(preferred, dict):
            items = list(preferred.items())
        elif isinstance(preferred, list | tuple):
            items = [(None, v) for v in preferred]
        for key, value in items:
            for candidate in value if isinstance(value, list) else [value]:
                slug = self._slug_of(candidate)
                if slug:
                    slugs.append(slug)
                    if key:
                        self._bind(key, slug)
        return slugs

    def _bind(self, key: object, slug: str) -> None:
        """A preference given as ``{"email": "outlook"}`` also binds that generic word."""
        if isinstance(key, str):
            kind = key.lower() if key.lower() in KINDS else None
            for name, words in GENERIC.items():
                if kind is None and key.lower() in words:
                    kind = name
            if kind:
                self.bound[kind] = slug

    def _slug_of(self, value: object) -> str | None:
        if not isinstance(value, str):
            return None
        text = value.strip().lower()
        if text in self.catalogue.services:
            return text
        for service in self.catalogue.services.values():
            if text == service.name.lower() or text in service.aliases:
                return service.slug
        return None

    def _fits(self, slug: str, kind: str, role: str) -> bool:
        service = self.catalogue.services[slug]
        if service.category not in KINDS.get(kind, (kind,)):
            return False
        return bool(service.triggers if role == "trigger" else service.actions)

    def resolve(self, kind: str, role: str, word: str) -> Choice:
        """The service a generic ``kind`` stands for, in ``role`` (trigger or action)."""
        bound = self.bound.get(kind)
        if bound and self._fits(bound, kind, role):
            return Choice(bound, 0.92, "preferred", kind, word)
        for slug in self.named:
            if self._fits(slug, kind, role):
                return Choice(slug, 0.85, "named", kind, word)
        for slug in self.preferred:
            if self._fits(slug, kind, role):
                return Choice(slug, 0.9, "preferred", kind, word)
        used = sorted(self.history.items(), key=lambda kv: -kv[1])
        for slug, _count in used:
            if slug in self.catalogue.services and self._fits(slug, kind, role):
                return Choice(slug, 0.8, "history", kind, word)
        default = DEFAULTS.get(kind)
        if default and self._fits(default, kind, role):
            return Choice(default, 0.6, "default", kind, word)
        for category in KINDS.get(kind, (kind,)):
            for service in self.catalogue.by_category(category):
                if self._fits(service.slug, kind, role):
                    return Choice(service.slug, 0.5, "default", kind, word)
        return Choice(default or "", 0.3, "default", kind, word)


_CUES: dict[str, list[list[str]]] = {}
for _cue in TRIGGER_CUES:
    _CUES.setdefault(_cue.split()[0], []).append(_cue.split())


def _cue_start(tokens: list[Token]) -> int | None:
    """The index of the first trigger cue ("when", "every time" ...), if any."""
    texts = [t.text for t in tokens]
    for i, word in enumerate(texts):
        for words in _CUES.get(word, ()):
            if texts[i : i + len(words)] == words:
                return i
    return None


def _regions(tokens: list[Token]) -> list[tuple[int, int]]:
    """Every clause opened by a cue, from the cue to the clause's end (or to an imperative
    verb that starts the actions), in order."""
    regions: list[tuple[int, int]] = []
    texts = [t.text for t in tokens]
    for i, word in enumerate(texts):
        if regions and i < regions[-1][1]:
            continue
        if any(texts[i : i + len(words)] == words for words in _CUES.get(word, ())):
            regions.append(_region_from(tokens, i))
    return regions


def _region_from(tokens: list[Token], start: int) -> tuple[int, int]:
    clause = tokens[start].clause
    end = start + 1
    while end < len(tokens) and tokens[end].clause == clause:
        if end > start + 1 and _starts_actions(tokens, end):
            break
        end += 1
    return start, end


def _starts_actions(tokens: list[Token], j: int) -> bool:
    """True when the word at ``j`` is an imperative verb that begins the actions."""
    word = tokens[j].text
    nxt = tokens[j + 1].text if j + 1 < len(tokens) else ""
    if word == "please" or (word in _ASKERS and nxt in _WISHES):
        return True  # "... I'd love to", "could you", "please": the request begins
    if word in {"wants", "needs", "would"} and tokens[j - 1].text not in {"who", "that"}:
        return True  # "... our manager wants an email about it"
    if word in IMPERATIVES:
        return tokens[j - 1].text not in _SUBJECTS
    if word in AMBIGUOUS_VERBS:
        return tokens[j - 1].text not in _DETERMINERS and (nxt in _OBJECTS or nxt.startswith("#"))
    return False


def _window(tokens: list[Token], mention: Mention) -> set[str]:
    return with_singulars({t.text for t in tokens if t.clause == mention.clause})


def with_singulars(words: set[str]) -> set[str]:
    """The words and their singulars ("notifications" also counts as "notification")."""
    return words | {w[:-1] for w in words if w.endswith("s") and len(w) > 3}


class Reader:
    """Turns tokens and mentions into a Reading."""

    def __init__(self, catalogue: Catalogue, resolver: Resolver):
        self.catalogue = catalogue
        self.resolver = resolver

    def _choice(self, tokens: list[Token], mention: Mention, role: str) -> Choice:
        if mention.slug:
            source = "fuzzy" if mention.how == "fuzzy" else "named"
            return Choice(mention.slug, mention.confidence, source)
        word = " ".join(t.raw for t in tokens[mention.start : mention.end])
        return self.resolver.resolve(mention.kind or "", role, word)

    def _can(self, tokens: list[Token], mention: Mention, role: str) -> bool:
        service = self._service(tokens, mention, role)
        return bool(service and (service.triggers if role == "trigger" else service.actions))

    def _service(self, tokens: list[Token], mention: Mention, role: str) -> Service | None:
        return self.catalogue.get(self._choice(tokens, mention, role).slug)

    def _trigger_score(self, tokens: list[Token], mention: Mention) -> int:
        """Evidence that a mention outside a cue clause names the source of the data."""
        before = [
            t.text
            for t in tokens[max(0, mention.start - 5) : mention.start]
            if t.clause == mention.clause and not t.text.startswith("#")
        ]
        after = [
            t.text for t in tokens[mention.end : mention.end + 3] if t.clause == mention.clause
        ]
        score = 0
        # "from X", "leads from our website through X"; but not "emails from my boss into X".
        last_from = max((i for i, w in enumerate(before) if w == "from"), default=-1)
        targets = [i for i, w in enumerate(before) if w in _DESTINATIONS]
        if (
            last_from >= len(before) - 4
            and last_from >= 0
            and not any(i > last_from for i in targets)
        ):
            score += 3
        if any(w in _OWNER_WORDS for w in before[-2:]):
            score += 2
        service = self._service(tokens, mention, "trigger")
        events = event_words(service) if service else frozenset()
        if "new" in before[-4:-2] and with_singulars(set(before[-3:])) & events:
            if not set(before) & ACTION_VERBS and not targets:
                score += 2  # "new paid invoices in Stripe"
        if set(before[-4:]) & _PERSONS:
            return score + 3  # "every link I post on Twitter": the user's own doing there
        if any(i >= len(before) - 2 for i in targets):
            score -= 3
        if any(w in TRIGGER_VERBS for w in after):
            score += 2
        if after and after[0] in events:
            score += 2
        return score

    def _pick_trigger(
        self,
        tokens: list[Token],
        mentions: list[Mention],
        scheduled: bool,
        region: tuple[int, int] | None,
        context: list[Mention],
    ) -> Mention | None:
        if region:
            inside = [
                m
                for m in mentions
                if region[0] <= m.start < region[1] and self._can(tokens, m, "trigger")
            ]
            if inside:
                # The first that can be a trigger, unless a named one fits the event clearly better.
                words = with_singulars({t.text for t in tokens[region[0] : region[1]]})
                first = inside[0]
                best = max(inside, key=lambda m: (self._event_score(tokens, m, words), -m.start))
                gain = self._event_score(tokens, best, words) - self._event_score(
                    tokens, first, words
                )
                return best if not best.generic and gain >= 2 else first
            # "Our team runs webinars on Zoom. After somebody registers, ...": the event is
            # of a service the scene named.
            words = with_singulars({t.text for t in tokens[region[0] : region[1]]})
            scored = [(self._event_score(tokens, m, words), m) for m in context]
            scored = [s for s in scored if s[0] > 0 and self._can(tokens, s[1], "trigger")]
            if scored:
                return max(scored, key=lambda s: s[0])[1]
        if scheduled:
            return None
        candidates = [m for m in mentions if self._can(tokens, m, "trigger")]
        ranked = [(self._trigger_score(tokens, m), -i, m) for i, m in enumerate(candidates)]
        ranked = [r for r in ranked if r[0] > 0]
        if ranked:
            return max(ranked, key=lambda r: (r[0], r[1]))[2]
        if len(mentions) >= 2 and candidates and candidates[0] is mentions[0]:
            previous = tokens[mentions[0].start - 1].text if mentions[0].start else ""
            if previous not in _TARGET_WORDS:
                return mentions[0]
        return None

    def _region(
        self, tokens: list[Token], mentions: list[Mention], scene: set[int]
    ) -> tuple[int, int] | None:
        """The cue clause that names the event: the first with a service that has events."""
        regions = _regions(tokens)
        for region in regions:
            for m in mentions:
                inside = region[0] <= m.start < region[1] and m.clause not in scene
                if inside and self._can(tokens, m, "trigger"):
                    return region
        return regions[0] if regions else None

    def _event_score(self, tokens: list[Token], mention: Mention, words: set[str]) -> int:
        service = self._service(tokens, mention, "trigger")
        return best_key(service.triggers, words)[1] if service else 0

    def read(self, tokens: list[Token], mentions: list[Mention], scheduled: bool) -> Reading:
        """The trigger (None: schedule or manual) and the actions, in the request's order."""
        self.resolver.named = [m.slug for m in mentions if m.slug]
        scene = filters.scene_setting(tokens, mentions)
        context = [m for m in mentions if m.slug and m.clause in scene]
        region = self._region(tokens, mentions, scene)
        mentions = filters.steps(tokens, mentions, self.catalogue, region)
        trigger_mention = self._pick_trigger(tokens, mentions, scheduled, region, context)
        if region and trigger_mention is not None:
            # Other generic words of the event's clause describe it ("when an invoice gets paid").
            mentions = [
                m
                for m in mentions
                if m is trigger_mention or not (m.generic and region[0] <= m.start < region[1])
            ]
        trigger = None
        if trigger_mention is not None:
            choice = self._choice(tokens, trigger_mention, "trigger")
            words = (
                {t.text for t in tokens[region[0] : region[1]]}
                if region and region[0] <= trigger_mention.start < region[1]
                else _window(tokens, trigger_mention)
            )
            service = self.catalogue.services[choice.slug]
            key, score = best_key(service.triggers, words)
            trigger = Step(trigger_mention, choice, key or "", 0.9 if score > 0 else 0.65)
        actions: list[Step] = []
        unsupported: list[tuple[Choice, str]] = []
        for m in mentions:
            if m is trigger_mention:
                continue
            choice = self._choice(tokens, m, "action")
            target = self.catalogue.get(choice.slug)
            if target is None or not target.actions:
                if target is not None:
                    unsupported.append((choice, "has no actions in the catalogue"))
                continue
            key, score = best_key(target.actions, _window(tokens, m))
            twin = next((a for a in actions if a.choice.slug == choice.slug), None)
            if twin is not None:
                if not (twin.mention.generic and not m.generic):
                    continue
                actions.remove(twin)  # the named one stands for it, where it is named
            actions.append(Step(m, choice, key or "", 0.9 if score > 0 else 0.7))
        if trigger is not None:
            actions = [
                a
                for a in actions
                if not (a.mention.generic and a.choice.slug == trigger.choice.slug)
            ]
        # A step that fetches data (a GET) runs before the steps that use it.
        actions.sort(key=lambda a: self._method(a) != "GET")
        return Reading(trigger, actions, unsupported)

    def _method(self, step: Step) -> str:
        return self.catalogue.services[step.choice.slug].actions[step.key].method
