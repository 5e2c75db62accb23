"""One exception tree for the whole service.

Our exception hierarchy (``[HTTP n]``: also an ``HttpError``, rendered with that status):

* ExportError                     everything this service raises on purpose
  x TransientError                a retry may cure it: raised, so Pub/Sub redelivers
    + LeaseLost                   another worker took the export over; stop writing
    + PreconditionFailed          the document changed since it was read; read, decide again
    + UploadAborted               the export gave its upload up mid-body
    + ServiceUnavailable          [HTTP 503] a dependency is down; nothing was created
  x PermanentError                no retry cures it: recorded and acknowledged, with ``code``
    + ConfigError                 a setting is missing or malformed
    + QueryRejected               the query engine refused the query itself
      - QueryTooLarge             it needs more memory than an export may use
      - QueryTooExpensive         it would bill more bytes than an export may (BigQuery)
    + DatasetMismatch             the dataset (file or table) does not fit the catalog
    + DatasetChanged              a part found other rows than its plan counted
    + AlreadyExists               a create found the document already there
      - ObjectAlreadyExists       the export's object is already in the bucket
    + ObjectMissing               an object the operation reads is not in the bucket
    + DeliveryConflict            a delivery transition its current state does not allow
    + KeyDecryptionError          a stored API key does not decrypt
    + HostNotFound                a webhook host name does not resolve
    + ClientError                 [HTTP 4xx] a request the client must change
      - InvalidRequest            [HTTP 400]
        · InvalidWebhookURL       [HTTP 400]
      - Forbidden                 [HTTP 403]
      - NotFound                  [HTTP 404]
      - MethodNotAllowed          [HTTP 405]
      - Conflict                  [HTTP 409]
        · IdempotencyConflict     [HTTP 409]
      - LinkExpired               [HTTP 410]
      - PayloadTooLarge           [HTTP 413]
      - UnsupportedMediaType      [HTTP 415]
      - IdempotencyKeyReused      [HTTP 422]
      - RateLimited               [HTTP 429]
  x HttpError                     how an error renders to HTTP: ``status``, ``code``, ``field``
                                  (the base of ClientError and ServiceUnavailable)

Two axes, kept apart: *retry or not* is the Transient/Permanent branch an error sits on (what
the functions' entry points act on), *how it renders* is ``HttpError`` (what the HTTP API acts
on). A 503 is therefore transient and still answers ``{"error": {"code":
"service_unavailable", ...}}``. Every client-facing message names what was wrong and, through
``field``, where.

Google's transient failures become ``TransientError`` in one place, ``adapters/errors.py``; an
adapter maps only the failures that mean something to its own operation (a conflict on create
is ``AlreadyExists``). Private exceptions that never leave their module are not part of the
tree, and neither are the tooling's (``StackError``, ``CliError``, ``BundleError``: the local
stack, the operator CLI and the bundler never run in a deployed function).
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


# --- retry or not ----------------------------------------------------------------------------


class TransientError(ExportError):
    """A failure that a retry may cure (a dependency unavailable, a timeout)."""


class PermanentError(ExportError):
    """A failure that no retry will cure (bad data, a missing column); ``code`` is recorded."""

    code: str = "export_failed"


class LeaseLost(TransientError):
    """Another worker took the export over; this one must stop writing."""


class PreconditionFailed(TransientError):
    """A guarded write found the document changed since it was read: read it and decide again."""


class UploadAborted(TransientError):
    """Raised inside an upload's request body so the connection drops before the body's end."""


class ConfigError(PermanentError):
    """The environment is missing a setting or holds a malformed one."""

    code = "invalid_configuration"


class QueryRejected(PermanentError):
    """The query engine refused the query itself (invalid input, binding, conversion)."""

    code = "query_rejected"


class QueryTooLarge(QueryRejected):
    """The query needs more memory than an export may use (e.g. Median over millions of groups).

    Permanent: the process function runs one export per instance under a fixed memory limit, so
    the same query over the same dataset needs the same memory on every retry.
    """

    code = "query_too_large"


class QueryTooExpensive(QueryRejected):
    """The query would bill more bytes than an export may (BigQuery's ``maximum_bytes_billed``).

    Permanent: the same query over the same table reads the same bytes on every retry; the
    message names the bytes and the cap, so the customer can select fewer columns.
    """

    code = "query_too_expensive"


class DatasetMismatch(PermanentError):
    """The dataset (its file or table) lacks a column the query needs, holds it with another
    type, or is not there."""

    code = "dataset_mismatch"


class DatasetChanged(PermanentError):
    """A part of an export found other rows than the plan counted: the dataset changed."""

    code = "dataset_changed"


class AlreadyExists(PermanentError):
    """A create found the document already there (exactly one creator wins)."""

    code = "already_exists"


class ObjectAlreadyExists(AlreadyExists):
    """The export's object is already there: an earlier run finished its upload."""


class ObjectMissing(PermanentError):
    """An object the operation reads is not in the bucket (a compose source that is gone)."""

    code = "object_missing"


class DeliveryConflict(PermanentError):
    """A transition that the delivery's current state does not allow (e.g. a second claim)."""

    code = "delivery_conflict"


class KeyDecryptionError(PermanentError):
    """A stored key ciphertext did not decrypt (wrong key-encryption key or tampered)."""

    code = "key_decryption_failed"


class HostNotFound(PermanentError):
    """Raised by a resolver when the host name does not resolve (an answer, not an outage).

    Submit turns it into a 400 naming ``webhookURL``; the webhook sender counts it as a failed
    attempt, and the delivery schedule, not this class, decides whether to try again.
    """

    code = "host_not_found"


# --- how it renders to HTTP ------------------------------------------------------------------


class HttpError(ExportError):
    """An error the HTTP API answers with ``status`` and ``{"error": {code, message, field?}}``.

    Not a branch of its own for retrying: every concrete one is also a ``TransientError`` or a
    ``PermanentError``.
    """

    status: int = 500
    code: str = "internal"

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


class ServiceUnavailable(HttpError, TransientError):
    """503: a dependency (the queue, the database) is unavailable; nothing was created."""

    status = 503
    code = "service_unavailable"


class ClientError(HttpError, PermanentError):
    """A request the client must change (4xx)."""

    status = 400
    code = "invalid_request"


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


class LinkExpired(ClientError):
    """410: the download link is past its expiry."""

    status = 410
    code = "link_expired"


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
