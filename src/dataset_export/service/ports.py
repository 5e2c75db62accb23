"""Every interface the service layer needs from the outside world, and the values crossing it.

The use cases (``submit``, ``process``, ``notify``, ``downloads``) decide; what they call through
these Protocols only does I/O, with preconditions where a race is possible. Google adapters
implement them in ``dataset_export.adapters``; the in-memory fakes of the unit tests live outside
the deployed package, in ``tests/fakes.py``, and ``tests/contract/`` runs one suite on the fake
store and on the Firestore store so the two behave alike. Values a use case hands back to its own
caller (``SubmitResult``, ``DownloadLink``, ``Webhook``) stay beside the use case; errors live in
``core/errors.py``.

The store is split by use case, one Protocol per concern, so each service names only what it
calls and a fake for one use case need not implement the others:

* ``ExportReader`` / ``KeyReader``: the two reads every other store shares;
* ``ExportStore`` (submit, the API keys): accounts, keys, new exports, idempotency keys,
  rate-limit counters;
* ``LifecycleStore`` (process): the export's run transitions (claim, progress, finish, fail);
* ``DeliveryStore`` (notify, redelivery): the delivery state, written with compare-and-set.

All of them are one Firestore collection set: ``adapters.firestore_store.FirestoreStore`` (and
``tests.fakes.InMemoryStore``) implements every store Protocol.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..core.delivery import AttemptOutcome, DeliveryRecord
from ..core.query import Query
from ..core.ratelimit import RequestCount
from ..core.records import ExportRecord

# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKeyRecord:
    """A stored API key: found by hash, never holding the key in the clear."""

    key_hash: str
    key_id: str
    account_id: str
    ciphertext: str
    created_on: dt.datetime
    revoked_on: dt.datetime | None = None


@dataclass(frozen=True)
class Account:
    """A customer account and what it subscribes to."""

    account_id: str
    query_builder: bool
    created_on: dt.datetime


@dataclass(frozen=True)
class IdempotencyRecord:
    """Which export an (API key, Idempotency-Key) pair already created, and for which body."""

    scope_id: str
    query_uuid: str
    body_hash: str
    created_on: dt.datetime


@dataclass(frozen=True)
class ObjectInfo:
    """What Cloud Storage reports about a finished object."""

    name: str
    size: int
    crc32c: str | None
    md5: str | None
    generation: int | None = None


@dataclass(frozen=True)
class ExportResult:
    """A finished export, ready to record."""

    object_name: str
    rows: int
    size_bytes: int
    crc32c: str | None
    md5: str | None
    started_on: dt.datetime
    completed_on: dt.datetime


@dataclass(frozen=True)
class VersionedExport:
    """An export as read, with the version a guarded write takes back (Firestore: update time)."""

    record: ExportRecord
    version: object


# --- stores ----------------------------------------------------------------------------------


class ExportReader(Protocol):
    """Reads export records."""

    def get_export(self, query_uuid: str) -> ExportRecord | None:
        """The export, or None."""


class KeyReader(Protocol):
    """Reads API key records."""

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, or None."""


class ExportStore(ExportReader, KeyReader, Protocol):
    """Durable state: accounts, keys, exports, idempotency keys, rate-limit counters."""

    def get_account(self, account_id: str) -> Account | None:
        """The account, or None."""

    def put_account(self, account: Account) -> None:
        """Create or replace an account."""

    def create_api_key(self, record: ApiKeyRecord) -> None:
        """Store a new key record; raise ``AlreadyExists`` if the hash is taken."""

    def revoke_api_key(self, key_id: str, when: dt.datetime) -> bool:
        """Mark the key with this id revoked; False when no such key."""

    def create_export(self, record: ExportRecord) -> None:
        """Store a new export; raise ``AlreadyExists`` if the queryUUID is taken."""

    def mark_queued(self, query_uuid: str, message_id: str) -> None:
        """Record that the request message is published (``submitting`` -> ``queued``)."""

    def delete_export(self, query_uuid: str) -> None:
        """Remove an export whose request could not be queued."""

    def create_idempotency(self, record: IdempotencyRecord) -> None:
        """Store an idempotency record; raise ``AlreadyExists`` if the scope id is taken."""

    def get_idempotency(self, scope_id: str) -> IdempotencyRecord | None:
        """The idempotency record, or None."""

    def delete_idempotency(self, scope_id: str) -> None:
        """Forget an idempotency record whose export was never queued."""

    def count_request(self, key_hash: str, second: int) -> RequestCount:
        """Count one request of the key in epoch ``second`` (an atomic increment, shared by
        every instance) and return its position there and the counts of the window's seconds."""

    def uncount_request(self, key_hash: str, second: int) -> None:
        """Take back one request counted in ``second`` (it was refused)."""


class LifecycleStore(ExportReader, Protocol):
    """The export record's transitions, each guarded by a precondition; the runner decides."""

    def read_for_claim(self, query_uuid: str) -> VersionedExport | None:
        """The export and its version, or None when there is no such export."""

    def write_claim(self, record: ExportRecord, *, if_version: object) -> None:
        """Store ``record``'s claim (status, lease, attempts, rows, start) if the export is still
        at ``if_version``; raise ``PreconditionFailed`` otherwise."""

    def record_progress(
        self, query_uuid: str, worker: str, rows: int, lease_expires_on: dt.datetime
    ) -> None:
        """Store rows written so far and renew the lease; raise ``LeaseLost`` if not ours."""

    def complete_export(self, query_uuid: str, worker: str, result: ExportResult) -> None:
        """Mark the export ``succeeded``; raise ``LeaseLost`` if not ours."""

    def release_export(self, query_uuid: str, worker: str, error: dict[str, str]) -> None:
        """Record a failed attempt (``lastError``) and free the lease; ``LeaseLost`` if not ours."""

    def fail_export(self, query_uuid: str, code: str, message: str, now: dt.datetime) -> bool:
        """Mark a not-yet-finished export ``failed``; False if it had already finished."""

    def mark_ready_published(self, query_uuid: str, now: dt.datetime) -> None:
        """Remember that notify was told."""


class DeliveryStore(KeyReader, Protocol):
    """Export records with their delivery state, written with compare-and-set."""

    def load_delivery(
        self, query_uuid: str
    ) -> tuple[ExportRecord, DeliveryRecord | None, object] | None:
        """The export, its delivery (None before the first attempt) and a version token."""

    def save_delivery(self, query_uuid: str, delivery: DeliveryRecord, version: object) -> bool:
        """Write ``delivery`` if the document is still at ``version``; False otherwise."""

    def due_deliveries(self, now: dt.datetime, limit: int) -> list[str]:
        """Exports whose delivery is due (or whose in-flight attempt's lease ran out)."""


# --- queues, files, the engine, the webhook ----------------------------------------------------


class Publisher(Protocol):
    """A topic of ``{"queryUUID": ...}`` messages (``export-requests``, ``export-ready``)."""

    def publish(self, query_uuid: str) -> str:
        """Publish and wait for the broker's confirmation; return the message id.

        Raise ``TransientError`` when the queue is unavailable.
        """


class Writable(Protocol):
    """Where the engine writes the gzip stream."""

    def write(self, data: bytes, /) -> int:
        """Append bytes."""


class Upload(Writable, Protocol):
    """A resumable upload: nothing is visible until ``commit``; ``abort`` leaves nothing."""

    def commit(self) -> ObjectInfo:
        """Finish the upload; raise ``ObjectAlreadyExists`` if the object is already there."""

    def abort(self) -> None:
        """Give the upload up; no object appears."""


class ExportStorage(Protocol):
    """The exports bucket."""

    def open_upload(self, name: str, *, metadata: dict[str, str]) -> Upload:
        """Start a resumable upload of ``name`` (``application/gzip``, no Content-Encoding)."""

    def stat(self, name: str) -> ObjectInfo | None:
        """The object's size and checksums, or None."""


class UrlSigner(Protocol):
    """Makes short-lived signed GET URLs for objects in the exports bucket."""

    def sign(self, name: str, lifetime: dt.timedelta) -> str:
        """A signed URL for ``name`` valid for ``lifetime``."""


class ExportEngine(Protocol):
    """Runs a query and writes the gzip file (``engine.duckdb_engine.run_export``)."""

    def __call__(
        self,
        parquet_path: str,
        query: Query,
        fmt: str,
        out: Writable,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write the export; return the number of data rows."""


class Sender(Protocol):
    """Sends one POST (``adapters.webhook_sender.WebhookSender``)."""

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptOutcome:
        """POST ``body``; never raises for HTTP or network failures."""
