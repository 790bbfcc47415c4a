"""``email``: send a plain-text email to the tenant's allowed domains only.

``{to: [..], subject, body, credential?}``. SMTP comes from the configuration
(``ATOM_SMTP_*``) or from a vault credential ``{host, port?, username?, password?, from?,
starttls?}``; a credential's host passes the outbound guard like an http step's URL. Every
recipient must be in the tenant's ``email_allowed_domains`` (``PUT /api/settings``; none by
default), so a workflow cannot make ATOM mail arbitrary addresses.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from typing import Any

from atom.actions.base import Action, ActionContext, ActionSpec
from atom.errors import PermanentError, RetryableError

TIMEOUT = 15.0
MAX_RECIPIENTS = 50


def _smtp(config: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    name = config.get("credential")
    if name is None:
        s = ctx.settings
        if not s.smtp_host:
            raise PermanentError("email: SMTP is not configured (ATOM_SMTP_HOST or a credential)")
        return {
            "host": s.smtp_host,
            "port": s.smtp_port,
            "username": s.smtp_username,
            "password": s.smtp_password,
            "from": s.smtp_from,
            "starttls": s.smtp_starttls,
            "allowlist": None,  # the operator's own server
        }
    value = ctx.credentials.get(str(name))
    if not isinstance(value, dict) or not value.get("host"):
        raise PermanentError(f"email: credential {name!r} must be an object with a host")
    return {
        "host": str(value["host"]),
        "port": int(value.get("port") or 587),
        "username": value.get("username"),
        "password": value.get("password"),
        "from": value.get("from") or ctx.settings.smtp_from,
        "starttls": bool(value.get("starttls", True)),
        "allowlist": ctx.settings.http_allowlist,
    }


def run(config: dict[str, Any], ctx: ActionContext) -> Any:
    """Send the message; the output is ``{sent_to: [...]}``."""
    from atom.security.settings import allowlist_problem
    from atom.security.transport import PinnedSMTP  # loads requests: only when a step runs

    to = config["to"] if isinstance(config["to"], list) else [config["to"]]
    to = [str(t).strip() for t in to]
    if not to or len(to) > MAX_RECIPIENTS:
        raise PermanentError(f"email: to must name 1 to {MAX_RECIPIENTS} addresses")
    if problem := allowlist_problem(to, ctx.email_domains):
        raise PermanentError(f"email: {problem}")
    subject = str(config.get("subject", ""))
    if any(c in subject for c in "\r\n"):
        raise PermanentError("email: the subject must be one line")
    smtp = _smtp(config, ctx)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = smtp["from"]
    message["To"] = ", ".join(to)
    message.set_content(str(config.get("body", "")))
    try:
        with PinnedSMTP(smtp["host"], smtp["port"], TIMEOUT, smtp["allowlist"]) as client:
            if smtp["starttls"]:
                client.starttls()
            if smtp["username"]:
                client.login(smtp["username"], smtp["password"] or "")
            client.send_message(message)
    except smtplib.SMTPRecipientsRefused as e:
        raise PermanentError(f"email: the server refused {', '.join(e.recipients)}") from None
    except smtplib.SMTPAuthenticationError:
        raise PermanentError("email: the SMTP server refused the login") from None
    except (smtplib.SMTPException, OSError) as e:
        raise RetryableError(f"email: sending failed ({type(e).__name__})") from None
    return {"sent_to": to}


def check(config: dict, where: str) -> list[str]:
    """1 to 50 recipients."""
    to = config["to"]
    if isinstance(to, list) and not (1 <= len(to) <= MAX_RECIPIENTS):
        return [f"to must name 1 to {MAX_RECIPIENTS} addresses"]
    return []


ACTION = Action(
    name="email",
    spec=ActionSpec(
        required={"to": None, "subject": str},
        optional={"body": None, "credential": str},
        check=check,
    ),
    run=run,
    examples=(
        {"to": ["ops@example.com"], "subject": "hi", "body": "{{ input.text }}"},
        {"to": "ops@example.com", "subject": "hi", "credential": "smtp"},
    ),
    bad=(
        ({"subject": "hi"}, "is required"),
        ({"to": [], "subject": "hi"}, "to must name 1 to"),
        ({"to": "a@b.c", "subject": "hi", "cc": "x"}, "is not a setting"),
    ),
)
