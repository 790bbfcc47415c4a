"""/api/services: the service catalogue (read-only)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from api.context import require
from atom.catalogue import load
from atom.errors import NotFound
from atom.security.auth import Role

blp = Blueprint(
    "services",
    __name__,
    url_prefix="/api/services",
    description="The catalogue of services workflows can be generated for.",
)


class ServiceListArgs(Schema):
    """Filters for the catalogue."""

    q = fields.String(metadata={"description": "Part of the slug, name or an alias"})
    category = fields.String(metadata={"description": "One category, e.g. chat, crm, email"})


class ServiceSchema(Schema):
    """One service: its names, triggers, actions and auth type."""

    slug = fields.String()
    name = fields.String()
    category = fields.String()
    aliases = fields.List(fields.String())
    triggers = fields.List(fields.Dict())
    actions = fields.List(fields.Dict())
    auth = fields.Dict()


@blp.route("")
class ServiceCollection(MethodView):
    """The catalogue."""

    @require(Role.VIEWER)
    @blp.arguments(ServiceListArgs, location="query")
    @blp.response(200, ServiceSchema(many=True))
    @blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, args: dict[str, Any], pagination_parameters: Any):
        """Services in catalogue order; ``?q=`` and ``?category=`` filter."""
        found = load().search(args.get("q"), args.get("category"))
        pagination_parameters.item_count = len(found)
        first = pagination_parameters.first_item
        return [s.view() for s in found[first : first + pagination_parameters.page_size]]


@blp.route("/<string:slug>")
class ServiceItem(MethodView):
    """One service."""

    @require(Role.VIEWER)
    @blp.response(200, ServiceSchema)
    def get(self, slug: str):
        """The service with this slug."""
        service = load().get(slug)
        if service is None:
            raise NotFound(f"No service {slug!r} in the catalogue; GET /api/services lists them.")
        return service.view()
