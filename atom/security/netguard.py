"""The outbound-request guard: the platform never calls private, loopback or link-local
addresses (server-side request forgery) unless ``ATOM_HTTP_ALLOWLIST`` admits them.

A URL is parsed once, by the parser the HTTP client itself uses (urllib3's ``parse_url``, the
one requests prepares URLs with), and anything two parsers could read differently is refused
before any lookup: backslashes, userinfo (``user@host``), whitespace and control characters,
percent-escapes in the host, numeric hosts that are not a canonical dotted quad
(``2852039166``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``), and IPv6 forms that carry an IPv4
address (IPv4-mapped, IPv4-compatible, 6to4, NAT64, Teredo). The name is then resolved once;
every address must pass, and the caller connects to the checked address (``atom.security.
transport``), so a DNS answer that changes between check and connect (rebinding) cannot
redirect the call.

Used by the ``http_request`` action, the alert channels (webhook, Slack) and SMTP.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from atom.errors import PermanentError, RetryableError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Carrier-grade NAT space (RFC 6598): not "private" to Python, but cloud metadata lives there.
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
# IPv6 ranges that embed an IPv4 address a gateway may translate to (RFC 6052, 4380, 3056).
_EMBEDDING_V4 = (
    ipaddress.ip_network("64:ff9b::/96"),
    ipaddress.ip_network("64:ff9b:1::/48"),
    ipaddress.ip_network("2001::/32"),
    ipaddress.ip_network("2002::/16"),
    ipaddress.ip_network("::ffff:0:0/96"),
    ipaddress.ip_network("::/96"),
)
_HOSTNAME = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\.?$")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_AMBIGUOUS_CHARS = re.compile(r"[\\\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Target:
    """A checked destination: connect to ``address``, speak to ``host`` (Host header, TLS)."""

    scheme: str
    host: str
    port: int
    address: str

    @property
    def host_header(self) -> str:
        """The Host header value: the name, with the port when it is not the default."""
        default = 443 if self.scheme == "https" else 80
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port == default else f"{shown}:{self.port}"


def _embeds_v4(ip: ipaddress.IPv6Address) -> bool:
    """True for IPv6 forms a stack or gateway may turn into an IPv4 address (not ``::1``)."""
    return not (ip.is_loopback or ip.is_unspecified) and any(ip in net for net in _EMBEDDING_V4)


def _forbidden(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        elif ip.sixtofour:
            ip = ip.sixtofour
        elif _embeds_v4(ip):
            return True
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
        if entry.lower().rstrip(".") == host.lower().rstrip("."):
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _host_problem(host: str) -> str | None:
    """Why ``host`` (as urllib3 parsed it) is ambiguous, or None."""
    if host.startswith("["):
        try:
            ip6 = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return "is not a valid IPv6 address"
        if ip6.scope_id:
            return "carries an IPv6 zone"
        if _embeds_v4(ip6):
            return "is an IPv6 form that embeds an IPv4 address"
        return None
    labels = host.rstrip(".").split(".")
    if all(_NUMERIC_LABEL.match(label) for label in labels) or _NUMERIC_LABEL.match(labels[-1]):
        try:  # Python's parser accepts only the canonical dotted quad
            ipaddress.IPv4Address(host.rstrip("."))
        except ValueError:
            return "is a numeric host that is not a canonical dotted-quad IPv4 address"
        return None
    if not _HOSTNAME.match(host):
        return "is not a valid host name"
    return None


def parse(url: str, who: str = "http_request") -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an unambiguous http(s) URL; PermanentError otherwise.

    ``host`` is bare (no IPv6 brackets), lower case, as the HTTP client would connect to it.
    """
    shown = redact_url(url)
    if _AMBIGUOUS_CHARS.search(url):
        raise PermanentError(
            f"{who}: {shown!r} holds a backslash, whitespace or a control character; "
            "such URLs are read differently by different parsers"
        )
    try:
        parts = parse_url(url)
    except (LocationParseError, ValueError) as e:
        raise PermanentError(f"{who}: {shown!r} is not a valid URL") from e
    scheme = (parts.scheme or "").lower()
    if scheme not in ("http", "https") or not parts.host or not url.lower().startswith(scheme):
        raise PermanentError(f"{who}: {shown!r} is not an http(s) URL")
    authority = url.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    if parts.auth is not None or "@" in authority:
        raise PermanentError(
            f"{who}: {shown!r} holds user information (user@host); put credentials in "
            "headers or `auth`, never in the URL"
        )
    host = parts.host.lower()
    if "%" in host or "%" in authority:
        raise PermanentError(f"{who}: the host of {shown!r} holds percent-escapes")
    if problem := _host_problem(host):
        raise PermanentError(f"{who}: the host of {shown!r} {problem}")
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, host.strip("[]").rstrip("."), port


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in the resolver's order (one lookup)."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_target(url: str, allowlist: tuple[str, ...], who: str = "http_request") -> Target:
    """The checked destination of ``url``: PermanentError if it is ambiguous or any address
    it resolves to is one the platform may not reach; RetryableError if it does not resolve.
    Connect to ``Target.address``, never to the name again."""
    scheme, host, port = parse(url, who)
    return check_host(scheme, host, port, allowlist, who)


def check_host(
    scheme: str, host: str, port: int, allowlist: tuple[str, ...], who: str = "http_request"
) -> Target:
    """Resolve ``host`` once and check every address (see ``check_target``)."""
    try:
        addresses = resolve(host, port)
    except (socket.gaierror, UnicodeError) as e:
        raise RetryableError(f"{who}: cannot resolve {host!r}: {e}") from e
    if not addresses:
        raise RetryableError(f"{who}: {host!r} resolves to no address")
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if _forbidden(ip) and not _allowed(host, ip, allowlist):
            raise PermanentError(
                f"{who}: {host} resolves to {ip}, a private, loopback or link-local "
                "address; add it to ATOM_HTTP_ALLOWLIST to allow it"
            )
    return Target(scheme=scheme, host=host, port=port, address=addresses[0])


_LITERAL_AUTHORITY = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#{}]+)[/?#]")


def refused_before_running(url: str, allowlist: tuple[str, ...]) -> str | None:
    """Why the guard will refuse ``url`` whatever DNS answers, or None: a URL two parsers read
    differently, or a host that is an address (or ``localhost``) the platform may not reach
    and ``allowlist`` does not admit. Checked when a workflow is saved; a name is resolved
    only when its step runs. A templated URL is checked when its scheme and host are literal
    (``https://10.0.0.5/{{ input.path }}``)."""
    literal = url
    if "{{" in url or "{%" in url:
        prefix = url[: min(i for i in (url.find("{{"), url.find("{%")) if i >= 0)]
        match = _LITERAL_AUTHORITY.match(prefix)
        if match is None:
            return None  # the host comes from the run's data: the guard checks it then
        literal = match.group(1) + "/"
    try:
        _scheme, host, _port = parse(literal)
    except PermanentError as e:
        return str(e)
    name = host.lower().rstrip(".")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if name != "localhost" and not name.endswith(".localhost"):
            return None
        ip = ipaddress.ip_address("127.0.0.1")  # RFC 6761: localhost is loopback
    if _forbidden(ip) and not _allowed(host, ip, allowlist):
        return (
            f"http_request: {host} is a private, loopback or link-local address, which "
            "the platform does not call; add it to ATOM_HTTP_ALLOWLIST to allow it"
        )
    return None


REDACTED = "***"


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` and a marker: webhook paths and queries often hold tokens."""
    try:
        parts = urlsplit(url)
        hostname, port = parts.hostname, parts.port
    except ValueError:
        return REDACTED
    if not parts.scheme or not hostname:
        return REDACTED
    if _AMBIGUOUS_CHARS.search(hostname):
        return f"{parts.scheme}://{REDACTED}/"
    netloc = hostname if port is None else f"{hostname}:{port}"
    rest = parts.path not in ("", "/") or parts.query or parts.fragment
    return f"{parts.scheme}://{netloc}/{REDACTED}" if rest else f"{parts.scheme}://{netloc}/"
