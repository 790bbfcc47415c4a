"""``http_request``: call an HTTP API, refusing private, loopback and link-local targets
unless ``ATOM_HTTP_ALLOWLIST`` admits them (the guard lives in ``atom.security.netguard``,
the connection pinned to the checked address by ``atom.security.transport``).

``requests`` and the guard load when a step runs, so validating a definition stays light."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from atom.actions import http_cache
from atom.actions.base import Action, ActionContext, ActionSpec, is_template, is_type
from atom.errors import PermanentError, RetryableError

if TYPE_CHECKING:
    import requests

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

DEFAULT_TIMEOUT = 30.0
MAX_REDIRECTS = 5
MAX_BODY_BYTES = 10 * 1024 * 1024
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}
# Sent on to another origin after a redirect, these would hand the caller's credentials to it.
CREDENTIAL_HEADERS = {"authorization", "cookie", "proxy-authorization"}


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


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
    """Send the request (or answer from the response cache when ``cache_ttl`` is set); the
    output is ``{status_code, headers, body}``."""
    from atom.security.netguard import parse, redact_url
    from atom.security.redaction import redact_step_output

    method = str(config.get("method", "GET")).upper()
    url = str(config["url"])
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    headers.setdefault("Idempotency-Key", ctx.idempotency_key)
    timeout = float(config.get("timeout") or DEFAULT_TIMEOUT)
    kwargs: dict[str, Any] = {
        "headers": headers,
        "params": config.get("params") or None,
        "timeout": timeout,
        "allow_redirects": False,
        "stream": True,
    }
    if "json" in config:
        kwargs["json"] = config["json"]
    key = _cache_key(config, ctx, method, url)
    if key is not None:
        parse(url)  # an ambiguous URL is refused whether or not an answer is cached
        ttl = float(config["cache_ttl"])
        cached = http_cache.lookup(ctx.settings.events_redis, key, ttl, redact_url(url))
        if cached is not None:
            return cached
    output = _send(method, url, kwargs, ctx)
    if key is not None:
        # What the step records anyway (atom.security.redaction): Redis gets no Set-Cookie,
        # and no credential the answer repeats, in clear; a hit then records the same output.
        kept = redact_step_output(output, _secrets(config, ctx))
        http_cache.store(
            ctx.settings.events_redis, key, kept, float(config["cache_ttl"]), redact_url(url)
        )
    return output


def _secrets(config: dict[str, Any], ctx: ActionContext) -> set[str]:
    """The values the worker masks in this step's output: its credential headers' values and
    the vault values it was given."""
    from atom.security.redaction import secret_header_values

    found = secret_header_values(config)
    for value in ctx.credentials.values():
        parts = value.values() if isinstance(value, dict) else [value]
        found.update(str(p) for p in parts if p)
    return found


def _cache_key(config: dict[str, Any], ctx: ActionContext, method: str, url: str) -> str | None:
    """The response cache's key for this step, or None when it does not cache: no
    ``cache_ttl``, a method that is not a read, or no tenant to keep entries apart."""
    if config.get("cache_ttl") is None or method not in http_cache.CACHEABLE_METHODS:
        return None
    if not ctx.tenant:
        return None
    return http_cache.cache_key(ctx.tenant, method, url, config)


def _send(method: str, url: str, kwargs: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    """Send the request, following redirects; a 2xx-3xx answer's output, else an error."""
    import requests

    from atom.security.netguard import parse, redact_url
    from atom.security.transport import pinned_session

    timeout = kwargs["timeout"]
    # Each hop is checked and pinned by the session's adapter (atom.security.transport).
    with pinned_session(ctx.settings.http_allowlist) as session:
        for _ in range(MAX_REDIRECTS + 1):
            parse(url)  # ambiguous URLs are refused before anything is sent
            shown = redact_url(url)  # paths and queries often hold tokens: never in errors
            try:
                response = session.request(method, url, **kwargs)
            except requests.Timeout as e:
                raise RetryableError(
                    f"http_request: {method} {shown} timed out after {timeout:g} s"
                ) from e
            except requests.RequestException as e:
                raise RetryableError(
                    f"http_request: {method} {shown} failed: {type(e).__name__}"
                ) from e
            if response.is_redirect and "Location" in response.headers:
                target = urljoin(url, response.headers["Location"])
                if _origin(target) != _origin(url):
                    kwargs["headers"] = {
                        k: v
                        for k, v in kwargs["headers"].items()
                        if k.lower() not in CREDENTIAL_HEADERS
                    }
                if response.status_code == 303 or (
                    response.status_code in (301, 302) and method == "POST"
                ):
                    method = "GET"
                    kwargs.pop("json", None)
                url = target
                response.close()
                kwargs["params"] = None
                continue
            with response:
                output = {
                    "status_code": response.status_code,
                    "headers": dict(response.headers),
                    "body": _body(response),
                }
            break
        else:
            raise PermanentError(f"http_request: more than {MAX_REDIRECTS} redirects")
    status = response.status_code
    if status in RETRYABLE_STATUS:
        raise RetryableError(f"http_request: {method} {redact_url(url)} answered {status}", output)
    if status >= 400:
        raise PermanentError(f"http_request: {method} {redact_url(url)} answered {status}", output)
    return output


def check(config: dict, where: str) -> list[str]:
    """A known method, an http(s) URL, a timeout within five minutes, an ``auth`` naming a
    credential, and a ``cache_ttl`` only on reads."""
    errors = []
    method = config.get("method", "GET")
    if not is_template(method) and str(method).upper() not in HTTP_METHODS:
        errors.append(f"method must be one of {', '.join(HTTP_METHODS)}, not {method!r}")
    url = config["url"]
    if not is_template(url) and not url.lower().startswith(("http://", "https://")):
        errors.append(f"url must start with http:// or https://, not {url!r}")
    timeout = config.get("timeout")
    if isinstance(timeout, int | float) and is_type(timeout, float) and not 0 < timeout <= 300:
        errors.append("timeout must be between 0 and 300 seconds")
    auth = config.get("auth")
    if isinstance(auth, dict) and (
        set(auth) != {"credential"} or not isinstance(auth["credential"], str)
    ):
        errors.append("auth must be {credential: NAME}, naming one of the tenant's credentials")
    if "cache_ttl" in config:
        errors.extend(_check_cache_ttl(config["cache_ttl"], method))
    return errors


def _check_cache_ttl(ttl: Any, method: Any) -> list[str]:
    """``cache_ttl``: a literal number of seconds within a day, on a GET or HEAD step."""
    errors = []
    if is_template(ttl):
        errors.append("cache_ttl must be a number of seconds, not a template")
    elif not 0 < ttl <= http_cache.MAX_TTL_SECONDS:
        errors.append(
            f"cache_ttl must be more than 0 and at most {http_cache.MAX_TTL_SECONDS} seconds "
            f"(one day), not {ttl!r}"
        )
    reads = " or ".join(http_cache.CACHEABLE_METHODS)
    if is_template(method):
        errors.append(
            f"cache_ttl needs a fixed method ({reads}): with a template method {method!r} "
            "a request that changes something could be answered from the cache"
        )
    elif str(method).upper() not in http_cache.CACHEABLE_METHODS:
        errors.append(
            f"cache_ttl is only for reads ({reads}): a {str(method).upper()} request changes "
            "something, and answering it from the cache would skip the change"
        )
    return errors


ACTION = Action(
    name="http_request",
    spec=ActionSpec(
        required={"url": str},
        optional={
            "method": str,
            "headers": dict,
            "params": dict,
            "json": None,
            "timeout": float,
            "auth": dict,
            "cache_ttl": float,
        },
        check=check,
    ),
    run=run,
    examples=(
        {"url": "https://example.com/api"},
        {"url": "{{ input.url }}", "method": "post", "json": {"a": 1}, "timeout": 5},
        {"url": "http://x.test", "headers": {"A": "b"}, "params": {"q": "1"}},
        {"url": "https://example.com/api/{{ input.id }}", "cache_ttl": 300},
        {"url": "https://example.com/api", "method": "head", "cache_ttl": 0.5},
        {"url": "https://example.com/api", "method": "GET", "cache_ttl": 86400},
    ),
    bad=(
        ({}, "is required"),
        ({"url": "ftp://x.test"}, "must start with http"),
        ({"url": "http://x.test", "method": "FETCH"}, "method must be one of"),
        ({"url": "http://x.test", "timeout": 0}, "between 0 and 300"),
        ({"url": "http://x.test", "headers": "A: b"}, "must be an object"),
        ({"url": "http://x.test", "auth": {"token": "x"}}, "auth must be {credential: NAME}"),
        ({"url": "http://x.test", "cache_ttl": 0}, "cache_ttl must be more than 0"),
        ({"url": "http://x.test", "cache_ttl": -5}, "cache_ttl must be more than 0"),
        ({"url": "http://x.test", "cache_ttl": 86401}, "at most 86400 seconds"),
        ({"url": "http://x.test", "cache_ttl": "60"}, "must be a number"),
        ({"url": "http://x.test", "cache_ttl": True}, "must be a number"),
        ({"url": "http://x.test", "cache_ttl": "{{ input.ttl }}"}, "not a template"),
        ({"url": "http://x.test", "method": "POST", "cache_ttl": 60}, "only for reads"),
        ({"url": "http://x.test", "method": "{{ input.m }}", "cache_ttl": 60}, "fixed method"),
    ),
)
