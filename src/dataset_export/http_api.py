"""The HTTP API as plain data in, plain data out: routing, status codes, JSON bodies.

``functions/submit/main.py`` turns a Flask request into an ``HttpRequest`` and an
``HttpResponse`` back; everything between is here and testable without a server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from . import logs
from .core.errors import (
    HttpError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    TransientError,
    UnsupportedMediaType,
)
from .core.records import ExportRecord, iso_z
from .service.downloads import Downloads
from .service.notify import Redelivery
from .service.submit import ExportService

log = logging.getLogger(__name__)

_EXPORT_PATH = re.compile(r"/dataset/export/([^/]+)")
_DOWNLOAD_PATH = re.compile(r"/dataset/export/([^/]+)/download")
_REDELIVER_PATH = re.compile(r"/dataset/export/([^/]+)/redeliver")
_JSON_TYPE = re.compile(r"application/(?:[\w.+-]+\+)?json", re.IGNORECASE)
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
}


@dataclass(frozen=True)
class HttpRequest:
    """A request as the API sees it; header names are matched case-insensitively."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (any case), or None."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True)
class HttpResponse:
    """Status, JSON-ready body and headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        """The body as compact UTF-8 JSON."""
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description shipped with the package."""
    text = resources.files("dataset_export").joinpath("openapi.json").read_text("utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def _json(status: int, body: Any, **headers: str) -> HttpResponse:
    return HttpResponse(
        status, body, {"Content-Type": "application/json", **_SECURITY_HEADERS, **headers}
    )


def _error(exc: HttpError) -> HttpResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after_seconds)
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = exc.allow
    return _json(exc.status, exc.to_body(), **headers)


_FRAMEWORK_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}


def framework_error(status: int, description: str) -> HttpResponse:
    """A JSON error for what the web framework refuses before the API sees it (odd paths)."""
    code = _FRAMEWORK_CODES.get(status, "invalid_request" if status < 500 else "internal")
    return _json(status, {"error": {"code": code, "message": description}})


#: Seconds a whole request body may take to arrive, from when the handler starts reading it.
#: The web server (functions-framework's gunicorn, locally and in Cloud Functions) reads a body
#: without any deadline, and Cloud Run's request timeout (60 s for submit) answers 504 to the
#: client but leaves the handler waiting: without this, a few connections that send headers and
#: then nothing hold every worker thread. A 64 KiB body takes well under a second.
BODY_TIMEOUT_SECONDS = 10.0


def body_connection(environ: Mapping[str, Any]) -> socket.socket | None:
    """The client connection of a WSGI request that has a body to read, else None."""
    length = str(environ.get("CONTENT_LENGTH") or "").strip()
    chunked = bool(environ.get("HTTP_TRANSFER_ENCODING"))
    if not chunked and (not length.isdigit() or int(length) == 0):
        return None
    # gunicorn (functions-framework's server) and werkzeug's development server both expose it.
    for key in ("gunicorn.socket", "werkzeug.socket"):
        connection = environ.get(key)
        if isinstance(connection, socket.socket):
            return connection
    return None


def read_body(
    read: Callable[[int], bytes],
    limit: int,
    connection: socket.socket | None,
    timeout: float = BODY_TIMEOUT_SECONDS,
) -> bytes | None:
    """Up to ``limit`` bytes of the body from ``read``, or None when they did not all arrive
    within ``timeout`` seconds.

    The deadline holds for the body as a whole, however slowly it trickles in (a socket timeout
    would only bound each read): when it passes, a timer shuts the reading side of
    ``connection``, which ends a blocked read at once. The answer can still be written, and the
    server closes the connection afterwards. Without a connection the body is read as it comes.
    """
    if connection is None:
        return _read_upto(read, limit)
    lock = threading.Lock()
    state = {"done": False, "expired": False}

    def expire() -> None:
        with lock:
            if state["done"]:
                return
            state["expired"] = True
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RD)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        body = _read_upto(read, limit)
    except Exception:
        # A read cut short by the timer fails in the server's or werkzeug's own way.
        if state["expired"]:
            return None
        raise
    finally:
        with lock:
            state["done"] = True
        timer.cancel()
    return None if state["expired"] else body


def _read_upto(read: Callable[[int], bytes], limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def body_timeout(timeout: float = BODY_TIMEOUT_SECONDS) -> HttpResponse:
    """408 for a request whose body did not arrive in time."""
    log.warning("request body did not arrive within %.0f s; answered 408", timeout)
    return framework_error(
        408, f"the request body did not arrive within {timeout:.0f} s; send it at once and retry"
    )


@dataclass
class ExportApi:
    """Routes requests to the ``ExportService``."""

    service: ExportService
    max_body_bytes: int
    downloads: Downloads | None = None
    redelivery: Redelivery | None = None
    project: str = ""  # names the request's trace in log lines

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Answer one request; never raises (unexpected errors become a logged 500).

        Its log lines carry its trace and, once known, its export; no line after it does.
        """
        header = request.header("x-cloud-trace-context") or request.header("traceparent")
        with logs.scope(trace=logs.trace_name(header, self.project)):
            return self._answer(request)

    def _answer(self, request: HttpRequest) -> HttpResponse:
        try:
            return self._route(request)
        except HttpError as exc:  # a 4xx, or a 503 the service raised itself
            return _error(exc)
        except TransientError:
            log.exception("dependency unavailable")
            return _error(ServiceUnavailable("a dependency is unavailable; please retry shortly"))
        except Exception:
            log.exception("unexpected error")
            return _json(
                500, {"error": {"code": "internal", "message": "internal error; please retry"}}
            )

    def _route(self, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        method = request.method.upper()
        if method == "HEAD":
            method = "GET"  # the framework drops the body of a HEAD answer
        if path == "/openapi.json":
            self._allow(method, "GET")
            return _json(200, openapi_document())
        if path == "/dataset/export":
            self._allow(method, "POST")
            return self._submit(request)
        match = _DOWNLOAD_PATH.fullmatch(path)
        if match and self.downloads is not None:
            # The link is the credential: no API key, so a customer's pipeline can fetch it.
            self._allow(method, "GET")
            logs.tag(match.group(1))
            signed = self.downloads.redeem(match.group(1), request.query.get("token", ""))
            return _json(
                302, {"location": "redirecting to a short-lived signed URL"}, Location=signed
            )
        match = _REDELIVER_PATH.fullmatch(path)
        if match and self.redelivery is not None:
            self._allow(method, "POST")
            caller = self.service.authenticate(request.header("x-api-key"))
            self.service.check_rate(caller)
            record = self.service.status(caller, match.group(1))
            logs.tag(record.query_uuid)
            self.redelivery.start(record.query_uuid)
            return self._status(self.service.status(caller, record.query_uuid), 202)
        match = _EXPORT_PATH.fullmatch(path)
        if match:
            self._allow(method, "GET")
            caller = self.service.authenticate(request.header("x-api-key"))
            record = self.service.status(caller, match.group(1))
            logs.tag(record.query_uuid)
            return self._status(record, 200)
        raise NotFound(f"no route for {method} {request.path}")

    def _status(self, record: ExportRecord, status: int) -> HttpResponse:
        document = record.status_document(self.service.live_parts(record))
        link = self.downloads.link_for(record) if self.downloads else None
        if link is not None:
            document["download"] = {"url": link.url, "expires": iso_z(link.expires)}
        return _json(status, document)

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed:
            raise MethodNotAllowed(f"{method} is not allowed here; use {allowed}", allow=allowed)

    def _submit(self, request: HttpRequest) -> HttpResponse:
        caller = self.service.authenticate(request.header("x-api-key"))
        content_type = (request.header("content-type") or "").split(";", 1)[0].strip()
        if not _JSON_TYPE.fullmatch(content_type):
            raise UnsupportedMediaType(
                f"Content-Type must be application/json, got '{content_type or 'none'}'",
                field="Content-Type",
            )
        declared = request.header("content-length")
        if len(request.body) > self.max_body_bytes or (
            declared and declared.isdigit() and int(declared) > self.max_body_bytes
        ):
            raise PayloadTooLarge(
                f"request body is larger than the limit of {self.max_body_bytes} bytes"
            )
        result = self.service.submit(caller, request.body, request.header("idempotency-key"))
        logs.tag(result.query_uuid)
        headers = {"Location": f"/dataset/export/{result.query_uuid}"}
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
        return _json(201, {"queryUUID": result.query_uuid}, **headers)
