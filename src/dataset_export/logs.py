"""Structured logs: one JSON object per line, the shape Cloud Logging parses.

Each line has ``severity``, ``message``, ``time``, the export's ``queryUUID`` when known and the
request's trace (``logging.googleapis.com/trace``).

Context is scoped: every entry point (an HTTP request, a CloudEvent, one delivery of the retry
tick) runs inside :func:`scope`, which sets the export and trace for the lines logged inside it
and restores what was there before when it ends (``contextvars`` tokens). A line logged outside
every scope carries no ``queryUUID``; a scope cannot leak into the next request on a reused
thread.

A redacting pass removes anything shaped like an API key, a signature or a signed URL's query
string, wherever it hides in the line.
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
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)
_query_uuid: contextvars.ContextVar[str | None] = contextvars.ContextVar("queryUUID", default=None)
_scoped: contextvars.ContextVar[bool] = contextvars.ContextVar("logScope", default=False)

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


def redact(text: str) -> str:
    """Remove API keys, signatures and signed-URL tokens from ``text``."""
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
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


def configure(level: int = logging.INFO) -> None:
    """Send every log record to stdout as JSON lines (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.handlers = [handler]
    root.setLevel(level)
