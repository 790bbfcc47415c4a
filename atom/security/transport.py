"""Outbound connections pinned to the address the guard checked (``atom.security.netguard``).

Checking a name and then letting the client resolve it again leaves a window: a DNS server
that answers a public address to the check and ``127.0.0.1`` to the connect (rebinding)
walks around the guard. Here every request is checked when it is sent and the connection
goes to the checked IP address, while the Host header, TLS SNI and certificate verification
keep using the name. Proxies from the environment are ignored: a proxy would resolve the
name itself.

- ``pinned_session(allowlist, who)``: a requests Session whose every request (each redirect
  hop included, since each is sent again) is checked and pinned.
- ``PinnedSMTP``: smtplib's client connecting to a checked address.
"""

from __future__ import annotations

import smtplib
import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from atom.security.netguard import Target, check_host, check_target, parse

_PIN = "_atom_pinned_target"


class PinnedAdapter(HTTPAdapter):
    """An HTTPAdapter that checks each request's URL and connects to the checked address."""

    def __init__(self, allowlist: tuple[str, ...], who: str = "http_request", **kwargs: Any):
        self.allowlist, self.who = allowlist, who
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        """Check and pin ``request``; then send it as HTTPAdapter does."""
        target = check_target(str(request.url), self.allowlist, self.who)
        setattr(request, _PIN, target)
        request.headers["Host"] = target.host_header
        return super().send(request, *args, **kwargs)

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The pool of the checked address; TLS still names (and verifies) the host."""
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        target: Target | None = getattr(request, _PIN, None)
        if target is None:  # only send() opens connections, and it always pins first
            raise RuntimeError("an unpinned request reached the pinned adapter")
        host_params.update(scheme=target.scheme, host=target.address, port=target.port)
        if target.scheme == "https":
            pool_kwargs.update(server_hostname=target.host, assert_hostname=target.host)
        return host_params, pool_kwargs


def pinned_session(allowlist: tuple[str, ...], who: str = "http_request") -> requests.Session:
    """A Session whose requests go only to checked, pinned addresses (no proxies)."""
    session = requests.Session()
    session.trust_env = False
    adapter = PinnedAdapter(allowlist, who)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class PinnedSMTP(smtplib.SMTP):
    """smtplib.SMTP connecting to the address checked for ``host`` (STARTTLS keeps the name).

    ``allowlist`` None: the host comes from the operator's configuration and may be private
    (it is still resolved once and pinned); a tuple: the guard applies as for http.
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        allowlist: tuple[str, ...] | None = None,
        who: str = "email",
    ):
        self._target = _smtp_target(host, port, allowlist, who)
        super().__init__(timeout=timeout)
        self.connect(host, port)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._target.address, port), timeout)


def _smtp_target(host: str, port: int, allowlist: tuple[str, ...] | None, who: str) -> Target:
    shown = f"[{host}]" if ":" in host else host
    scheme, name, _ = parse(f"http://{shown}:{port}/", who)
    if allowlist is None:
        allowlist = ("0.0.0.0/0", "::/0")  # operator-configured: pin, but do not refuse
    return check_host(scheme, name, port, allowlist, who)
