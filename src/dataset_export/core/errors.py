"""One exception tree for the whole service.

``ExportError`` is the root. ``PermanentError`` means retrying cannot help: record it and
acknowledge the message. ``TransientError`` means a retry may succeed: raise it so Pub/Sub
redelivers. Client-facing errors carry an HTTP status, a stable ``code`` and, where it applies,
the request ``field`` that was wrong, so every message names what was wrong and where.
"""

from __future__ import annotations

import re

# What a customer may read of an error raised below us: no file paths, no URLs, one short line.
_PATH = re.compile(r"(?<![\w.])(?:[A-Za-z]:\\|\.{0,2}/)(?:[\w.@%+~-]+[/\\])+[\w.@%+~-]*")
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_PUBLIC_DETAIL_LIMIT = 300


def public_detail(text: str) -> str:
    """``text`` fit for a customer: its first line, URLs and paths elided, at most 300 chars."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = _PATH.sub("<path>", _URL.sub("<url>", line))
    if len(line) > _PUBLIC_DETAIL_LIMIT:
        line = line[: _PUBLIC_DETAIL_LIMIT - 1] + "…"
    return line


class ExportError(Exception):
    """Root of every error this service raises on purpose."""


class TransientError(ExportError):
    """A failure that a retry may cure (a dependency unavailable, a timeout)."""


class PermanentError(ExportError):
    """A failure that no retry will cure (bad data, a missing column); ``code`` is recorded."""

    code: str = "export_failed"


class QueryRejected(PermanentError):
    """The query engine refused the query itself (invalid input, binding, conversion)."""

    code = "query_rejected"


class ClientError(PermanentError):
    """A request the client must change; rendered as ``{"error": {code, message, field?}}``."""

    status: int = 400
    code: str = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, object]:
        """The JSON error body the HTTP API returns."""
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class InvalidRequest(ClientError):
    """400: the body, the query or the webhook URL is not acceptable."""

    status = 400
    code = "invalid_request"


class InvalidWebhookURL(InvalidRequest):
    """400: the webhook URL breaks the delivery policy (scheme, host, address)."""

    code = "invalid_webhook_url"


class Forbidden(ClientError):
    """403: no API key, an unknown or revoked key, or no Query Builder subscription."""

    status = 403
    code = "forbidden"


class NotFound(ClientError):
    """404: nothing here for this key."""

    status = 404
    code = "not_found"


class MethodNotAllowed(ClientError):
    """405: the path exists but not with this method; ``allow`` lists the one that works."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str) -> None:
        super().__init__(message)
        self.allow = allow


class Conflict(ClientError):
    """409: the request does not fit the export's current state."""

    status = 409
    code = "conflict"


class IdempotencyConflict(Conflict):
    """409: a request with the same Idempotency-Key is still being processed."""

    code = "idempotency_in_progress"


class PayloadTooLarge(ClientError):
    """413: the request body exceeds the size limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ClientError):
    """415: the request body is not declared as JSON."""

    status = 415
    code = "unsupported_media_type"


class IdempotencyKeyReused(ClientError):
    """422: an Idempotency-Key was reused with a different request body."""

    status = 422
    code = "idempotency_key_reused"


class RateLimited(ClientError):
    """429: the key sent more requests than its per-minute allowance."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class ServiceUnavailable(ClientError):
    """503: a dependency (the queue, the database) is unavailable; nothing was created."""

    status = 503
    code = "service_unavailable"
