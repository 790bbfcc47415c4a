"""The credential vault: secrets a tenant's steps use, encrypted at rest with Fernet.

Keys come from ``ATOM_SECRET_KEY``: one or more secrets separated by commas, newest first.
Each is stretched to a Fernet key with HKDF-SHA256; values are encrypted with the first and
decrypted with any (``MultiFernet``). To rotate: put the new secret in front
(``ATOM_SECRET_KEY=new,old``), run ``atom credentials rotate-key`` (every value re-encrypted
with the new key), then drop the old one.

Values are never returned by the API after they are written, never logged (a worker that
decrypts one masks it in its log lines, ``atom.security.redaction.remember``) and read ``***``
in step inputs and outputs. Steps reference them as ``{{ credentials.NAME }}`` (``.field``
for objects) or, on an http step, ``auth: {credential: NAME}``; a reference to a credential
that does not exist is refused when the workflow is saved.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from atom.clock import now
from atom.errors import Conflict, InvalidInput, NotFound, PermanentError
from atom.security import redaction
from atom.store.models import Credential

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
TYPES = ("secret", "token", "basic", "dsn", "smtp", "object")
MAX_VALUE_CHARS = 16 * 1024
"""A string value's length at most (a PEM key or a long DSN fits)."""
MAX_VALUE_FIELDS = 32
MAX_FIELD_CHARS = 4096
"""An object value: at most this many fields, each a string of at most this length, an
integer or a boolean (``{username, password}``, a DSN's parts)."""
_REFERENCE = re.compile(
    r"credentials\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*['\"]([A-Za-z_][A-Za-z0-9_]*)['\"]\s*\])"
)
_SALT = b"atom-credential-vault-v1"


class VaultUnavailable(PermanentError):
    """``ATOM_SECRET_KEY`` is not set: nothing can be encrypted or decrypted."""


def _fernet_key(secret: str) -> bytes:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=b"fernet").derive(
        secret.encode()
    )
    return base64.urlsafe_b64encode(derived)


def cipher(secret_key: str | None) -> MultiFernet:
    """The MultiFernet of ``ATOM_SECRET_KEY`` (newest secret first)."""
    secrets = [s.strip() for s in (secret_key or "").split(",") if s.strip()]
    if not secrets:
        raise VaultUnavailable(
            "the credential vault needs ATOM_SECRET_KEY (a long random secret) to be set"
        )
    return MultiFernet([Fernet(_fernet_key(s)) for s in secrets])


def encrypt(value: Any, secret_key: str | None) -> str:
    """A Fernet token of ``value`` (JSON)."""
    return cipher(secret_key).encrypt(json.dumps(value).encode()).decode()


def decrypt(token: str, secret_key: str | None) -> Any:
    """The value of a Fernet token; PermanentError if no configured key opens it."""
    try:
        return json.loads(cipher(secret_key).decrypt(token.encode()))
    except InvalidToken as e:
        raise PermanentError(
            "a credential cannot be decrypted with ATOM_SECRET_KEY (was the key changed "
            "without keeping the old one after it?)"
        ) from e


def value_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a credential's value, or None."""
    if isinstance(value, str):
        if not 1 <= len(value) <= MAX_VALUE_CHARS:
            return f"a string value must have 1 to {MAX_VALUE_CHARS} characters"
        return None
    if isinstance(value, dict):
        if not 1 <= len(value) <= MAX_VALUE_FIELDS:
            return f"an object value must have 1 to {MAX_VALUE_FIELDS} fields"
        for v in value.values():
            if isinstance(v, str) and len(v) <= MAX_FIELD_CHARS:
                continue
            if isinstance(v, int):  # booleans too (a DSN's allow_write)
                continue
            return (
                f"an object's fields must be strings of at most {MAX_FIELD_CHARS} characters, "
                "integers or booleans"
            )
        return None
    return "must be a non-empty string or object"


def _check(doc: Any, partial: bool = False) -> dict[str, Any]:
    problems: dict[str, list[str]] = {}
    if not isinstance(doc, dict):
        raise InvalidInput({"body": ["must be an object {name, value, type?, description?}"]})
    known = {"name", "value", "type", "description"}
    for key in set(doc) - known:
        problems.setdefault(key, []).append("is not a field of a credential")
    name = doc.get("name")
    if not partial and (not isinstance(name, str) or not NAME.fullmatch(name)):
        problems.setdefault("name", []).append(
            "must be 1-64 letters, digits or underscores, not starting with a digit"
        )
    value = doc.get("value")
    if "value" not in doc and not partial:
        problems.setdefault("value", []).append("is required")
    elif "value" in doc and (problem := value_problem(value)):
        problems.setdefault("value", []).append(problem)
    kind = doc.get("type", "secret")
    if kind not in TYPES:
        problems.setdefault("type", []).append(f"must be one of {', '.join(TYPES)}")
    description = doc.get("description", "")
    if not isinstance(description, str) or len(description) > 1000:
        problems.setdefault("description", []).append("must be a string of at most 1000")
    if problems:
        raise InvalidInput(problems)
    return doc


def view(credential: Credential) -> dict[str, Any]:
    """A credential as the API shows it: never its value."""
    return {
        "id": str(credential.id),
        "name": credential.name,
        "type": credential.type,
        "description": credential.description,
        "created_at": credential.created_at.isoformat() if credential.created_at else None,
        "updated_at": credential.updated_at.isoformat() if credential.updated_at else None,
    }


def list_query(tenant_id: uuid.UUID) -> Select:
    """The tenant's credentials by name."""
    return select(Credential).where(Credential.tenant_id == tenant_id).order_by(Credential.name)


def get(session: Session, tenant_id: uuid.UUID, name: str) -> Credential:
    """The tenant's credential ``name``; NotFound otherwise."""
    found = session.scalar(
        select(Credential).where(Credential.tenant_id == tenant_id, Credential.name == name)
    )
    if found is None:
        raise NotFound(f"no credential named {name!r}")
    return found


def create(session: Session, tenant_id: uuid.UUID, doc: Any, secret_key: str | None) -> Credential:
    """Store a new credential (its value encrypted); Conflict if the name is taken."""
    doc = _check(doc)
    if session.scalar(
        select(Credential.id).where(
            Credential.tenant_id == tenant_id, Credential.name == doc["name"]
        )
    ):
        raise Conflict(f"a credential named {doc['name']!r} exists; PUT replaces its value")
    credential = Credential(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name=doc["name"],
        type=doc.get("type", "secret"),
        description=doc.get("description", ""),
        ciphertext=encrypt(doc["value"], secret_key),
    )
    session.add(credential)
    session.flush()
    return credential


def replace_value(
    session: Session, tenant_id: uuid.UUID, name: str, doc: Any, secret_key: str | None
) -> Credential:
    """Replace a credential's value (and type or description when given)."""
    credential = get(session, tenant_id, name)
    doc = _check(doc, partial=True)
    if "name" in doc and doc["name"] != name:
        raise InvalidInput({"name": ["cannot be changed; create another credential"]})
    if "value" in doc:
        credential.ciphertext = encrypt(doc["value"], secret_key)
    credential.type = doc.get("type", credential.type)
    credential.description = doc.get("description", credential.description)
    credential.updated_at = now()
    session.flush()
    return credential


def delete(session: Session, tenant_id: uuid.UUID, name: str) -> None:
    """Delete a credential; steps that still reference it fail with a clear error."""
    session.delete(get(session, tenant_id, name))
    session.flush()


def rotate(session: Session, secret_key: str | None) -> int:
    """Re-encrypt every credential with the newest key; the number rotated."""
    multi = cipher(secret_key)
    count = 0
    for credential in session.scalars(select(Credential).with_for_update()):
        try:
            credential.ciphertext = multi.rotate(credential.ciphertext.encode()).decode()
        except InvalidToken as e:
            raise PermanentError(
                f"credential {credential.name!r} of tenant {credential.tenant_id} opens with "
                "none of the ATOM_SECRET_KEY secrets; keep the old secret after the new one"
            ) from e
        count += 1
    session.flush()
    return count


# --- references -------------------------------------------------------------------------


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def references(config: Any) -> set[str]:
    """The credential names a node config uses (templates and ``auth``/``credential``)."""
    names = {
        m.group(1) or m.group(2)
        for text in _strings(config)
        if "credentials" in text
        for m in _REFERENCE.finditer(text)
    }
    if isinstance(config, dict):
        auth = config.get("auth")
        if isinstance(auth, dict) and isinstance(auth.get("credential"), str):
            names.add(auth["credential"])
        if isinstance(config.get("credential"), str):
            names.add(config["credential"])
    return names


def check_references(session: Session, tenant_id: uuid.UUID, nodes: list[Any]) -> None:
    """InvalidInput naming every node that references a credential the tenant lacks."""
    wanted = {(node.id, name) for node in nodes for name in references(node.config)}
    if not wanted:
        return
    have = set(
        session.scalars(
            select(Credential.name).where(
                Credential.tenant_id == tenant_id,
                Credential.name.in_({name for _, name in wanted}),
            )
        )
    )
    problems: dict[str, list[str]] = {}
    for node_id, name in sorted(wanted):
        if name not in have:
            problems.setdefault(f"nodes[{node_id}].config", []).append(
                f"references credential {name!r}, which does not exist (POST /api/credentials)"
            )
    if problems:
        raise InvalidInput(problems)


@dataclass
class StepSecrets:
    """The decrypted credentials one step uses, and every string to mask where it shows."""

    values: dict[str, Any] = field(default_factory=dict)
    masked: set[str] = field(default_factory=set)


def for_step(
    session: Session, tenant_id: uuid.UUID, config: Any, secret_key: str | None
) -> StepSecrets:
    """Decrypt the credentials ``config`` references; PermanentError for a missing one."""
    names = references(config)
    secrets = StepSecrets()
    if not names:
        return secrets
    rows = {
        c.name: c
        for c in session.scalars(
            select(Credential).where(Credential.tenant_id == tenant_id, Credential.name.in_(names))
        )
    }
    for name in sorted(names):
        if name not in rows:
            raise PermanentError(
                f"credential {name!r} does not exist (it was deleted after the workflow was "
                "saved); create it again or change the workflow"
            )
        value = decrypt(rows[name].ciphertext, secret_key)
        secrets.values[name] = value
        parts = [str(v) for v in value.values()] if isinstance(value, dict) else [str(value)]
        secrets.masked.update(p for p in parts if p)
    redaction.remember(*secrets.masked)
    return secrets


def apply_auth(config: Any, secrets: StepSecrets) -> Any:
    """Turn an http step's ``auth: {credential: NAME}`` into its header.

    A string (or ``{token}``) becomes ``Authorization: Bearer``; ``{username, password}``
    becomes Basic; ``{header, value}`` sets that header.
    """
    if not isinstance(config, dict) or not isinstance(config.get("auth"), dict):
        return config
    auth = config["auth"]
    name = auth.get("credential")
    value = secrets.values.get(name) if isinstance(name, str) else None
    if value is None:
        raise PermanentError("auth: {credential: NAME} must name one of the tenant's credentials")
    headers = dict(config.get("headers") or {})
    if isinstance(value, str):
        headers["Authorization"] = f"Bearer {value}"
    elif "token" in value:
        headers["Authorization"] = f"Bearer {value['token']}"
    elif "username" in value and "password" in value:
        raw = f"{value['username']}:{value['password']}".encode()
        basic = base64.b64encode(raw).decode()
        secrets.masked.add(basic)
        headers["Authorization"] = f"Basic {basic}"
    elif "header" in value and "value" in value:
        headers[str(value["header"])] = str(value["value"])
    else:
        raise PermanentError(
            f"credential {name!r} cannot be used as http auth: it needs to be a string, "
            "{token}, {username, password} or {header, value}"
        )
    out = {k: v for k, v in config.items() if k != "auth"}
    out["headers"] = headers
    return out
