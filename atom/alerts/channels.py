"""Alert notifications: a JSON webhook, a Slack-style incoming webhook, or an email (SMTP).

Webhook and Slack URLs pass the same private-address guard as the ``http_request`` action
(``atom.security.netguard``), connect only to the address that was checked, are never
followed through redirects, and appear in results and logs only redacted (their paths and
queries often carry tokens). The SMTP password never appears. Email goes only to the
tenant's ``email_allowed_domains``.
"""

from __future__ import annotations

import logging
import smtplib
import time
from email.message import EmailMessage
from typing import Any

import requests

from atom.config import Settings
from atom.errors import AtomError
from atom.security.netguard import parse, redact_url
from atom.security.settings import allowlist_problem
from atom.security.transport import PinnedSMTP, pinned_session

logger = logging.getLogger(__name__)

TIMEOUT = 10.0


class _Failed(Exception):
    """A delivery failed (internal: ``deliver`` turns it into a result)."""


def _post(url: str, body: dict[str, Any], settings: Settings, who: str) -> None:
    parse(url, who)
    try:
        with pinned_session(settings.http_allowlist, who) as session:
            response = session.post(url, json=body, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as e:  # its text names the URL: keep only the kind
        raise _Failed(f"{who}: request failed ({type(e).__name__})") from None
    if not 200 <= response.status_code < 300:
        raise _Failed(f"{who}: answered {response.status_code}")


def _anomaly_text(state: str, payload: dict[str, Any]) -> str:
    series = payload.get("series") or {}
    about = " ".join(str(p) for p in (series.get("kind"), series.get("name")) if p) or "series"
    value, expected = payload.get("value"), payload.get("expected")
    shown = f"{value:.4g}" if isinstance(value, int | float) else "no data"
    normal = (
        f"expected {expected[0]:.4g}..{expected[1]:.4g}"
        if isinstance(expected, list) and len(expected) == 2
        else "no expected range"
    )
    score = payload.get("score")
    scored = f"{score:.2f}" if isinstance(score, int | float) else "?"
    return (
        f"[{payload['severity'].upper()}] {state}: {payload['rule']} - anomaly in {about}: "
        f"{shown} ({normal}, score {scored}, threshold {payload['threshold']:g})"
    )


def _text(payload: dict[str, Any]) -> str:
    state = "RESOLVED" if payload["event"] == "resolved" else "FIRING"
    if payload.get("metric") == "anomaly":
        return _anomaly_text(state, payload)
    value = payload.get("value")
    shown = f"{value:.4g}" if isinstance(value, int | float) else "no data"
    return (
        f"[{payload['severity'].upper()}] {state}: {payload['rule']} - {payload['metric']} "
        f"is {shown} (threshold {payload['comparison']} {payload['threshold']:g}, "
        f"window {payload['window']})"
    )


def _email(to: list[str], payload: dict[str, Any], settings: Settings, text: str) -> None:
    if not settings.smtp_host:
        raise _Failed("email: SMTP is not configured (ATOM_SMTP_HOST)")
    message = EmailMessage()
    message["Subject"] = text.splitlines()[0][:200]
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(to)
    lines = [text, ""] + [f"{k}: {v}" for k, v in payload.items()]
    message.set_content("\n".join(lines))
    with PinnedSMTP(settings.smtp_host, settings.smtp_port, TIMEOUT) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_username:
            smtp.login(settings.smtp_username, settings.smtp_password or "")
        smtp.send_message(message)


def target(channel: dict[str, Any]) -> str:
    """Where a channel delivers, safe to show: a redacted URL, or the email addresses."""
    if channel.get("type") == "email":
        to = channel.get("to")
        return ", ".join(to) if isinstance(to, list) else str(to)
    return redact_url(str(channel.get("url", "")))


def deliver(
    channels: list[dict[str, Any]],
    payload: dict[str, Any],
    settings: Settings,
    email_domains: tuple[str, ...] = (),
    text: str | None = None,
) -> list[dict[str, Any]]:
    """Send ``payload`` to every channel; one result per channel, failures included.
    Email goes only to the tenant's ``email_domains`` (none by default). ``text`` is the
    one-line message Slack and the email subject show (an alert's by default)."""
    results = []
    for channel in channels:
        kind = channel.get("type")
        result: dict[str, Any] = {
            "event": payload["event"],
            "channel": kind,
            "target": "***",
            "at": time.time(),
        }
        try:
            result["target"] = target(channel)
            if kind == "webhook":
                _post(channel["url"], payload, settings, "alert webhook")
            elif kind == "slack":
                line = text or _text(payload)
                _post(channel["url"], {"text": line}, settings, "alert slack")
            elif kind == "email":
                to = channel["to"] if isinstance(channel["to"], list) else [channel["to"]]
                if problem := allowlist_problem(to, email_domains):
                    raise _Failed(f"email: {problem}")
                _email(to, payload, settings, text or _text(payload))
            else:
                raise _Failed(f"unknown channel type {kind!r}")
            result["ok"] = True
        except Exception as e:  # one channel's failure must not stop the rest
            if not isinstance(e, _Failed | AtomError | smtplib.SMTPException | OSError):
                logger.exception(
                    "alert %s: unexpected error delivering to a %s channel",
                    payload.get("alert_id") or payload.get("session_id"),
                    kind,
                )
            result.update(ok=False, error=str(e) or type(e).__name__)
            logger.warning(
                "alert %s: %s delivery to %s failed: %s",
                payload.get("alert_id") or payload.get("session_id"),
                kind,
                result["target"],
                result["error"],
            )
        results.append(result)
    return results
