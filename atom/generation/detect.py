"""Service mentions: the catalogue's names and aliases found in a request (longest phrase
first, fuzzy for typos), and the generic words ("email", "team chat") that stand for a kind
of service."""

from __future__ import annotations

from dataclasses import dataclass

from atom.catalogue import Catalogue, Service
from atom.generation.lexicon import GENERIC, KEY_WORDS, STOP
from atom.generation.text import Token, tokenize

PREPOSITIONS = frozenset(
    {"to", "on", "in", "into", "via", "from", "using", "with", "onto", "through", "over"}
)
_NOT_AFTER_PREP = frozenset(
    {
        "the",
        "a",
        "an",
        "this",
        "that",
        "it",
        "of",
        "out",
        "up",
        "my",
        "your",
        "our",
        "them",
        "down",
        "off",
        "and",
        "or",
    }
)
COMMON_WORDS = frozenset(
    """about above after again against alert alerts always another answer anyone anything around
    asked attach attached before below between bring build calls cancel change check clean clear
    close comes could create daily delete doesn during email every fetch first found friday
    going great happens having hello hours house later leave lines links little looks makes
    match means might money monday month morning never night notes number often order other
    people phone photo place plans please point posts print quick quite reach ready really
    remind reply right round saturday sales sends share sheet short should since slack small
    smart sorts sound space start state still stock store story sunday table taken teams thank
    their there these thing think those three through thursday times today total track trade
    tuesday under until update users using value video watch wednesday week weeks where which
    while white whole would write years""".split()
)
"""Ordinary words the fuzzy matcher must leave alone (a typo of a name is rarely a word)."""
PLAIN_WORD_SLUGS = frozenset({"monday", "atom", "stocks", "location", "webhook", "weather", "rss"})
"""Slugs that are ordinary words; the service is found by its name and aliases instead."""
BLOCKERS = (
    "team lead",
    "support lead",
    "tech lead",
    "project lead",
    "lead to",
    "leads to",
    "deal with",
    "dealt with",
    "in order to",
    "order to",
    "in order",
    "on order",
    "to do so",
    "task force",
    "the channel of",
    "text of",
    "text in",
    "text from",
    "full text",
)
"""Phrases that look like generic words and are not ("the support lead" is a person)."""
STRICT_ALIASES = frozenset(
    {
        "teams",
        "excel",
        "x",
        "wise",
        "echo",
        "nest",
        "messenger",
        "hue",
        "planner",
        "threads",
        "paper",
        "gong",
    }
)
"""Single-word aliases of ordinary services that are also ordinary words."""


@dataclass(frozen=True)
class Mention:
    """A service (``slug``) or a kind of service (``kind``) named at tokens [start, end)."""

    start: int
    end: int
    clause: int
    slug: str | None = None
    kind: str | None = None
    confidence: float = 1.0
    how: str = "alias"
    """name, alias, fuzzy or generic."""

    @property
    def generic(self) -> bool:
        """True for a kind of service rather than a named one."""
        return self.slug is None


def _distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein distance (optimal string alignment), cut off above ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[-1]


def _limit(length: int) -> int:
    return 1 if length < 9 else 2


_GENERAL = frozenset(
    """new every each any whenever added created arrives add create make start open update
    updates change set send sends get gets save keep read later back to in on the a""".split()
)


def _vocabulary(service: Service) -> frozenset[str]:
    """The nouns of a service's own triggers and actions ("photos", "bookings", "folder")."""
    keys = [*service.triggers, *service.actions]
    words = {w for key in keys for part in key.split("_") for w in KEY_WORDS.get(part, (part,))}
    return frozenset(words - _GENERAL)


def _words(text: str) -> tuple[str, ...]:
    return tuple(t.text for t in tokenize(text))


@dataclass(frozen=True)
class _Phrase:
    slug: str
    how: str
    strict: bool


class Detector:
    """Finds mentions; built once per catalogue (a few milliseconds), then reused."""

    def __init__(self, catalogue: Catalogue):
        self.catalogue = catalogue
        self.phrases: dict[tuple[str, ...], _Phrase] = {}
        for service in catalogue.services.values():
            self._index_service(service)
        for words, slug in self._variants().items():
            self.phrases.setdefault(words, _Phrase(slug, "alias", False))
        self.generic: dict[tuple[str, ...], str] = {}
        for kind, words in GENERIC.items():
            for text in words:
                self.generic.setdefault(_words(text), kind)
        for text in BLOCKERS:
            self.generic[_words(text)] = ""
        self.longest = max(len(p) for p in [*self.phrases, *self.generic])
        self.vocabulary = {s.slug: _vocabulary(s) for s in catalogue.services.values()}
        self.known = STOP | COMMON_WORDS | {w for ws in KEY_WORDS.values() for w in ws}
        self.known |= {w for p in self.generic for w in p}
        self.singles: dict[tuple[str, int], list[tuple[str, ...]]] = {}
        self.multis: dict[str, list[tuple[str, ...]]] = {}
        for words, phrase in self.phrases.items():
            if phrase.strict:
                continue
            if len(words) == 1 and len(words[0]) >= 4:
                self.singles.setdefault((words[0][:1], len(words[0])), []).append(words)
            elif len(words) > 1:
                self.multis.setdefault(words[0], []).append(words)

    def _index_service(self, service: Service) -> None:
        names = [(service.name.lower(), "name")]
        if service.slug not in PLAIN_WORD_SLUGS:
            names.append((service.slug.replace("_", " "), "name"))
        names += [(alias, "alias") for alias in service.aliases]
        for text, how in names:
            words = _words(text)
            if not words or words in self.phrases:
                continue
            short = len(words) == 1 and (len(words[0]) <= 2 or words[0] in STRICT_ALIASES)
            strict = len(words) == 1 and (service.strict or short)
            self.phrases[words] = _Phrase(service.slug, how, strict)

    def _variants(self) -> dict[tuple[str, ...], str]:
        """ "microsoft form" for "microsoft forms", and back, where that names nothing else."""
        variants: dict[tuple[str, ...], str] = {}
        for words, phrase in self.phrases.items():
            if len(words) > 1:
                last = words[-1]
                variant = words[:-1] + ((last[:-1],) if last.endswith("s") else (last + "s",))
                variants.setdefault(variant, phrase.slug)
        return variants

    def _strict_ok(self, tokens: list[Token], i: int, n: int, title_case: bool, slug: str) -> bool:
        raw = tokens[i].raw
        after = tokens[i + n].text if i + n < len(tokens) else ""
        if after and after in self.vocabulary[slug]:
            return True  # "Pocket articles", "Box folder": the service's own nouns
        if len(raw) <= 2:
            if raw.isupper():
                return True
        elif (
            raw[:1].isupper()
            and not title_case
            and i > 0
            and tokens[i - 1].clause == tokens[i].clause
        ):
            return True
        before = tokens[i - 1].text if i > 0 else ""
        after = tokens[i + n].text if i + n < len(tokens) else ""
        return before in PREPOSITIONS and after not in _NOT_AFTER_PREP

    def _exact(self, tokens: list[Token], i: int, title_case: bool) -> Mention | None:
        for n in range(min(self.longest, len(tokens) - i), 0, -1):
            words = tuple(t.text for t in tokens[i : i + n])
            phrase = self.phrases.get(words)
            if phrase and (
                not phrase.strict or self._strict_ok(tokens, i, n, title_case, phrase.slug)
            ):
                confidence = 0.97 if phrase.how == "name" else 0.93
                return Mention(
                    i,
                    i + n,
                    tokens[i].clause,
                    slug=phrase.slug,
                    confidence=confidence,
                    how=phrase.how,
                )
            if n == 2 and (words[0] + words[1],) in self.phrases:
                phrase = self.phrases[(words[0] + words[1],)]
                return Mention(
                    i, i + 2, tokens[i].clause, slug=phrase.slug, confidence=0.9, how="alias"
                )
            kind = self.generic.get(words)
            if kind is not None:
                how = "generic" if kind else "blocked"
                return Mention(i, i + n, tokens[i].clause, kind=kind, confidence=0.6, how=how)
        return None

    def _fuzzy_candidates(self, tokens: list[Token], i: int) -> list[tuple[str, ...]]:
        word = tokens[i].text
        found = []
        for words in self.multis.get(word, ()):
            n = len(words)
            rest = [t.text for t in tokens[i + 1 : i + n]]
            # Only a word that is no ordinary word may be a typo: "google sheeets", not "open a".
            if len(rest) == n - 1 and all(
                r == w or (len(r) >= 4 and r not in self.known)
                for r, w in zip(rest, words[1:], strict=True)
            ):
                found.append(words)
        if len(word) >= 4 and word not in self.known and word[:1].isalpha():
            for length in range(len(word) - 2, len(word) + 3):
                found += self.singles.get((word[:1], length), ())
        return found

    def _fuzzy(self, tokens: list[Token], i: int) -> Mention | None:
        best: tuple[int, int, tuple[str, ...]] | None = None
        for words in self._fuzzy_candidates(tokens, i):
            n = len(words)
            seen = " ".join(t.text for t in tokens[i : i + n])
            target = " ".join(words)
            limit = _limit(len(target))
            d = _distance(seen, target, limit)
            if 0 < d <= limit and (best is None or (d, -n) < (best[0], -best[1])):
                best = (d, n, words)
        if best is None:
            return None
        d, n, words = best
        phrase = self.phrases[words]
        return Mention(
            i, i + n, tokens[i].clause, slug=phrase.slug, confidence=0.8 - 0.1 * d, how="fuzzy"
        )

    def mentions(self, tokens: list[Token], title_case: bool) -> list[Mention]:
        """Every mention, in the order of the text; no two overlap."""
        found: list[Mention] = []
        i = 0
        while i < len(tokens):
            mention = self._exact(tokens, i, title_case) or self._fuzzy(tokens, i)
            if mention is None:
                i += 1
                continue
            if mention.how != "blocked":
                found.append(mention)
            i = mention.end
        return found
