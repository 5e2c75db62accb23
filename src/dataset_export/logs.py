"""Structured logs: one JSON object per line, the shape Cloud Logging parses.

Each line has ``severity``, ``message``, ``time``, the export's ``queryUUID`` when known and the
request's trace (``logging.googleapis.com/trace``). A redacting pass removes anything shaped like
an API key, a signature or a signed URL's query string, wherever it hides in the line.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from typing import Any

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)
_query_uuid: contextvars.ContextVar[str | None] = contextvars.ContextVar("queryUUID", default=None)

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


def set_trace(header: str | None, project: str) -> None:
    """Remember the request's trace from ``X-Cloud-Trace-Context`` or ``traceparent``."""
    trace_id: str | None = None
    if header:
        if "/" in header or ";" in header:
            trace_id = header.split("/", 1)[0].split(";", 1)[0]
        elif header.count("-") == 3:
            trace_id = header.split("-")[1]
    _trace.set(f"projects/{project}/traces/{trace_id}" if trace_id and project else None)


def set_query_uuid(query_uuid: str | None) -> None:
    """Tag the following log lines with the export they are about."""
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
