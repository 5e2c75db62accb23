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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..core.delivery import AttemptOutcome, DeliveryRecord
from ..core.parts import ExportPlan, PartSpec
from ..core.query import Query
from ..core.ratelimit import RequestCount
from ..core.records import ExportRecord, PartRecord

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
    engine: str | None = None  # the engine that ran it ("duckdb", "bigquery")


@dataclass(frozen=True)
class VersionedExport:
    """An export as read, with the version a guarded write takes back (Firestore: update time)."""

    record: ExportRecord
    version: object


@dataclass(frozen=True)
class VersionedPart:
    """A part as read, with the version a guarded write takes back."""

    part: PartRecord
    version: object


# --- stores ----------------------------------------------------------------------------------


class ExportReader(Protocol):
    """Reads export records."""

    def get_export(self, query_uuid: str) -> ExportRecord | None:
        """The export, or None."""


class PartReader(Protocol):
    """Reads the parts of an export planned as parts."""

    def list_parts(self, query_uuid: str) -> list[PartRecord]:
        """The export's parts in order (none when it was not planned as parts)."""


class KeyReader(Protocol):
    """Reads API key records."""

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, or None."""


class ExportStore(ExportReader, PartReader, KeyReader, Protocol):
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


class LifecycleStore(ExportReader, PartReader, Protocol):
    """The export record's transitions, each guarded by a precondition; the runner decides.

    An export planned as parts keeps one record per part beside it (``write_plan``); each part
    is claimed and written like the export, on its own record, so parts running in parallel
    never write the export's record (one document, a hot spot on Firestore) until the last.
    """

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

    def write_plan(
        self,
        query_uuid: str,
        worker: str,
        parts: Sequence[PartRecord],
        *,
        planned_rows: int | None,
        engine: str,
        dataset_version: str | None = None,
        clean_columns: frozenset[str] = frozenset(),
        clean_rules: str | None = None,
    ) -> None:
        """Store the parts (queued), their number, the rows planned, the engine, the
        dataset's version (``DatasetFile.version``) and the columns its parts may write
        unchecked under ``clean_rules`` on the export; ``LeaseLost`` if not ours."""

    def mark_parts_published(self, query_uuid: str, worker: str, now: dt.datetime) -> None:
        """Every part message is out: the parts run the export now, so free its lease;
        ``LeaseLost`` if not ours."""

    def read_part(self, query_uuid: str, index: int) -> VersionedPart | None:
        """The part and its version, or None."""

    def write_part_claim(self, part: PartRecord, *, if_version: object) -> None:
        """Store ``part``'s claim (status, lease, attempts, rows) if it is still at
        ``if_version``; raise ``PreconditionFailed`` otherwise."""

    def record_part_progress(
        self, query_uuid: str, index: int, worker: str, rows: int, lease_expires_on: dt.datetime
    ) -> None:
        """Store the part's rows so far and renew its lease; ``LeaseLost`` if not ours."""

    def complete_part(
        self, query_uuid: str, index: int, worker: str, rows: int, info: ObjectInfo,
        now: dt.datetime,
    ) -> None:  # fmt: skip
        """Mark the part ``succeeded`` with its object; ``LeaseLost`` if not ours."""

    def release_part(self, query_uuid: str, index: int, worker: str, error: dict[str, str]) -> None:
        """Record the part's failed attempt and free its lease; ``LeaseLost`` if not ours."""

    def claim_compose(
        self, query_uuid: str, worker: str, lease_expires_on: dt.datetime, *, if_version: object
    ) -> None:
        """Lease the export to ``worker`` to compose its parts, if it is still at ``if_version``;
        raise ``PreconditionFailed`` otherwise."""

    def clean_columns(self, dataset: str) -> frozenset[str] | None:
        """The columns found clean under ``dataset`` (a ``DatasetFile.identity`` and the
        engine's ``clean_rules``), or None when that was not learnt (or is forgotten)."""

    def keep_clean_columns(self, dataset: str, columns: frozenset[str], now: dt.datetime) -> None:
        """Keep what ``ExportEngine.clean_columns`` found under ``dataset``, for the dataset's
        later exports (for ``firestore_store.CLEAN_COLUMNS_KEPT``, then forgotten)."""


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


class PartsQueue(Protocol):
    """The ``export-parts`` topic: one ``{"queryUUID": ..., "part": k}`` message per part."""

    def publish_parts(self, query_uuid: str, indices: Sequence[int]) -> None:
        """Publish one message per part and wait until the broker confirmed them all.

        Raise ``TransientError`` when the queue is unavailable (some may have gone out).
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

    def compose(
        self, sources: Sequence[str], destination: str, *, metadata: dict[str, str]
    ) -> ObjectInfo:
        """Compose ``sources`` (at most 32), in order, into ``destination``, create-only: raise
        ``ObjectAlreadyExists`` if it exists, ``ObjectMissing`` if a source is gone. A
        composite has a crc32c and no MD5."""

    def delete(self, name: str, *, if_generation: int | None = None) -> bool:
        """Delete the object (only that generation when given); False when it was not there."""

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose name starts with ``prefix``."""


@dataclass(frozen=True)
class DatasetFile:
    """What an engine reads: a local copy of the Parquet dataset (or a BigQuery table's
    ``bq://`` URI), and the version it holds (a Cloud Storage generation; None: unversioned).

    ``identity`` names these very bytes wherever they are read (a Cloud Storage object's URI
    and generation, which no other bytes ever carry): what is learnt of them
    (``LifecycleStore.clean_columns``) is kept under it. None: nothing learnt of this dataset
    may be kept (a local file, which can be rewritten in place; a BigQuery table).
    """

    source: str
    version: str | None = None
    identity: str | None = None


class Datasets(Protocol):
    """The dataset exports read (``adapters.datasets``)."""

    def open(self, version: str | None = None) -> DatasetFile:
        """The dataset as it is now, or, given the ``version`` a plan counted, that version;
        ``DatasetChanged`` when that version is gone."""


class UrlSigner(Protocol):
    """Makes short-lived signed GET URLs for objects in the exports bucket."""

    def sign(self, name: str, lifetime: dt.timedelta) -> str:
        """A signed URL for ``name`` valid for ``lifetime``."""


class ExportEngine(Protocol):
    """Runs a query into gzip members (``engine.duckdb_engine.DuckDbEngine``,
    ``adapters.bigquery_engine.BigQueryEngine``)."""

    def plan(
        self, source: str, query: Query, *, query_uuid: str, target_rows: int, max_parts: int
    ) -> ExportPlan:
        """The export's parts in order (one when the query cannot be split or fits one part).

        May start work the parts read (BigQuery: the query job, its result table, a read
        session); called again for the same export, it finds that work instead of repeating it.
        """

    def export(
        self,
        source: str,
        query: Query,
        fmt: str,
        out: Writable,
        *,
        part: PartSpec | None = None,
        header: bool = True,
        on_progress: Callable[[int], None] | None = None,
        clean: frozenset[str] = frozenset(),
    ) -> int:
        """Write the part's rows (``part`` None: the whole result) as one gzip member to
        ``out``; ``header=False`` leaves the CSV header out; ``clean`` names columns that
        ``clean_columns`` found clean in ``source`` (same bytes, less work). Return the number
        of data rows."""

    def clean_rules(self) -> str:
        """A name for the rules ``clean_columns`` finds and ``export`` uses clean columns
        under: an answer found under other rules (another engine version) is not used."""

    def clean_columns(self, source: str) -> frozenset[str]:
        """The columns of ``source`` whose every value CSV writes as its plain text (text that
        needs no quotes and is not empty, finite numbers DuckDB prints right); a full read of
        them, so the caller keeps the answer."""

    def header(self, query: Query, fmt: str) -> bytes:
        """The CSV header line as a gzip member of its own (``b""`` for JSONL)."""

    def finish(self, query_uuid: str) -> None:
        """Drop what ``plan`` made for the export (BigQuery: its result table); idempotent."""


class Sender(Protocol):
    """Sends one POST (``adapters.webhook_sender.WebhookSender``)."""

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptOutcome:
        """POST ``body``; never raises for HTTP or network failures."""
