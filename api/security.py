"""/api/credentials, /api/keys, /api/settings and /api/audit: the vault, key management,
tenant settings and the audit log (API.md "Security")."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from api.context import page_of, require, session, state, tenant_id
from atom.errors import InvalidInput, flatten
from atom.security import audit, auth, vault
from atom.security import settings as tenant_settings
from atom.security.auth import Role

credentials_blp = Blueprint(
    "credentials",
    __name__,
    url_prefix="/api/credentials",
    description="The credential vault: secrets steps use, encrypted, never shown again.",
)
keys_blp = Blueprint(
    "keys", __name__, url_prefix="/api/keys", description="API keys of the tenant (admin)."
)
settings_blp = Blueprint(
    "settings", __name__, url_prefix="/api/settings", description="Tenant settings (admin)."
)
audit_blp = Blueprint(
    "audit", __name__, url_prefix="/api/audit", description="Who changed what, and when (admin)."
)
blueprints = (credentials_blp, keys_blp, settings_blp, audit_blp)


class CredentialSchema(Schema):
    """A credential without its value."""

    id = fields.String()
    name = fields.String()
    type = fields.String()
    description = fields.String()
    created_at = fields.String(allow_none=True)
    updated_at = fields.String(allow_none=True)


class KeySchema(Schema):
    """A key without its secret."""

    id = fields.String()
    name = fields.String()
    role = fields.String()
    prefix = fields.String()
    created_at = fields.String(allow_none=True)
    expires_at = fields.String(allow_none=True)
    last_used_at = fields.String(allow_none=True)
    revoked = fields.Boolean()
    revoked_at = fields.String(allow_none=True)


class NewKeySchema(KeySchema):
    """A new key, with its secret shown this once."""

    key = fields.String()


class _StrictBody(Schema):
    """A request body whose OpenAPI schema is as strict as the server: unknown fields are
    refused, and every problem is a 422 in the API's shape (``{field: [problems]}``)."""

    class Meta:
        unknown = RAISE

    def handle_error(self, error: ValidationError, data: Any, **kwargs: Any) -> None:
        raise InvalidInput(flatten(error.messages)) from error


def _matching(test: Callable[[str], Any], error: str) -> Callable[[str], None]:
    """A validator: ``test`` must pass on the whole value (a ``pattern`` in the document
    says the same; ``validate.Regexp`` would let a trailing newline through ``$``)."""

    def check(value: str) -> None:
        if not test(value):
            raise ValidationError(error)

    return check


class CredentialValue(fields.Field):
    """A credential's value: a non-empty string, or an object of strings, integers and
    booleans."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if problem := vault.value_problem(value):
            raise ValidationError(problem)
        return value


_VALUE_DOC = {
    "description": "a string or an object (e.g. {username, password}); never shown again",
    "oneOf": [
        {"type": "string", "minLength": 1, "maxLength": vault.MAX_VALUE_CHARS},
        {
            "type": "object",
            "minProperties": 1,
            "maxProperties": vault.MAX_VALUE_FIELDS,
            "additionalProperties": {
                "oneOf": [
                    {"type": "string", "maxLength": vault.MAX_FIELD_CHARS},
                    {"type": "integer"},
                    {"type": "boolean"},
                ]
            },
        },
    ],
}


class CredentialInSchema(_StrictBody):
    """A credential to store (``PUT``: any of the fields; the value is replaced)."""

    name = fields.String(
        required=True,
        validate=_matching(
            vault.NAME.fullmatch, "must be 1-64 letters, digits or underscores, not a digit first"
        ),
        metadata={
            "pattern": vault.NAME.pattern,
            "description": "letters, digits, _; 1-64, not starting with a digit",
        },
    )
    value = CredentialValue(required=True, metadata=_VALUE_DOC)
    type = fields.String(validate=validate.OneOf(vault.TYPES))
    description = fields.String(validate=validate.Length(max=1000))


class CredentialChangeSchema(CredentialInSchema):
    """A credential's new value, type or description (every field optional)."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("partial", True)
        super().__init__(**kwargs)


class KeyInSchema(_StrictBody):
    """A key to create: ``expires_at`` or ``expires_in``, not both (none: it never expires)."""

    name = fields.String(validate=validate.Length(max=200))
    role = fields.String(required=True, validate=validate.OneOf([r.value for r in Role]))
    expires_at = fields.String(
        metadata={
            "format": auth.FUTURE_TIME_FORMAT,
            "description": "ISO 8601 with a timezone, in the future (e.g. 2030-01-31T00:00:00Z)",
        }
    )
    expires_in = fields.Integer(
        strict=True,
        validate=validate.Range(1, int(auth.MAX_KEY_LIFETIME.total_seconds())),
        metadata={"description": "seconds, up to 10 years"},
    )

    @validates_schema
    def _one_expiry(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "expires_at" in data and "expires_in" in data:
            raise ValidationError("give expires_at or expires_in, not both", "expires_at")


def document(spec: Any) -> None:
    """Register the request bodies whose document says more than their fields: a key takes
    ``expires_at`` or ``expires_in``, not both. (Call before the blueprints register.)"""
    spec.components.schema(
        "KeyIn", {"not": {"required": ["expires_at", "expires_in"]}}, schema=KeyInSchema
    )


class SettingsSchema(_StrictBody):
    """Tenant settings (replaced as a whole)."""

    email_allowed_domains = fields.List(
        fields.String(
            validate=_matching(tenant_settings.domain_ok, "must be a domain such as example.com"),
            metadata={"pattern": tenant_settings.DOMAIN_PATTERN},
        ),
        validate=validate.Length(max=tenant_settings.MAX_DOMAINS),
        metadata={"description": "domains email may go to (and their subdomains)"},
    )


class AuditSchema(Schema):
    """One audit entry."""

    id = fields.Integer()
    at = fields.String()
    key_id = fields.String(allow_none=True)
    action = fields.String()
    target_type = fields.String()
    target_id = fields.String(allow_none=True)
    client = fields.String(allow_none=True)
    status = fields.Integer()


class AuditArgs(Schema):
    """Filters."""

    action = fields.String()
    target_type = fields.String()
    target_id = fields.String()
    key_id = fields.UUID()
    since = fields.AwareDateTime()


@credentials_blp.route("")
class CredentialCollection(MethodView):
    """The tenant's credentials."""

    @require(Role.EDITOR)
    @credentials_blp.response(200, CredentialSchema(many=True))
    @credentials_blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, pagination_parameters: Any):
        """List credentials (names and types, never values)."""
        query = vault.list_query(tenant_id())
        return [vault.view(c) for c in page_of(session(), query, pagination_parameters)]

    @require(Role.EDITOR)
    @credentials_blp.arguments(CredentialInSchema)
    @credentials_blp.response(201, CredentialSchema)
    @credentials_blp.alt_response(409, description="A credential with this name exists")
    def post(self, body: dict[str, Any]):
        """Store a credential: `{name, value, type?, description?}`; the value is encrypted
        and never returned."""
        db = session()
        credential = vault.create(db, tenant_id(), body, state().settings.secret_key)
        db.commit()
        location = url_for("credentials.CredentialItem", name=credential.name)
        return vault.view(credential), 201, {"Location": location}


@credentials_blp.route("/<string:name>")
class CredentialItem(MethodView):
    """One credential, by name."""

    @require(Role.EDITOR)
    @credentials_blp.response(200, CredentialSchema)
    def get(self, name: str):
        """The credential without its value."""
        return vault.view(vault.get(session(), tenant_id(), name))

    @require(Role.EDITOR)
    @credentials_blp.arguments(CredentialChangeSchema)
    @credentials_blp.response(200, CredentialSchema)
    def put(self, body: dict[str, Any], name: str):
        """Replace the value (and type or description)."""
        db = session()
        credential = vault.replace_value(db, tenant_id(), name, body, state().settings.secret_key)
        db.commit()
        return vault.view(credential)

    @require(Role.EDITOR)
    @credentials_blp.response(204)
    def delete(self, name: str):
        """Delete it; workflows still referencing it fail with a clear error."""
        db = session()
        vault.delete(db, tenant_id(), name)
        db.commit()


@keys_blp.route("")
class KeyCollection(MethodView):
    """The tenant's API keys."""

    @require(Role.ADMIN)
    @keys_blp.response(200, KeySchema(many=True))
    @keys_blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, pagination_parameters: Any):
        """List keys (never their secrets)."""
        query = auth.list_query(tenant_id())
        return [auth.key_view(k) for k in page_of(session(), query, pagination_parameters)]

    @require(Role.ADMIN)
    @keys_blp.arguments(KeyInSchema)
    @keys_blp.response(201, NewKeySchema)
    def post(self, body: dict[str, Any]):
        """Create a key `{name, role, expires_at? | expires_in?}`; its secret is shown once."""
        db = session()
        name, role, expires_at = auth.parse_key_request(body)
        record, key = auth.issue_key(db, tenant_id(), role, name, expires_at)
        db.commit()
        location = url_for("keys.KeyItem", key_id=record.id)
        return {**auth.key_view(record), "key": key}, 201, {"Location": location}


@keys_blp.route("/<uuid:key_id>")
class KeyItem(MethodView):
    """One key."""

    @require(Role.ADMIN)
    @keys_blp.response(200, KeySchema)
    def get(self, key_id: uuid.UUID):
        """The key, without its secret."""
        return auth.key_view(auth.get_key(session(), tenant_id(), key_id))

    @require(Role.ADMIN)
    @keys_blp.response(204)
    def delete(self, key_id: uuid.UUID):
        """Revoke the key: it is refused from its next request on."""
        db = session()
        auth.revoke_key(db, tenant_id(), key_id)
        db.commit()
        # Every API process empties its key cache on its next request (auth.KeyCache).
        state().keys.forget_all()
        state().limits.bump(auth.REVOCATIONS_KEY)


@settings_blp.route("")
class Settings(MethodView):
    """Tenant settings: `email_allowed_domains`."""

    @require(Role.ADMIN)
    @settings_blp.response(200, SettingsSchema)
    def get(self):
        """The tenant's settings."""
        return tenant_settings.get(session(), tenant_id())

    @require(Role.ADMIN)
    @settings_blp.arguments(SettingsSchema)
    @settings_blp.response(200, SettingsSchema)
    def put(self, body: dict[str, Any]):
        """Replace the tenant's settings, e.g. `{email_allowed_domains: ["example.com"]}`."""
        db = session()
        doc = tenant_settings.put(db, tenant_id(), body)
        db.commit()
        return doc


@audit_blp.route("")
class AuditLog(MethodView):
    """The tenant's audit log, newest first."""

    @require(Role.ADMIN)
    @audit_blp.arguments(AuditArgs, location="query")
    @audit_blp.response(200, AuditSchema(many=True))
    @audit_blp.paginate(page=1, page_size=20, max_page_size=100)
    def get(self, args: dict[str, Any], pagination_parameters: Any):
        """Entries filtered by action, target_type, target_id, key_id and since."""
        query = audit.query(tenant_id(), args)
        return [audit.view(e) for e in page_of(session(), query, pagination_parameters)]
