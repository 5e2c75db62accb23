"""The webhook sender: one POST to a customer's endpoint, safely, as an :class:`AttemptOutcome`.

Safety, in order:

1. The URL is checked against the policy again at send time (:func:`check_webhook_url`), with
   the injected resolver called exactly once. A URL that no longer passes is a *permanent*
   outcome ("webhook URL no longer allowed: ..."); a name that does not resolve, or a resolver
   that fails for now, is an ordinary retryable failure.
2. The connection goes only to an address that check returned (re-checked with
   :func:`address_allowed`): a custom ``httpcore`` network backend dials the pinned IP instead of
   resolving the host again, so DNS rebinding between check and connect cannot redirect us.
   The URL keeps the host name, so the ``Host`` header, TLS SNI and certificate verification
   all use the name.
3. No redirects, no proxies from the environment, ``Accept-Encoding: identity`` (nothing to
   decompress), a connect timeout, and a total deadline that bounds every socket operation
   (a server dripping one byte a second cannot hold us past it). At most
   ``max_response_bytes`` of the body are read (httpcore reads the socket in 64 KiB chunks,
   so the socket may yield up to one chunk more); then the connection is dropped.
4. HTTP and network failures never raise: they become an outcome with a short error text
   ("connection refused", "timed out after 15 s", "TLS certificate verify failed: ...").
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Final
from urllib.parse import urlsplit

import httpcore
import httpx

from ..core.delivery import AttemptOutcome, parse_retry_after
from ..core.errors import HostNotFound, InvalidWebhookURL, TransientError
from ..core.urlpolicy import Resolver, WebhookTarget, check_webhook_url
from ..core.urlpolicy import address_allowed as _address_allowed
from . import dns

__all__ = ["USER_AGENT", "WebhookSender"]

USER_AGENT: Final = "DatasetWebhookExport/1.0"
_RESERVED_HEADERS: Final = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    }
)
_DEADLINE_SLACK: Final = 0.05


def _seconds(value: float) -> str:
    return f"{value:g} s"


# --------------------------------------------------------------------------------------------
# The pinned network backend
# --------------------------------------------------------------------------------------------


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose every read, write and TLS handshake ends by the send's deadline."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _timeout(self, timeout: float | None, kind: type[httpcore.TimeoutException]) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise kind("total deadline reached")
        return remaining if timeout is None else min(timeout, remaining)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._timeout(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(
            ssl_context, server_hostname, self._timeout(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.SyncBackend):
    """Dials only the validated addresses of one target, whatever host httpcore asks for."""

    def __init__(self, target: WebhookTarget, deadline: float, *, allow_loopback: bool) -> None:
        self._target = target
        self._deadline = deadline
        self._allow_loopback = allow_loopback
        self.connected_to: str | None = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if host.strip("[]").lower() != self._target.host or port != self._target.port:
            raise httpcore.ConnectError(f"refusing to connect to unvalidated {host}:{port}")
        last: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in self._target.addresses:
            if not _address_allowed(address, allow_loopback=self._allow_loopback):
                last = httpcore.ConnectError(f"address {address} is not allowed")
                continue
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise httpcore.ConnectTimeout("total deadline reached")
            budget = remaining if timeout is None else min(timeout, remaining)
            try:
                stream = super().connect_tcp(address, port, budget, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            self.connected_to = address
            return _DeadlineStream(stream, self._deadline)
        if last is None:
            raise httpcore.ConnectError("no address to connect to")
        raise last


# --------------------------------------------------------------------------------------------
# The transport seam: httpx on an httpcore pool with the pinned backend
# --------------------------------------------------------------------------------------------

_EXCEPTIONS: Final[tuple[tuple[type[Exception], type[httpx.HTTPError]], ...]] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.TimeoutException, httpx.TimeoutException),
)


def _mapped(exc: Exception) -> Exception:
    for source, target in _EXCEPTIONS:
        if isinstance(exc, source):
            mapped = target(str(exc))
            mapped.__cause__ = exc
            return mapped
    return exc


class _PoolStream(httpx.SyncByteStream):
    def __init__(self, inner: Iterable[bytes]) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._inner
        except (httpcore.ProtocolError, httpcore.NetworkError, httpcore.TimeoutException) as exc:
            raise _mapped(exc) from exc

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class _PinnedTransport(httpx.BaseTransport):
    """An ``httpx`` transport over ``httpcore.ConnectionPool(network_backend=...)``.

    httpx 0.28's ``HTTPTransport`` takes no network backend, hence this small wrapper.
    """

    def __init__(self, ssl_context: ssl.SSLContext, backend: httpcore.NetworkBackend) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = self._pool.handle_request(core_request)
        except (
            httpcore.ProtocolError,
            httpcore.NetworkError,
            httpcore.TimeoutException,
            httpcore.UnsupportedProtocol,
        ) as exc:
            raise _mapped(exc) from exc
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_PoolStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


# --------------------------------------------------------------------------------------------
# Errors as short texts
# --------------------------------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _network_error_text(exc: BaseException) -> str:
    for cause in _chain(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = cause.verify_message or cause.reason or "unknown reason"
            return f"TLS certificate verify failed: {detail}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {cause.reason or cause}"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset by the endpoint"
        if isinstance(cause, BrokenPipeError):
            return "the endpoint closed the connection while we were sending"
    if isinstance(exc, httpx.RemoteProtocolError):
        text = str(exc)
        if "without sending" in text or "disconnected" in text.lower():
            return "the endpoint closed the connection without a complete response"
        return f"invalid HTTP response: {text}"
    for cause in _chain(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return f"network error: {cause.strerror}"
    return f"network error: {exc}" if str(exc) else f"network error: {type(exc).__name__}"


def _host_of(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# The sender
# --------------------------------------------------------------------------------------------


class WebhookSender:
    """Sends one webhook POST per :meth:`send`, following the delivery safety rules above."""

    def __init__(
        self,
        resolver: Resolver = dns.resolve,
        *,
        allow_loopback: bool = False,
        connect_timeout: float = 5.0,
        total_timeout: float = 15.0,
        max_response_bytes: int = 65536,
        verify: ssl.SSLContext | bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if verify is False and not allow_loopback:
            raise ValueError("TLS verification may be turned off only in local (loopback) mode")
        if connect_timeout <= 0 or total_timeout <= 0 or max_response_bytes < 0:
            raise ValueError("timeouts must be positive and the response cap not negative")
        self._resolver = resolver
        self._allow_loopback = allow_loopback
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._max_response_bytes = max_response_bytes
        self._ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._clock = clock

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptOutcome:
        """POST ``body`` to ``url``; never raises for policy, HTTP or network failures."""
        extra = dict(headers)
        reserved = sorted(name for name in extra if name.lower() in _RESERVED_HEADERS)
        if reserved:
            raise ValueError(f"headers the sender sets itself: {', '.join(reserved)}")
        started = time.monotonic()
        deadline = started + self._total_timeout

        def outcome(
            status: int | None,
            error: str | None,
            host: str | None,
            *,
            permanent: bool = False,
            retry_after: timedelta | None = None,
            read: int = 0,
        ) -> AttemptOutcome:
            return AttemptOutcome(
                status_code=status,
                error=error,
                latency_ms=round((time.monotonic() - started) * 1000),
                retry_after=retry_after,
                host=host,
                permanent=permanent,
                response_bytes=read,
            )

        not_found: list[str] = []

        def resolve_once(host: str, port: int) -> list[str]:
            try:
                return list(self._resolver(host, port))
            except HostNotFound:
                not_found.append(host)
                raise

        try:
            target = check_webhook_url(url, resolve_once, allow_loopback=self._allow_loopback)
        except InvalidWebhookURL as exc:
            if not_found:
                return outcome(None, f"webhook host '{not_found[0]}' does not resolve", None)
            return outcome(
                None, f"webhook URL no longer allowed: {exc.message}", _host_of(url), permanent=True
            )
        except TransientError as exc:
            return outcome(None, f"resolving the webhook host failed: {exc}", _host_of(url))

        try:
            request_url = httpx.URL(target.url).copy_with(
                host=target.host,
                port=None
                if target.port == (443 if target.scheme == "https" else 80)
                else target.port,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            return outcome(
                None, f"webhook URL no longer allowed: {exc}", target.host, permanent=True
            )

        backend = _PinnedBackend(target, deadline, allow_loopback=self._allow_loopback)
        transport = _PinnedTransport(self._ssl_context, backend)
        timeout = httpx.Timeout(
            connect=self._connect_timeout,
            read=self._total_timeout,
            write=self._total_timeout,
            pool=self._total_timeout,
        )
        send_headers = {
            "User-Agent": USER_AGENT,
            "Content-Type": "application/json",
            "Accept": "*/*",
            "Accept-Encoding": "identity",
            **extra,
        }
        status: int | None = None
        retry_after: timedelta | None = None
        read = 0
        try:
            with (
                httpx.Client(
                    transport=transport,
                    trust_env=False,
                    follow_redirects=False,
                    timeout=timeout,
                ) as client,
                client.stream("POST", request_url, content=body, headers=send_headers) as resp,
            ):
                status = resp.status_code
                retry_after = parse_retry_after(resp.headers.get("retry-after"), self._clock())
                for chunk in resp.iter_raw():
                    read += len(chunk)
                    if read >= self._max_response_bytes:
                        read = self._max_response_bytes
                        break
        except (httpx.HTTPError, OSError) as exc:
            text = self._error_text(exc, deadline)
            if status is None:
                return outcome(None, text, target.host)
            # The endpoint answered; only its body was cut short. The status decides.
            note = f"response body not fully read: {text}"
            return outcome(status, note, target.host, retry_after=retry_after, read=read)

        error = f"redirects are not followed (HTTP {status})" if 300 <= status < 400 else None
        return outcome(status, error, target.host, retry_after=retry_after, read=read)

    def _error_text(self, exc: BaseException, deadline: float) -> str:
        if isinstance(exc, httpx.TimeoutException):
            if time.monotonic() >= deadline - _DEADLINE_SLACK:
                return f"timed out after {_seconds(self._total_timeout)}"
            if isinstance(exc, httpx.ConnectTimeout):
                return f"connect timed out after {_seconds(self._connect_timeout)}"
            return f"timed out waiting for the endpoint ({type(exc).__name__})"
        return _network_error_text(exc)
