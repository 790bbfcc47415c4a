"""The http action refuses private, loopback and link-local targets unless allowlisted.

Only literal addresses and ``localhost`` are used: check_target resolves names (once: the
caller connects to the address it returns) but never connects, and these resolve without
the network.
"""

from __future__ import annotations

import pytest

from atom.errors import PermanentError
from atom.security.netguard import check_target

PRIVATE_TARGETS = [
    "http://127.0.0.1/",
    "http://127.0.0.1:8080/path?q=1",
    "https://localhost/",
    "http://localhost:5058/api",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[fe80::1]/",
]


@pytest.mark.parametrize("url", PRIVATE_TARGETS)
def test_private_targets_are_refused_by_default(url):
    with pytest.raises(PermanentError, match="ATOM_HTTP_ALLOWLIST"):
        check_target(url, ())


@pytest.mark.parametrize(
    "url, allowlist",
    [
        ("http://127.0.0.1/", ("127.0.0.0/8",)),
        ("http://127.0.0.1:9000/x", ("127.0.0.1",)),
        ("http://localhost/", ("localhost",)),
        ("http://LocalHost:5058/", ("localhost",)),
        ("http://localhost/", ("127.0.0.0/8", "::1/128")),
        ("http://10.0.0.1/", ("10.0.0.0/8",)),
        ("http://192.168.1.1/", ("192.168.0.0/16",)),
        ("http://169.254.169.254/", ("169.254.0.0/16",)),
        ("http://[::1]/", ("::1",)),
        ("http://127.0.0.1/", ("not a network", "127.0.0.0/8")),
    ],
)
def test_allowlisted_targets_pass(url, allowlist):
    target = check_target(url, allowlist)
    assert target.address in ("127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "169.254.169.254")


@pytest.mark.parametrize(
    "url, allowlist",
    [
        ("http://10.0.0.2/", ("10.0.0.1",)),
        ("http://169.254.169.254/", ("127.0.0.0/8", "localhost")),
        ("http://[::1]/", ("127.0.0.0/8",)),
        ("http://127.0.0.1/", ("localhost",)),  # a name admits only that name
        ("http://localhost/", ("local",)),
        ("http://localhost/", ("localhost.example.test",)),
    ],
)
def test_the_allowlist_admits_only_what_it_names(url, allowlist):
    with pytest.raises(PermanentError, match="ATOM_HTTP_ALLOWLIST"):
        check_target(url, allowlist)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "http://",
        "localhost",
        "//127.0.0.1/",
    ],
)
def test_non_http_urls_are_refused(url):
    with pytest.raises(PermanentError, match="is not an http"):
        check_target(url, ("127.0.0.0/8", "localhost"))
