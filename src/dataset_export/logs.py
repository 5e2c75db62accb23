"""Structured logs: one JSON object per line, the shape Cloud Logging parses.

Each line has ``severity``, ``message``, ``time``, the export's ``queryUUID`` when known and the
request's trace (``logging.googleapis.com/trace``).

Context is scoped: every entry point (an HTTP request, a CloudEvent, one delivery of the retry
tick) runs inside :func:`scope`, which sets the export and trace for the lines logged inside it
and restores what was there before when it ends (``contextvars`` tokens). A line logged outside
every scope carries no ``queryUUID``; a scope cannot leak into the next request on a reused
thread.

Secrets: a redacting pass removes anything shaped like an API key, a signature or a signed URL's
query string, wherever it hides in the line, rewrites every ``http(s)://`` URL in it the way
:func:`url_for_log` shows URLs, and redacts the query values of an HTTP request line
(``"GET /path?query HTTP/1.1"``, as access logs and urllib3 print). Library loggers that print
whole URLs (httpx, httpcore, urllib3, google-auth) are quieted to WARNING by :func:`configure`.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any, Final, ParamSpec, TypeVar
from urllib.parse import urlsplit

P = ParamSpec("P")
R = TypeVar("R")

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)
_query_uuid: contextvars.ContextVar[str | None] = contextvars.ContextVar("queryUUID", default=None)
_scoped: contextvars.ContextVar[bool] = contextvars.ContextVar("logScope", default=False)

REDACTED: Final = "[redacted]"
# Loggers that print a request's full URL (query string included) at INFO or DEBUG.
QUIET_LOGGERS: Final = ("httpx", "httpcore", "urllib3", "requests", "google.auth")
# A path segment this long is kept only if it reads as words ("webhook-receiver"); a token, a
# hash or an id that long (the last segment of a Slack, Zapier or Discord hook URL, a UUID) is
# shown as [redacted]. Shorter segments stay: they are what makes a path worth logging.
OPAQUE_SEGMENT_CHARS: Final = 16
_WORDS = re.compile(r"[a-z]+(?:[-_.][a-z]+)*")
_URL_IN_TEXT = re.compile(r"(?i)\bhttps?://[^\s\"<>\\]+")
_TRAILING = "'),.;:!"
_REQUEST_LINE = re.compile(
    r"\b(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (/[^\s?\"\\]*)\?([^\s\"\\]*)"
)

_SECRETS = (
    (re.compile(r"dwe_([a-z2-7]{10})_[A-Za-z0-9_-]{20,}"), r"dwe_\1_[redacted]"),
    (
        re.compile(r"(?i)(x-goog-signature|signature|sig|token|upload_id)=[^&\s\"']+"),
        r"\1=[redacted]",
    ),
    (re.compile(r"(?i)(v1,)[A-Za-z0-9+/=]{20,}"), r"\1[redacted]"),
    (re.compile(r"(?i)(hmacSignature\"?\s*[:=]\s*\"?)[0-9a-f]{16,}"), r"\1[redacted]"),
)
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_SEVERITY = {"WARNING": "WARNING", "CRITICAL": "CRITICAL", "ERROR": "ERROR", "INFO": "INFO"}


def _segment_for_log(segment: str) -> str:
    if len(segment) < OPAQUE_SEGMENT_CHARS or _WORDS.fullmatch(segment):
        return segment
    return REDACTED


def _query_for_log(query: str) -> str:
    items = []
    for item in query.split("&"):
        name, equals, _ = item.partition("=")
        # A bare item (``?SECRET``) is all value.
        items.append(f"{_segment_for_log(name)}={REDACTED}" if equals else (item and REDACTED))
    return "&".join(items)


def url_for_log(url: str) -> str:
    """How a URL may appear in a log: scheme, host, port and path, nothing a customer hid in it.

    Userinfo and fragment are dropped, every query value is ``[redacted]`` (names stay), and a
    path segment of 16 or more characters that is not plain lowercase words (a token, a hash,
    an id) is ``[redacted]`` too. So ``https://u:p@hooks.example:8443/in/T0/9fK2xQ7mZp4LwR8s
    ?key=s#f`` is logged as ``https://hooks.example:8443/in/T0/[redacted]?key=[redacted]``; a
    URL that does not parse as ``scheme://[redacted]``.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{scheme}://{REDACTED}" if scheme else REDACTED
    if ":" in host:
        host = f"[{host}]"
    shown = f"{parts.scheme.lower()}://{host}" if parts.scheme else host
    if port is not None:
        shown += f":{port}"
    shown += "/".join(_segment_for_log(segment) for segment in parts.path.split("/"))
    if parts.query:
        shown += f"?{_query_for_log(parts.query)}"
    return shown


def _url_match_for_log(match: re.Match[str]) -> str:
    # Punctuation that ends a sentence or closes a quote is not the URL's.
    url = match.group(0)
    kept = url.rstrip(_TRAILING)
    return url_for_log(kept) + url[len(kept) :]


def redact(text: str) -> str:
    """Remove API keys, signatures, signed-URL tokens and URL secrets from ``text``."""
    text = _URL_IN_TEXT.sub(_url_match_for_log, text)
    text = _REQUEST_LINE.sub(lambda m: f"{m[1]} {m[2]}?{_query_for_log(m[3])}", text)
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def trace_name(header: str | None, project: str) -> str | None:
    """The trace resource name from ``X-Cloud-Trace-Context`` or ``traceparent``, if any."""
    trace_id: str | None = None
    if header:
        if "/" in header or ";" in header:
            trace_id = header.split("/", 1)[0].split(";", 1)[0]
        elif header.count("-") == 3:
            trace_id = header.split("-")[1]
    return f"projects/{project}/traces/{trace_id}" if trace_id and project else None


@contextlib.contextmanager
def scope(query_uuid: str | None = None, *, trace: str | None = None) -> Iterator[None]:
    """Tag the lines logged inside with this export (None: no export) and trace, and only them.

    ``trace`` left out keeps the enclosing scope's trace. On exit the context is what it was
    before, so the next request or event on this thread starts clean.
    """
    scoped = _scoped.set(True)
    tagged = _query_uuid.set(query_uuid)
    traced = _trace.set(trace) if trace is not None else None
    try:
        yield
    finally:
        if traced is not None:
            _trace.reset(traced)
        _query_uuid.reset(tagged)  # also undoes every tag() inside
        _scoped.reset(scoped)


def scoped(entry_point: Callable[P, R]) -> Callable[P, R]:
    """Run ``entry_point`` (a function's handler) in a :func:`scope` of its own."""

    @functools.wraps(entry_point)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with scope():
            return entry_point(*args, **kwargs)

    return wrapper


def tag(query_uuid: str) -> None:
    """Name the export the rest of the current :func:`scope` is about (once it is known)."""
    if not _scoped.get():
        raise RuntimeError("logs.tag outside logs.scope would tag every later line")
    _query_uuid.set(query_uuid)


class JsonFormatter(logging.Formatter):
    """Format a record as one Cloud Logging JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "DEBUG"),
            "message": record.getMessage(),
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "logger": record.name,
        }
        query_uuid = getattr(record, "queryUUID", None) or _query_uuid.get()
        if query_uuid:
            entry["queryUUID"] = query_uuid
        trace = _trace.get()
        if trace:
            entry["logging.googleapis.com/trace"] = trace
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # Strings first (a URL inside a message is cut at the first JSON escape otherwise),
        # then the whole line, for whatever ``default=str`` turned into text.
        entry = {k: redact(v) if isinstance(v, str) else v for k, v in entry.items()}
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


def configure(level: int = logging.INFO) -> None:
    """Send every log record to stdout as JSON lines, libraries' URLs quieted (idempotent)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(level)
