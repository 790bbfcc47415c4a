"""``http_request``: call an HTTP API, refusing private, loopback and link-local targets
unless ``ATOM_HTTP_ALLOWLIST`` admits them (server-side request forgery guard)."""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from atom.errors import PermanentError, RetryableError
from workers.actions import ActionContext

DEFAULT_TIMEOUT = 30.0
MAX_REDIRECTS = 5
MAX_BODY_BYTES = 10 * 1024 * 1024
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _forbidden(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved
            or ip.is_multicast or ip.is_unspecified)


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


def check_target(url: str, allowlist: tuple[str, ...]) -> None:
    """Raise PermanentError if ``url`` resolves to an address the platform may not reach."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"http_request: {url!r} is not an http(s) URL")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise RetryableError(f"http_request: cannot resolve {host!r}: {e}") from e
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if _forbidden(ip) and not _allowed(host, ip, allowlist):
            raise PermanentError(
                f"http_request: {host} resolves to {ip}, a private, loopback or link-local "
                "address; add it to ATOM_HTTP_ALLOWLIST to allow it")


def _body(response: requests.Response) -> Any:
    content = response.raw.read(MAX_BODY_BYTES + 1, decode_content=True)
    if len(content) > MAX_BODY_BYTES:
        raise PermanentError(f"http_request: response body is over {MAX_BODY_BYTES} bytes")
    if "json" in response.headers.get("Content-Type", ""):
        try:
            return json.loads(content)
        except ValueError:
            pass
    return content.decode(response.encoding or "utf-8", errors="replace")


def run(config: dict[str, Any], ctx: ActionContext) -> Any:
    """Send the request; the output is ``{status_code, headers, body}``."""
    method = str(config.get("method", "GET")).upper()
    url = str(config["url"])
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    headers.setdefault("Idempotency-Key", ctx.idempotency_key)
    timeout = float(config.get("timeout") or DEFAULT_TIMEOUT)
    kwargs: dict[str, Any] = {"headers": headers, "params": config.get("params") or None,
                              "timeout": timeout, "allow_redirects": False, "stream": True}
    if "json" in config:
        kwargs["json"] = config["json"]
    with requests.Session() as session:
        for _ in range(MAX_REDIRECTS + 1):
            check_target(url, ctx.settings.http_allowlist)
            try:
                response = session.request(method, url, **kwargs)
            except requests.Timeout as e:
                raise RetryableError(f"http_request: {method} {url} timed out after "
                                     f"{timeout:g} s") from e
            except requests.RequestException as e:
                raise RetryableError(f"http_request: {method} {url} failed: {e}") from e
            if response.is_redirect and "Location" in response.headers:
                url = urljoin(url, response.headers["Location"])
                if response.status_code == 303:
                    method, kwargs["json"] = "GET", None
                response.close()
                kwargs["params"] = None
                continue
            with response:
                output = {"status_code": response.status_code,
                          "headers": dict(response.headers), "body": _body(response)}
            break
        else:
            raise PermanentError(f"http_request: more than {MAX_REDIRECTS} redirects")
    status = response.status_code
    if status in RETRYABLE_STATUS:
        raise RetryableError(f"http_request: {method} {url} answered {status}", output)
    if status >= 400:
        raise PermanentError(f"http_request: {method} {url} answered {status}", output)
    return output
