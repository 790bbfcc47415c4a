"""The outbound-request guard: the platform never calls private, loopback or link-local
addresses (server-side request forgery) unless ``ATOM_HTTP_ALLOWLIST`` admits them.

Used by the ``http_request`` action and by the alert channels (webhook, Slack).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from atom.errors import PermanentError, RetryableError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# Carrier-grade NAT space (RFC 6598): not "private" to Python, but cloud metadata lives there.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")


def _forbidden(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv6Address) and ip.sixtofour:
        ip = ip.sixtofour
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or ip in _SHARED_ADDRESS_SPACE
    )


def _allowed(host: str, ip: IPAddress, allowlist: tuple[str, ...]) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for entry in allowlist:
        if entry.lower() == host.lower():
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def check_target(url: str, allowlist: tuple[str, ...], who: str = "http_request") -> None:
    """Raise PermanentError if ``url`` resolves to an address the platform may not reach.

    ``who`` names the caller in the message. An unresolvable host is a RetryableError.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"{who}: {redact_url(url)!r} is not an http(s) URL")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise RetryableError(f"{who}: cannot resolve {host!r}: {e}") from e
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if _forbidden(ip) and not _allowed(host, ip, allowlist):
            raise PermanentError(
                f"{who}: {host} resolves to {ip}, a private, loopback or link-local "
                "address; add it to ATOM_HTTP_ALLOWLIST to allow it"
            )


REDACTED = "***"


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` and a marker: webhook paths and queries often hold tokens."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return REDACTED
    netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    rest = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{netloc}/{REDACTED}" if rest else f"{parts.scheme}://{netloc}/"
