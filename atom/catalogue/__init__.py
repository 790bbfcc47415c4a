"""The service catalogue: 180+ real services kept as package data (``services.yaml``), each
with its aliases, triggers, actions and the step each action becomes.

``load()`` reads and checks the file once per process; a broken entry fails loudly with the
entry it is about.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from atom.catalogue.model import (
    AUTH_TYPES,
    Auth,
    Operation,
    Service,
    Trigger,
    build_step,
    make_operation,
    make_trigger,
)

__all__ = ["Auth", "Catalogue", "Operation", "Service", "Trigger", "build_step", "load"]


@dataclass(frozen=True)
class Catalogue:
    """Every service, by slug, in the file's order."""

    services: dict[str, Service]

    def get(self, slug: str) -> Service | None:
        """One service, or None."""
        return self.services.get(slug)

    def by_category(self, category: str) -> list[Service]:
        """The services of a category, in catalogue order."""
        return [s for s in self.services.values() if s.category == category]

    def categories(self) -> list[str]:
        """Every category, sorted."""
        return sorted({s.category for s in self.services.values()})

    def search(self, q: str | None = None, category: str | None = None) -> list[Service]:
        """Services whose slug, name or an alias contains ``q``, optionally of a category."""
        found = []
        needle = (q or "").strip().lower()
        for service in self.services.values():
            if category and service.category != category:
                continue
            names = (service.slug, service.name.lower(), *service.aliases)
            if needle and not any(needle in n for n in names):
                continue
            found.append(service)
        return found


def _auth(raw: Any, slug: str) -> Auth:
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict) or raw.get("type") not in AUTH_TYPES:
        raise ValueError(f"catalogue: {slug}: auth must be one of {', '.join(AUTH_TYPES)}")
    return Auth(type=raw["type"], header=raw.get("header"))


def _service(raw: dict[str, Any]) -> Service:
    slug = raw["slug"]
    return Service(
        slug=slug,
        name=raw["name"],
        category=raw["cat"],
        aliases=tuple(str(a).lower() for a in raw.get("aliases") or ()),
        auth=_auth(raw.get("auth", "none"), slug),
        base_url=str(raw.get("base", "")),
        triggers={k: make_trigger(k, {}) for k in raw.get("triggers") or ()},
        actions={
            k: make_operation(k, spec, raw["name"])
            for k, spec in (raw.get("actions") or {}).items()
        },
        strict=bool(raw.get("strict", False)),
    )


def parse(text: str) -> Catalogue:
    """A catalogue from the YAML text of ``services.yaml``."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    entries = yaml.load(text, Loader=loader)
    services: dict[str, Service] = {}
    for i, raw in enumerate(entries):
        try:
            service = _service(raw)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"catalogue entry {i} ({raw.get('slug', '?')}): {e}") from e
        if service.slug in services:
            raise ValueError(f"catalogue: duplicate slug {service.slug!r}")
        services[service.slug] = service
    return Catalogue(services=services)


@cache
def load() -> Catalogue:
    """The catalogue shipped with the package (read once per process)."""
    text = resources.files("atom.catalogue").joinpath("services.yaml").read_text("utf-8")
    return parse(text)
