"""The webhook sender against real local servers on 127.0.0.1 (never any other address)."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from dataset_export.adapters.webhook_sender import USER_AGENT, WebhookSender
from dataset_export.core.errors import HostNotFound
from dataset_export_tools.localstack.pki import issue_pki

HOST = "hooks.example.test"
BODY = b'{"queryUUID":"q-1"}'
HEADERS = {"webhook-id": "q-1"}

# --------------------------------------------------------------------------------------------
# Certificates: a throwaway CA and a leaf for hooks.example.test, made at test time
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files for the server and a client context that trusts the CA."""

    cert_file: Path
    key_file: Path
    ca_pem: str

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only the test CA."""
        return ssl.create_default_context(cadata=self.ca_pem)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a server certificate for ``hooks.example.test``."""
    made = issue_pki(tmp_path_factory.mktemp("pki"), dns_names=[HOST], days=1)
    return Pki(made.cert_file, made.key_file, made.ca_file.read_text("ascii"))


# --------------------------------------------------------------------------------------------
# A local server whose answer each test chooses
# --------------------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: bytes


Behaviour = Callable[["_Handler"], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.tls = tls
        self.behaviour: Behaviour = answer(200)
        self.seen: list[Seen] = []
        self.sni: list[str | None] = []
        self.connections = 0
        self.errors: list[BaseException] = []
        self.release = threading.Event()
        self.bytes_written = 0

    def finish_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        with self.tls.wrap_socket(request, server_side=True) as tls_socket:
            super().finish_request(tls_socket, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if error is not None:
            self.errors.append(error)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.server.seen.append(Seen(self.path, dict(self.headers.items()), body))
        self.server.behaviour(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""


def answer(status: int, body: bytes = b"ok", headers: dict[str, str] | None = None) -> Behaviour:
    """A behaviour that answers ``status`` with ``body`` and ``headers``."""

    def run(handler: _Handler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return run


@dataclass
class Servers:
    """The running servers and what they saw."""

    https: _Server
    http: _Server
    pki: Pki
    extra: list[socket.socket] = field(default_factory=list)


def _start(tls: ssl.SSLContext | None) -> _Server:
    server = _Server(tls)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}).start()
    return server


@pytest.fixture
def servers(pki: Pki) -> Iterator[Servers]:
    """An HTTPS server for hooks.example.test (recording SNI) and a plain HTTP one."""
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pki.cert_file, pki.key_file)
    https = _start(tls)

    def record_sni(_obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        https.sni.append(name)

    tls.sni_callback = record_sni
    http = _start(None)
    yield Servers(https, http, pki)
    for server in (https, http):
        server.release.set()
        server.shutdown()
        server.server_close()


class CountingResolver:
    """Answers from a list of answers per call and counts the calls."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append((host, port))
        index = min(len(self.calls), len(self.answers)) - 1
        return self.answers[index]


def port_of(server: _Server) -> int:
    """The server's port."""
    return int(server.server_address[1])


def local_sender(servers: Servers, resolver: Any, **kwargs: Any) -> WebhookSender:
    """A local-mode sender that trusts the test CA."""
    kwargs.setdefault("verify", servers.pki.client_context())
    return WebhookSender(resolver, allow_loopback=True, **kwargs)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


def test_https_delivery_sends_host_sni_and_headers(servers: Servers) -> None:
    """A POST over verified TLS reaches the pinned address with the name in Host and SNI."""
    resolver = CountingResolver(["127.0.0.1"])
    port = port_of(servers.https)
    outcome = local_sender(servers, resolver).send(f"https://{HOST}:{port}/hook?x=1", BODY, HEADERS)
    assert outcome.status_code == 200, outcome
    assert outcome.error is None
    assert outcome.host == HOST
    assert not outcome.permanent
    assert outcome.latency_ms >= 0
    assert outcome.response_bytes == 2
    assert servers.https.sni == [HOST]
    [seen] = servers.https.seen
    assert seen.path == "/hook?x=1"
    assert seen.body == BODY
    assert seen.headers["Host"] == f"{HOST}:{port}"
    assert seen.headers["User-Agent"] == USER_AGENT
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Accept-Encoding"] == "identity"
    assert seen.headers["webhook-id"] == "q-1"
    assert resolver.calls == [(HOST, port)]


def test_resolver_is_called_once_per_send_so_rebinding_cannot_redirect(servers: Servers) -> None:
    """A resolver that rebinds to another address after its first answer is asked once per send."""
    resolver = CountingResolver(["127.0.0.1"], ["10.0.0.1"])
    url = f"https://{HOST}:{port_of(servers.https)}/"
    sender = local_sender(servers, resolver)
    assert sender.send(url, BODY, HEADERS).status_code == 200
    assert len(resolver.calls) == 1
    second = sender.send(url, BODY, HEADERS)
    assert len(resolver.calls) == 2
    assert second.permanent
    assert second.error is not None
    assert second.error.startswith("webhook URL no longer allowed: ")
    assert "10.0.0.1, a private address" in second.error
    assert servers.https.connections == 1


def test_certificate_for_another_name_fails_tls(servers: Servers) -> None:
    """A certificate that does not name the URL's host is a TLS verification failure."""
    resolver = CountingResolver(["127.0.0.1"])
    url = f"https://other.example.test:{port_of(servers.https)}/"
    outcome = local_sender(servers, resolver).send(url, BODY, HEADERS)
    assert outcome.status_code is None
    assert outcome.error is not None
    assert outcome.error.startswith("TLS certificate verify failed"), outcome.error
    assert "other.example.test" in outcome.error
    assert not outcome.permanent
    assert servers.https.seen == []


def test_untrusted_certificate_fails_tls(servers: Servers) -> None:
    """With the system trust store, the test CA's certificate is not trusted."""
    resolver = CountingResolver(["127.0.0.1"])
    url = f"https://{HOST}:{port_of(servers.https)}/"
    outcome = local_sender(servers, resolver, verify=True).send(url, BODY, HEADERS)
    assert outcome.error is not None
    assert outcome.error.startswith("TLS certificate verify failed"), outcome.error
    assert servers.https.seen == []


def test_redirect_is_not_followed(servers: Servers) -> None:
    """A 302 is reported, not followed, even to another local server."""
    target = f"http://127.0.0.1:{port_of(servers.http)}/elsewhere"
    servers.https.behaviour = answer(302, b"", {"Location": target})
    resolver = CountingResolver(["127.0.0.1"])
    url = f"https://{HOST}:{port_of(servers.https)}/"
    outcome = local_sender(servers, resolver).send(url, BODY, HEADERS)
    assert outcome.status_code == 302
    assert outcome.error == "redirects are not followed (HTTP 302)"
    assert servers.http.connections == 0


def test_slow_answer_times_out_at_the_total_timeout(servers: Servers) -> None:
    """A server that never answers is abandoned at the total timeout."""

    def never(handler: _Handler) -> None:
        handler.server.release.wait(5)

    servers.http.behaviour = never
    url = f"http://127.0.0.1:{port_of(servers.http)}/"
    started = time.monotonic()
    outcome = local_sender(servers, CountingResolver(), total_timeout=0.8).send(url, BODY, HEADERS)
    elapsed = time.monotonic() - started
    assert outcome.status_code is None
    assert outcome.error == "timed out after 0.8 s"
    assert 0.7 <= elapsed < 1.5
    assert 700 <= outcome.latency_ms < 1500


def _drip(handler: _Handler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", "100")
    handler.end_headers()
    handler.wfile.flush()
    for _ in range(100):
        if handler.server.release.wait(0.1):
            return
        handler.wfile.write(b"x")
        handler.wfile.flush()


def test_dripping_body_is_cut_at_the_total_timeout_but_the_status_counts(
    servers: Servers,
) -> None:
    """A body sent a byte at a time cannot hold the sender past the deadline; 200 still counts."""
    servers.http.behaviour = _drip
    url = f"http://127.0.0.1:{port_of(servers.http)}/"
    started = time.monotonic()
    outcome = local_sender(servers, CountingResolver(), total_timeout=0.8).send(url, BODY, HEADERS)
    elapsed = time.monotonic() - started
    assert outcome.status_code == 200
    assert outcome.error == "response body not fully read: timed out after 0.8 s"
    assert 0.7 <= elapsed < 1.5
    assert 0 < outcome.response_bytes < 100


def _huge(handler: _Handler) -> None:
    size = 50 * 1024 * 1024
    handler.send_response(200)
    handler.send_header("Content-Length", str(size))
    handler.end_headers()
    chunk = b"x" * 65536
    try:
        while handler.server.bytes_written < size:
            handler.wfile.write(chunk)
            handler.server.bytes_written += len(chunk)
    except OSError:
        handler.close_connection = True


def test_huge_response_is_not_read_past_the_cap(servers: Servers) -> None:
    """Only max_response_bytes of a 50 MiB answer are read before the connection is dropped."""
    servers.http.behaviour = _huge
    url = f"http://127.0.0.1:{port_of(servers.http)}/"
    sender = local_sender(servers, CountingResolver(), max_response_bytes=4096)
    started = time.monotonic()
    outcome = sender.send(url, BODY, HEADERS)
    assert time.monotonic() - started < 1.0
    assert outcome.status_code == 200
    assert outcome.error is None
    assert outcome.response_bytes == 4096
    time.sleep(0.2)
    assert servers.http.bytes_written < 50 * 1024 * 1024


def test_production_policy_refuses_loopback_without_connecting() -> None:
    """With allow_loopback=False a name resolving to 127.0.0.1 is refused before any connect."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        resolver = CountingResolver(["127.0.0.1"])
        sender = WebhookSender(resolver)
        by_name = sender.send(f"https://{HOST}:{port}/", BODY, HEADERS)
        literal = sender.send(f"https://127.0.0.1:{port}/", BODY, HEADERS)
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.accept()
    for outcome in (by_name, literal):
        assert outcome.permanent
        assert outcome.status_code is None
        assert outcome.error is not None
        assert outcome.error.startswith("webhook URL no longer allowed: ")
        assert "loopback" in outcome.error
    assert by_name.host == HOST
    assert literal.host == "127.0.0.1"
    assert len(resolver.calls) == 1


def test_retry_after_is_passed_through(servers: Servers) -> None:
    """A 429's Retry-After (seconds or HTTP-date) arrives in the outcome."""
    now = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)
    url = f"http://127.0.0.1:{port_of(servers.http)}/"
    sender = local_sender(servers, CountingResolver(), clock=lambda: now)
    servers.http.behaviour = answer(429, b"slow down", {"Retry-After": "120"})
    outcome = sender.send(url, BODY, HEADERS)
    assert outcome.status_code == 429
    assert outcome.retry_after == dt.timedelta(seconds=120)
    servers.http.behaviour = answer(503, b"", {"Retry-After": "Fri, 27 Nov 2026 10:30:00 GMT"})
    outcome = sender.send(url, BODY, HEADERS)
    assert outcome.status_code == 503
    assert outcome.retry_after == dt.timedelta(minutes=30)


def test_connection_refused_is_an_outcome() -> None:
    """A closed port gives "connection refused", not an exception."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    outcome = WebhookSender(CountingResolver(), allow_loopback=True).send(
        f"http://127.0.0.1:{port}/", BODY, HEADERS
    )
    assert outcome.status_code is None
    assert outcome.error == "connection refused"
    assert not outcome.permanent


def test_unknown_name_is_retryable() -> None:
    """A name that does not resolve at send time is a retryable failure, not a permanent one."""

    def nowhere(host: str, port: int) -> Sequence[str]:
        raise HostNotFound(host)

    outcome = WebhookSender(nowhere).send(f"https://{HOST}/", BODY, HEADERS)
    assert outcome.error == f"webhook host '{HOST}' does not resolve"
    assert not outcome.permanent


def test_sender_managed_headers_cannot_be_overridden() -> None:
    """Framing headers such as Host are the sender's own."""
    with pytest.raises(ValueError, match="Host"):
        WebhookSender(CountingResolver()).send("https://a.example.com/", BODY, {"Host": "evil"})


def test_tls_verification_cannot_be_disabled_in_production() -> None:
    """verify=False is refused unless loopback (local) mode is on."""
    with pytest.raises(ValueError, match="local"):
        WebhookSender(CountingResolver(), verify=False)


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs to a full queue")
def test_connect_timeout_is_reported() -> None:
    """A listener whose accept queue is full never completes the handshake: connect times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.05)
        sender = WebhookSender(
            CountingResolver(), allow_loopback=True, connect_timeout=0.4, total_timeout=3
        )
        started = time.monotonic()
        outcome = sender.send(f"http://127.0.0.1:{port}/", BODY, HEADERS)
        elapsed = time.monotonic() - started
        for filler in fillers:
            filler.close()
    assert outcome.error == "connect timed out after 0.4 s"
    assert 0.3 <= elapsed < 1.0
