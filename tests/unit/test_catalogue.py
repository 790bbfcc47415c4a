"""The service catalogue: enough real services, unique slugs, aliases that name one service
each, and every action renders to a step that the workflow validator accepts."""

from __future__ import annotations

from collections import defaultdict

import pytest

from atom.catalogue import Catalogue, build_step, load, parse
from atom.generation.detect import Detector
from atom.generation.lexicon import DEFAULTS, GENERIC, KINDS
from atom.generation.text import tokenize
from atom.workflow.definition import parse_definition

ROLES = {
    role: "{{ input.%s }}" % role  # noqa: UP031
    for role in ("title", "text", "to", "email", "name", "company", "amount", "url", "id", "date")
}
ROLES.update(start="{{ input.start }}", end="{{ input.end }}", phone="{{ input.phone }}")
ROLES["data"] = "{{ input }}"


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load()


def test_at_least_180_services_in_every_kind_of_category(catalogue: Catalogue):
    assert len(catalogue.services) >= 180
    for category in (
        "email",
        "chat",
        "crm",
        "tasks",
        "storage",
        "calendar",
        "forms",
        "payments",
        "dev",
        "databases",
        "marketing",
        "support",
    ):
        assert len(catalogue.by_category(category)) >= 3, category


def test_every_service_is_complete(catalogue: Catalogue):
    for service in catalogue.services.values():
        assert service.slug and service.slug == service.slug.lower(), service.slug
        assert service.name and service.category, service.slug
        assert service.triggers or service.actions, (
            f"{service.slug} has neither triggers nor actions"
        )
        if service.actions and service.slug != "atom":
            assert service.base_url.startswith("https://"), service.slug


def test_a_duplicate_slug_is_refused():
    text = (
        "- {slug: a, name: A, cat: chat, auth: none}\n- {slug: a, name: B, cat: chat, auth: none}\n"
    )
    with pytest.raises(ValueError, match="duplicate slug 'a'"):
        parse(text)


def test_an_unknown_auth_type_is_refused():
    with pytest.raises(ValueError, match="auth must be one of"):
        parse("- {slug: a, name: A, cat: chat, auth: magic}\n")


def test_names_and_aliases_name_one_service_each(catalogue: Catalogue):
    owners: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for service in catalogue.services.values():
        for text in (service.name.lower(), *service.aliases):
            owners[tuple(t.text for t in tokenize(text))].add(service.slug)
    collisions = {" ".join(k): sorted(v) for k, v in owners.items() if len(v) > 1}
    assert collisions == {}


def test_a_generic_word_that_is_also_a_plain_alias_means_that_service(catalogue: Catalogue):
    """Where a generic word is also a service's alias, the alias wins; it must then be the
    service the generic word would have meant anyway (strict aliases need a capital)."""
    detector = Detector(catalogue)
    clashes = []
    for kind, words in GENERIC.items():
        for word in words:
            phrase = detector.phrases.get(tuple(t.text for t in tokenize(word)))
            if phrase and not phrase.strict and phrase.slug != DEFAULTS[kind]:
                clashes.append((word, phrase.slug, kind))
    assert clashes == []


def test_every_default_exists_and_fits_its_kind(catalogue: Catalogue):
    for kind, slug in DEFAULTS.items():
        service = catalogue.get(slug)
        assert service is not None, slug
        assert service.category in KINDS[kind], (kind, slug)


def _workflow(config: dict) -> dict:
    return {
        "name": "catalogue step",
        "nodes": [
            {"id": "start", "type": "trigger", "config": {"kind": "manual"}},
            {"id": "step", "type": "action", "config": config},
        ],
        "connections": [{"source": "start", "target": "step"}],
    }


def test_every_action_renders_to_a_valid_step(catalogue: Catalogue):
    rendered = 0
    for service in catalogue.services.values():
        for operation in service.actions.values():
            config, asked = build_step(service, operation, ROLES)
            parse_definition(_workflow(config))  # raises DefinitionError with every problem
            assert set(asked) <= set(operation.asks()), (service.slug, operation.key)
            if operation.atom_action is None:
                assert config["url"].startswith(service.base_url.rstrip("/")), service.slug
                assert (
                    "{" not in config["url"].replace("{{", "").replace("}}", "")[8:]
                    or "{{" in config["url"]
                )
                if service.auth.type != "none":
                    headers = " ".join(config.get("headers", {}).values()) + config["url"]
                    assert f"credentials.{service.slug}" in headers, service.slug
            rendered += 1
    assert rendered >= 300


def test_a_base_url_points_every_service_elsewhere(catalogue: Catalogue):
    slack = catalogue.services["slack"]
    config, asked = build_step(
        slack,
        slack.actions["send_message"],
        {"text": "hi"},
        {"channel": "#ops"},
        "http://127.0.0.1:9/slack",
    )
    assert config["url"] == "http://127.0.0.1:9/slack/chat.postMessage"
    assert config["json"] == {"channel": "#ops", "text": "hi"}
    assert config["headers"] == {"Authorization": "Bearer {{ credentials.slack }}"}
    assert asked == []


def test_path_parameters_fill_the_path_and_leave_the_body(catalogue: Catalogue):
    github = catalogue.services["github"]
    config, asked = build_step(
        github,
        github.actions["create_issue"],
        {"title": "{{ input.subject }}", "text": "b"},
        {"owner": "acme", "repo": "web"},
    )
    assert config["url"] == "https://api.github.com/repos/acme/web/issues"
    assert config["json"] == {"title": "{{ input.subject }}", "body": "b"}
    assert asked == []
    _config, asked = build_step(github, github.actions["create_issue"], {})
    assert asked == ["owner", "repo"]


def test_a_get_action_sends_its_parameters_as_the_query(catalogue: Catalogue):
    clearbit = catalogue.services["clearbit"]
    config, _ = build_step(
        clearbit, clearbit.actions["enrich_person"], {"email": "{{ input.email }}"}
    )
    assert config["method"] == "GET" and config["params"] == {"email": "{{ input.email }}"}
    assert "json" not in config


def test_the_view_has_the_contract_shape(catalogue: Catalogue):
    view = catalogue.services["gmail"].view()
    assert set(view) == {"slug", "name", "category", "aliases", "triggers", "actions", "auth"}
    assert {"key", "name", "description"} <= set(view["triggers"][0])
    assert {"key", "name", "description", "params"} <= set(view["actions"][0])
    assert view["auth"] == {"type": "oauth2"}


def test_search_by_alias_and_category(catalogue: Catalogue):
    assert [s.slug for s in catalogue.search("gcal")] == ["google_calendar"]
    assert {s.slug for s in catalogue.search(category="chat")} >= {
        "slack",
        "microsoft_teams",
        "discord",
    }
    assert catalogue.search("no-such-service") == []
