"""/api/credentials, /api/keys, /api/settings and /api/audit: the vault, key management,
tenant settings and the audit log (API.md "Security")."""

from __future__ import annotations

import uuid
from typing import Any

from flask import url_for
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import INCLUDE, Schema, fields

from api.context import page_of, require, session, state, tenant_id
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


class CredentialInSchema(Schema):
    """A credential to store (checked in full by ``atom.security.vault``)."""

    class Meta:
        unknown = INCLUDE

    name = fields.Raw(metadata={"description": "letters, digits, _; 1-64"})
    value = fields.Raw(metadata={"description": "a string or an object; never shown again"})
    type = fields.Raw(metadata={"description": "secret, token, basic, dsn, smtp or object"})
    description = fields.Raw()


class KeyInSchema(Schema):
    """A key to create."""

    class Meta:
        unknown = INCLUDE

    name = fields.Raw()
    role = fields.Raw(metadata={"description": "viewer, operator, editor or admin"})
    expires_at = fields.Raw(metadata={"description": "ISO 8601 with a timezone"})
    expires_in = fields.Raw(metadata={"description": "seconds"})


class SettingsSchema(Schema):
    """Tenant settings."""

    class Meta:
        unknown = INCLUDE

    email_allowed_domains = fields.List(
        fields.Raw(), metadata={"description": "domains email may go to (and their subdomains)"}
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
    @credentials_blp.arguments(CredentialInSchema)
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
