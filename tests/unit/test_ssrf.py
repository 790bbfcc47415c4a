"""Issue 11, hole 1: server-side request forgery around the outbound guard.

Each form below got past the guard of the code before this change (``urlsplit`` read one
host, the HTTP client connected to another, or the client resolved the name a second time).
A real HTTP server and a real DNS server run on loopback; the DNS server answers a public
address to the first question about a name and 127.0.0.1 to the next (rebinding).
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from atom.actions.base import ActionContext
from atom.actions.http_request import run as http_run
from atom.config import Settings
from atom.errors import PermanentError, RetryableError
from atom.security.netguard import check_target, parse
from atom.security.transport import PinnedSMTP, pinned_session
from tests.integration.loopback import LoopbackService

PUBLIC = "93.184.215.14"  # a public address; nothing answers there from this machine

# Refused whatever the allowlist says: two parsers could read them differently.
AMBIGUOUS = [
    "http://169.254.169.254\\@example.com/",
    "http://127.0.0.1:80\\@169.254.169.254/",
    "http:/\\/127.0.0.1/",
    "http://user:pass@169.254.169.254/",
    "http://example.com@127.0.0.1/",
    "http://169.254.169.254:80@example.com/",
    "http://@127.0.0.1/",
    "http://2852039166/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://0x7f.0x0.0x0.0x1/",
    "http://0177.0.0.1/",
    "http://017700000001/",
    "http://127.1/",
    "http://127.0.1/",
    "http://127.000.000.001/",
    "http://0/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[0:0:0:0:0:ffff:a9fe:a9fe]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "http://[fe80::1%25eth0]/",
    "http://%31%32%37.0.0.1/",
    "http://127.0.0.1\t/",
    "http://exa\nmple.com/",
    " http://127.0.0.1/",
    "http://1.1.1.1 &@127.0.0.1# @3.3.3.3/",
    "http://127.0.0.1\x00.example.com/",
]
EVERYTHING = ("0.0.0.0/0", "::/0")


@pytest.mark.parametrize("url", AMBIGUOUS)
def test_ambiguous_urls_are_refused_whatever_the_allowlist(url):
    assert len(AMBIGUOUS) >= 25
    with pytest.raises(PermanentError):
        check_target(url, EVERYTHING)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost./",
        "http://[::]/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data/",
        "HTTP://127.0.0.1/",
    ],
)
def test_canonical_private_targets_are_refused_without_the_allowlist(url):
    with pytest.raises(PermanentError, match="ATOM_HTTP_ALLOWLIST"):
        check_target(url, ())


@pytest.mark.parametrize(
    "url, host, port",
    [
        ("https://api.example.com/v1?q=1", "api.example.com", 443),
        ("http://Example.COM:8080/", "example.com", 8080),
        ("http://[2606:4700::1111]/", "2606:4700::1111", 80),
        ("http://93.184.215.14/x", "93.184.215.14", 80),
    ],
)
def test_plain_urls_parse(url, host, port):
    assert parse(url)[1:] == (host, port)


# --- a DNS server on loopback, and the resolver asking it for *.rebind.test ---


def _dns_answer(query: bytes, address: str) -> bytes:
    (qid,) = struct.unpack("!H", query[:2])
    end = 12
    while query[end] != 0:
        end += query[end] + 1
    question = query[12 : end + 5]
    header = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + socket.inet_aton(address)
    return header + question + answer


class RebindingDns:
    """Answers ``PUBLIC`` to the first A question about a name, 127.0.0.1 afterwards."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.asked: dict[bytes, int] = {}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                query, peer = self.sock.recvfrom(512)
            except OSError:
                return
            name = query[12:].split(b"\x00", 1)[0]
            self.asked[name] = self.asked.get(name, 0) + 1
            address = PUBLIC if self.asked[name] == 1 else "127.0.0.1"
            self.sock.sendto(_dns_answer(query, address), peer)

    def lookup(self, name: str) -> str:
        labels = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
        query = (
            struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + b"\x00\x00\x01\x00\x01"
        )
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(2)
            client.sendto(query, self.sock.getsockname())
            reply = client.recv(512)
        return socket.inet_ntoa(reply[-4:])


@pytest.fixture
def dns(monkeypatch) -> Iterator[RebindingDns]:
    server = RebindingDns()
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, str) and host.rstrip(".").endswith(".rebind.test"):
            address = server.lookup(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 80)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield server
    server.sock.close()


@pytest.fixture
def internal() -> Iterator[LoopbackService]:
    service = LoopbackService().start()
    service.route("GET /.*", lambda r, m: (200, {"secret": "internal"}))
    service.route("POST /.*", lambda r, m: (200, {"secret": "internal"}))
    yield service
    service.stop()


def _ctx(allowlist: tuple[str, ...] = ()) -> ActionContext:
    return ActionContext("e", "n", 1, Settings(http_allowlist=allowlist), timeout=2)


def test_the_dns_server_rebinds(dns):
    assert dns.lookup("a.rebind.test") == PUBLIC
    assert dns.lookup("a.rebind.test") == "127.0.0.1"


def test_dns_rebinding_cannot_reach_loopback_from_a_step(dns, internal):
    port = internal.server.server_port
    with pytest.raises((RetryableError, PermanentError)):
        http_run({"url": f"http://x.rebind.test:{port}/latest", "timeout": 1}, _ctx())
    assert internal.received == []  # the connection went to the checked (public) address


def test_userinfo_backslash_bypass_cannot_reach_loopback(dns, internal):
    port = internal.server.server_port
    url = f"http://127.0.0.1:{port}\\@y.rebind.test/latest"
    with pytest.raises(PermanentError, match="backslash"):
        http_run({"url": url, "timeout": 1}, _ctx())
    assert internal.received == []


def test_pinned_requests_keep_the_host_name(internal):
    port = internal.server.server_port
    with pinned_session(("localhost",)) as session:
        response = session.get(f"http://localhost:{port}/x", timeout=5)
    assert response.status_code == 200
    assert internal.received[0].headers["Host"] == f"localhost:{port}"


def test_every_redirect_hop_is_checked(internal):
    port = internal.server.server_port
    internal.routes.insert(
        0,
        (
            __import__("re").compile("GET /hop$"),
            lambda r, m: (302, {}, {"Location": "http://169.254.169.254/latest/meta-data/"}),
        ),
    )
    with pytest.raises(PermanentError, match="169.254.169.254"):
        http_run({"url": f"http://127.0.0.1:{port}/hop"}, _ctx(("127.0.0.0/8",)))


def test_alert_webhook_rebinding_is_pinned(dns, internal):
    from atom.alerts.channels import deliver

    port = internal.server.server_port
    payload = {
        "event": "firing",
        "severity": "high",
        "rule": "r",
        "metric": "error_rate",
        "value": 1.0,
        "comparison": ">",
        "threshold": 0.5,
        "window": "5m",
    }
    channels = [
        {"type": "webhook", "url": f"http://z.rebind.test:{port}/hook"},
        {"type": "slack", "url": f"http://127.0.0.1:{port}\\@w.rebind.test/hook"},
    ]
    results = deliver(channels, payload, Settings())
    assert [r["ok"] for r in results] == [False, False]
    assert internal.received == []


def test_smtp_connects_to_the_checked_address(dns):
    with pytest.raises(PermanentError, match="ATOM_HTTP_ALLOWLIST"):
        PinnedSMTP("127.0.0.1", 25, 1, allowlist=())
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:  # first answer public: the client must not reach the loopback listener
        with pytest.raises(OSError):
            PinnedSMTP("s.rebind.test", port, 1, allowlist=())
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_redacting_a_step_input_leaves_the_config_alone():
    from atom.security.redaction import redact_step_input

    config = {"url": "http://x/", "headers": {"Authorization": "Bearer t", "Accept": "a"}}
    shown = redact_step_input(config)
    assert shown["headers"] == {"Authorization": "***", "Accept": "a"}
    assert config["headers"]["Authorization"] == "Bearer t"
