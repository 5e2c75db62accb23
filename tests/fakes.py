"""In-memory fakes of the service's ports for the unit tests (the real ones need Google).

They live beside the tests, outside the deployed package (``dataset_export``), so no function
bundle carries them. ``tests/contract/`` runs one suite on ``InMemoryStore`` and on
``FirestoreStore`` over the emulator, so the fake store cannot drift from the real one.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import google_crc32c

from dataset_export.core.compose import GCS_COMPOSE_LIMIT
from dataset_export.core.delivery import AttemptOutcome, DeliveryRecord
from dataset_export.core.errors import (
    AlreadyExists,
    DatasetChanged,
    HostNotFound,
    LeaseLost,
    ObjectAlreadyExists,
    ObjectMissing,
    PreconditionFailed,
    TransientError,
)
from dataset_export.core.parts import (
    ExportPlan,
    PartSpec,
    RowGroupCount,
    plan_parts,
    single_part_reason,
)
from dataset_export.core.ratelimit import RequestCount, window_of
from dataset_export.core.records import ExportRecord, ExportStatus, PartRecord
from dataset_export.service.ports import (
    Account,
    ApiKeyRecord,
    DatasetFile,
    ExportResult,
    IdempotencyRecord,
    ObjectInfo,
    VersionedExport,
    VersionedPart,
)

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _writes_export(
    method: Callable[Concatenate[InMemoryStore, str, _P], _R],
) -> Callable[Concatenate[InMemoryStore, str, _P], _R]:
    """Move the export's version when the write changed it, as Firestore's update time moves
    on every change to the document (and stays when a write changes nothing)."""

    @functools.wraps(method)
    def write(self: InMemoryStore, query_uuid: str, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        before = self.exports.get(query_uuid)  # records are frozen: writes replace them
        try:
            return method(self, query_uuid, *args, **kwargs)
        finally:
            if self.exports.get(query_uuid) != before:
                self.versions[query_uuid] = self.versions.get(query_uuid, 0) + 1

    return write


class InMemoryStore:
    """Every store port (``ExportStore``, ``LifecycleStore``, ``DeliveryStore``) in dictionaries.

    Each export has a version number that every change to it moves on, as Firestore's update time
    does, so the compare-and-set writes (``write_claim``, ``save_delivery``) fail as they would.
    ``tests/contract`` runs the same tests on it and on ``FirestoreStore``: where they disagree,
    this is what changes.
    """

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.keys: dict[str, ApiKeyRecord] = {}
        self.exports: dict[str, ExportRecord] = {}
        self.idempotency: dict[str, IdempotencyRecord] = {}
        self.counters: dict[str, dict[int, int]] = {}
        self.versions: dict[str, int] = {}
        self.parts: dict[tuple[str, int], PartRecord] = {}
        self.part_versions: dict[tuple[str, int], int] = {}
        self.datasets: dict[str, frozenset[str]] = {}
        #: Raised by ``clean_columns`` when set (a store that cannot answer).
        self.clean_read_error: Exception | None = None

    @property
    def deliveries(self) -> dict[str, DeliveryRecord]:
        """Each export's delivery, for exports that have one."""
        return {q: r.delivery for q, r in self.exports.items() if r.delivery is not None}

    def get_account(self, account_id: str) -> Account | None:
        """The account, or None."""
        return self.accounts.get(account_id)

    def put_account(self, account: Account) -> None:
        """Create or replace an account."""
        self.accounts[account.account_id] = account

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, or None."""
        return self.keys.get(key_hash)

    def create_api_key(self, record: ApiKeyRecord) -> None:
        """Store a new key record."""
        if record.key_hash in self.keys:
            raise AlreadyExists(record.key_hash)
        self.keys[record.key_hash] = record

    def revoke_api_key(self, key_id: str, when: dt.datetime) -> bool:
        """Mark the key with this id revoked."""
        for key_hash, record in self.keys.items():
            if record.key_id == key_id:
                self.keys[key_hash] = dataclasses.replace(record, revoked_on=when)
                return True
        return False

    def create_export(self, record: ExportRecord) -> None:
        """Store a new export."""
        if record.query_uuid in self.exports:
            raise AlreadyExists(record.query_uuid)
        self.exports[record.query_uuid] = record
        self.versions[record.query_uuid] = self.versions.get(record.query_uuid, 0) + 1

    def get_export(self, query_uuid: str) -> ExportRecord | None:
        """The export, or None."""
        return self.exports.get(query_uuid)

    @_writes_export
    def mark_queued(self, query_uuid: str, message_id: str) -> None:
        """Record the published message."""
        record = self.exports.get(query_uuid)
        if record is not None:
            queued = record.status is ExportStatus.SUBMITTING
            status = ExportStatus.QUEUED if queued else record.status
            self._change(record, queued_message_id=message_id, status=status)

    @_writes_export
    def delete_export(self, query_uuid: str) -> None:
        """Remove an export."""
        self.exports.pop(query_uuid, None)

    def create_idempotency(self, record: IdempotencyRecord) -> None:
        """Store an idempotency record."""
        if record.scope_id in self.idempotency:
            raise AlreadyExists(record.scope_id)
        self.idempotency[record.scope_id] = record

    def get_idempotency(self, scope_id: str) -> IdempotencyRecord | None:
        """The idempotency record, or None."""
        return self.idempotency.get(scope_id)

    def delete_idempotency(self, scope_id: str) -> None:
        """Forget an idempotency record."""
        self.idempotency.pop(scope_id, None)

    def count_request(self, key_hash: str, second: int) -> RequestCount:
        """Count one request in ``second``; its position there and the window's counts."""
        counts = self.counters.setdefault(key_hash, {})
        counts[second] = counts.get(second, 0) + 1
        window = {s: counts[s] for s in window_of(second) if s in counts}
        return RequestCount(second, counts[second], window)

    def uncount_request(self, key_hash: str, second: int) -> None:
        """Take back one request counted in ``second``."""
        counts = self.counters.setdefault(key_hash, {})
        counts[second] = max(0, counts.get(second, 0) - 1)

    def load_delivery(
        self, query_uuid: str
    ) -> tuple[ExportRecord, DeliveryRecord | None, object] | None:
        """The export, its delivery and a version number."""
        record = self.get_export(query_uuid)
        if record is None:
            return None
        return record, record.delivery, self.versions.get(query_uuid, 0)

    @_writes_export
    def save_delivery(self, query_uuid: str, delivery: DeliveryRecord, version: object) -> bool:
        """Compare-and-set on the version number."""
        if self.versions.get(query_uuid, 0) != version:
            return False
        # Round-trip through the stored form, as Firestore does (timestamps to milliseconds).
        stored = DeliveryRecord.from_document(delivery.to_document())
        self._change(self.exports[query_uuid], delivery=stored)
        return True

    def due_deliveries(self, now: dt.datetime, limit: int) -> list[str]:
        """Deliveries due by ``now`` (an in-flight one when its lease ran out), most overdue
        first, as Firestore's query on ``deliveryDueOn`` orders them (ties by id)."""
        due = sorted(
            (moment, query_uuid)
            for query_uuid, delivery in self.deliveries.items()
            if (moment := delivery.due_on) is not None and moment <= now
        )
        return [query_uuid for _, query_uuid in due[:limit]]

    # --- the export's lifecycle (process function) -------------------------------------------

    def read_for_claim(self, query_uuid: str) -> VersionedExport | None:
        """The export and its version number, or None."""
        record = self.get_export(query_uuid)
        if record is None:
            return None
        return VersionedExport(record, self.versions.get(query_uuid, 0))

    def write_claim(self, record: ExportRecord, *, if_version: object) -> None:
        """Store the claim if the export is still at ``if_version`` (compare-and-set)."""
        if (
            record.query_uuid not in self.exports
            or self.versions.get(record.query_uuid, 0) != if_version
        ):
            raise PreconditionFailed(f"export {record.query_uuid} changed since read")
        self._store_claim(record.query_uuid, record)

    @_writes_export
    def _store_claim(self, query_uuid: str, record: ExportRecord) -> None:
        self._change(
            self.exports[query_uuid],
            status=record.status,
            lease_owner=record.lease_owner,
            lease_expires_on=record.lease_expires_on,
            run_attempts=record.run_attempts,
            rows_written=record.rows_written,
            started_on=record.started_on,
        )

    def _change(self, record: ExportRecord, **changes: Any) -> None:
        """Store ``record`` with ``changes``, as one write."""
        self.exports[record.query_uuid] = dataclasses.replace(record, **changes)

    def _owned(self, query_uuid: str, worker: str) -> ExportRecord:
        record = self.exports.get(query_uuid)
        if (
            record is None
            or record.lease_owner != worker
            or record.status is not ExportStatus.RUNNING
        ):
            raise LeaseLost(f"export {query_uuid} is no longer leased to {worker}")
        return record

    @_writes_export
    def record_progress(
        self, query_uuid: str, worker: str, rows: int, lease_expires_on: dt.datetime
    ) -> None:
        """Store rows written so far and renew the lease; raise ``LeaseLost`` if not ours."""
        record = self._owned(query_uuid, worker)
        self._change(record, rows_written=rows, lease_expires_on=lease_expires_on)

    @_writes_export
    def complete_export(self, query_uuid: str, worker: str, result: ExportResult) -> None:
        """Mark the export ``succeeded``; raise ``LeaseLost`` if not ours."""
        self._change(
            self._owned(query_uuid, worker),
            status=ExportStatus.SUCCEEDED,
            rows_written=result.rows,
            number_rows=result.rows,
            size_bytes=result.size_bytes,
            object_name=result.object_name,
            crc32c=result.crc32c,
            md5=result.md5,
            engine=result.engine,
            completed_on=result.completed_on,
            lease_owner=None,
            lease_expires_on=None,
        )

    @_writes_export
    def release_export(self, query_uuid: str, worker: str, error: dict[str, str]) -> None:
        """Record a failed attempt and free the lease; raise ``LeaseLost`` if not ours."""
        record = self._owned(query_uuid, worker)
        self._change(record, last_error=dict(error), lease_owner=None, lease_expires_on=None)

    @_writes_export
    def fail_export(self, query_uuid: str, code: str, message: str, now: dt.datetime) -> bool:
        """Mark a not-yet-finished export ``failed``; False if it had already finished."""
        record = self.exports.get(query_uuid)
        if record is None or record.status in (ExportStatus.SUCCEEDED, ExportStatus.FAILED):
            return False
        self._change(
            record,
            status=ExportStatus.FAILED,
            error={"code": code, "message": message},
            completed_on=now,
            lease_owner=None,
            lease_expires_on=None,
        )
        return True

    @_writes_export
    def mark_ready_published(self, query_uuid: str, now: dt.datetime) -> None:
        """Remember that notify was told."""
        self._change(self.exports[query_uuid], ready_published_on=now)

    # --- the parts of an export planned as parts ---------------------------------------------

    def _put_part(self, part: PartRecord) -> None:
        key = (part.query_uuid, part.index)
        if self.parts.get(key) != part:
            self.part_versions[key] = self.part_versions.get(key, 0) + 1
        self.parts[key] = part

    def _owned_part(self, query_uuid: str, index: int, worker: str) -> PartRecord:
        part = self.parts.get((query_uuid, index))
        if part is None or part.lease_owner != worker or part.status is not ExportStatus.RUNNING:
            raise LeaseLost(f"part {index} of export {query_uuid} is no longer leased to {worker}")
        return part

    @_writes_export
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
        """Store the parts, their number, the rows, engine, dataset version and clean columns
        with their rules; ``LeaseLost`` if not ours."""
        record = self._owned(query_uuid, worker)
        planned = {part.index for part in parts}
        for key in [k for k in self.parts if k[0] == query_uuid and k[1] not in planned]:
            del self.parts[key]
        for part in parts:
            self._put_part(part)
        self._change(
            record,
            parts_total=len(parts),
            planned_rows=planned_rows,
            engine=engine,
            dataset_version=dataset_version,
            clean_columns=clean_columns,
            clean_rules=clean_rules,
            rows_written=0,
        )

    @_writes_export
    def mark_parts_published(self, query_uuid: str, worker: str, now: dt.datetime) -> None:
        """Every part message is out: free the export's lease."""
        record = self._owned(query_uuid, worker)
        self._change(record, parts_published_on=now, lease_owner=None, lease_expires_on=None)

    def read_part(self, query_uuid: str, index: int) -> VersionedPart | None:
        """The part and its version number, or None."""
        part = self.parts.get((query_uuid, index))
        if part is None:
            return None
        return VersionedPart(part, self.part_versions.get((query_uuid, index), 0))

    def write_part_claim(self, part: PartRecord, *, if_version: object) -> None:
        """Store the part's claim if it is still at ``if_version``."""
        key = (part.query_uuid, part.index)
        current = self.parts.get(key)
        if current is None or self.part_versions.get(key, 0) != if_version:
            raise PreconditionFailed(f"part {part.index} of {part.query_uuid} changed since read")
        self._put_part(
            dataclasses.replace(
                current,
                status=part.status,
                lease_owner=part.lease_owner,
                lease_expires_on=part.lease_expires_on,
                attempts=part.attempts,
                rows_written=part.rows_written,
            )
        )

    def record_part_progress(
        self, query_uuid: str, index: int, worker: str, rows: int, lease_expires_on: dt.datetime
    ) -> None:
        """Store the part's rows so far and renew its lease."""
        part = self._owned_part(query_uuid, index, worker)
        self._put_part(
            dataclasses.replace(part, rows_written=rows, lease_expires_on=lease_expires_on)
        )

    def complete_part(
        self, query_uuid: str, index: int, worker: str, rows: int, info: ObjectInfo,
        now: dt.datetime,
    ) -> None:  # fmt: skip
        """Mark the part succeeded with its object."""
        part = self._owned_part(query_uuid, index, worker)
        self._put_part(
            dataclasses.replace(
                part,
                status=ExportStatus.SUCCEEDED,
                rows_written=rows,
                object_name=info.name,
                size_bytes=info.size,
                crc32c=info.crc32c,
                completed_on=now,
                lease_owner=None,
                lease_expires_on=None,
            )
        )

    def release_part(self, query_uuid: str, index: int, worker: str, error: dict[str, str]) -> None:
        """Record the part's failed attempt and free its lease."""
        part = self._owned_part(query_uuid, index, worker)
        self._put_part(
            dataclasses.replace(
                part, last_error=dict(error), lease_owner=None, lease_expires_on=None
            )
        )

    def list_parts(self, query_uuid: str) -> list[PartRecord]:
        """The export's parts in order."""
        return sorted(
            (p for (q, _), p in self.parts.items() if q == query_uuid), key=lambda p: p.index
        )

    def claim_compose(
        self, query_uuid: str, worker: str, lease_expires_on: dt.datetime, *, if_version: object
    ) -> None:
        """Lease the export to ``worker`` if it is still at ``if_version``."""
        if query_uuid not in self.exports or self.versions.get(query_uuid, 0) != if_version:
            raise PreconditionFailed(f"export {query_uuid} changed since read")
        self._lease_export(query_uuid, worker, lease_expires_on)

    @_writes_export
    def _lease_export(self, query_uuid: str, worker: str, lease_expires_on: dt.datetime) -> None:
        self._change(
            self.exports[query_uuid], lease_owner=worker, lease_expires_on=lease_expires_on
        )

    def clean_columns(self, dataset: str) -> frozenset[str] | None:
        """The clean columns kept for ``dataset``, or None; ``clean_read_error`` if set."""
        if self.clean_read_error is not None:
            raise self.clean_read_error
        return self.datasets.get(dataset)

    def keep_clean_columns(self, dataset: str, columns: frozenset[str], now: dt.datetime) -> None:
        """Keep ``columns`` for ``dataset``."""
        self.datasets[dataset] = frozenset(columns)


def gcs_crc32c(data: bytes) -> str:
    """The crc32c of ``data`` as Cloud Storage reports it (base64 of the big-endian value)."""
    value = google_crc32c.value(data)
    return base64.b64encode(value.to_bytes(4, "big")).decode("ascii")


class InMemoryUpload:
    """``Upload`` into an ``InMemoryExportStorage``: the object appears only on ``commit``."""

    def __init__(self, storage: InMemoryExportStorage, name: str) -> None:
        self._storage = storage
        self._name = name
        self._data = bytearray()
        self.aborted = False

    def write(self, data: bytes, /) -> int:
        """Append bytes."""
        if self.aborted:
            raise ValueError("write to an aborted upload")
        self._data += data
        return len(data)

    def commit(self) -> ObjectInfo:
        """Create the object; raise ``ObjectAlreadyExists`` if it is already there."""
        if self._name in self._storage.objects:
            raise ObjectAlreadyExists(self._name)
        return self._storage.put(self._name, bytes(self._data))

    def abort(self) -> None:
        """Drop what was written."""
        self.aborted = True


class InMemoryExportStorage:
    """``ExportStorage`` in a dictionary of object name to bytes."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.generations: dict[str, int] = {}
        self.uploads: list[InMemoryUpload] = []
        self.composed: list[tuple[list[str], str]] = []
        self._next_generation = 1

    def put(self, name: str, data: bytes) -> ObjectInfo:
        """Store an object under a new generation."""
        self.objects[name] = data
        self.generations[name] = self._next_generation
        self._next_generation += 1
        return self.info(name)

    def open_upload(self, name: str, *, metadata: dict[str, str]) -> InMemoryUpload:
        """Start an upload of ``name``."""
        upload = InMemoryUpload(self, name)
        self.uploads.append(upload)
        return upload

    def info(self, name: str) -> ObjectInfo:
        """Size, crc32c and generation of a stored object."""
        data = self.objects[name]
        return ObjectInfo(
            name=name,
            size=len(data),
            crc32c=gcs_crc32c(data),
            md5=None,
            generation=self.generations.get(name),
        )

    def stat(self, name: str) -> ObjectInfo | None:
        """The object's size and checksums, or None."""
        return self.info(name) if name in self.objects else None

    def compose(
        self, sources: Sequence[str], destination: str, *, metadata: dict[str, str]
    ) -> ObjectInfo:
        """Concatenate the sources into a new object, create-only, as Cloud Storage does."""
        if not 1 <= len(sources) <= GCS_COMPOSE_LIMIT:
            raise ValueError(f"compose takes 1 to {GCS_COMPOSE_LIMIT} sources")
        if destination in self.objects:
            raise ObjectAlreadyExists(destination)
        missing = [s for s in sources if s not in self.objects]
        if missing:
            raise ObjectMissing(f"compose source {missing[0]} does not exist")
        self.composed.append((list(sources), destination))
        return self.put(destination, b"".join(self.objects[s] for s in sources))

    def delete(self, name: str, *, if_generation: int | None = None) -> bool:
        """Delete the object (that generation only, when given); False when not there."""
        if name not in self.objects:
            return False
        if if_generation is not None and self.generations[name] != if_generation:
            return False
        del self.objects[name]
        del self.generations[name]
        return True

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix``, by name."""
        return [self.info(n) for n in sorted(self.objects) if n.startswith(prefix)]


class FakeSender:
    """A webhook sender that records requests and answers from a script."""

    def __init__(self, *outcomes: AttemptOutcome) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[tuple[str, bytes, dict[str, str]]] = []

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptOutcome:
        """Record the request; answer with the next scripted outcome (default 200)."""
        self.sent.append((url, body, dict(headers)))
        if self.outcomes:
            return self.outcomes.pop(0)
        return AttemptOutcome(200, None, 5, host="hooks.example")


class FakeQueue:
    """``Publisher`` that remembers what was published, or fails on demand."""

    def __init__(self) -> None:
        self.published: list[str] = []
        self.unavailable = False

    def publish(self, query_uuid: str) -> str:
        """Remember the message, or raise ``TransientError`` while unavailable."""
        if self.unavailable:
            raise TransientError("fake queue is unavailable")
        self.published.append(query_uuid)
        return str(len(self.published))


class FakePartsQueue:
    """``PartsQueue`` that remembers the part messages, or fails on demand."""

    def __init__(self) -> None:
        self.published: list[tuple[str, int]] = []
        self.unavailable = False

    def publish_parts(self, query_uuid: str, indices: Sequence[int]) -> None:
        """Remember one message per part, or raise ``TransientError`` while unavailable."""
        if self.unavailable:
            raise TransientError("fake parts queue is unavailable")
        self.published.extend((query_uuid, index) for index in indices)


class FakeResolver:
    """A resolver answering from a table; unknown names do not resolve."""

    def __init__(self, table: Mapping[str, Sequence[str]] | None = None) -> None:
        self.table = dict(table or {})

    def __call__(self, host: str, port: int) -> Sequence[str]:
        """The table's addresses for ``host``."""
        if host not in self.table:
            raise HostNotFound(host)
        return list(self.table[host])


class FakeEngine:
    """``ExportEngine`` over a dataset of ``rows`` rows (``city-<i>``) in row groups of
    ``group_rows``: plans with the real planner, writes the lines of the rows asked for (not
    gzipped: concatenation is what a compose does), reports progress after the header, and can
    fail part-way."""

    name = "fake"

    def __init__(
        self, rows: int = 3, fail_with: BaseException | None = None, group_rows: int = 1
    ) -> None:
        self.rows = rows
        self.fail_with = fail_with
        self.group_rows = group_rows
        self.calls = 0
        self.ranges: list[tuple[int, int | None] | None] = []
        self.finished: list[str] = []
        self.cleans: list[frozenset[str]] = []
        self.scanned: list[str] = []
        #: What ``clean_columns`` finds; an exception: it raises it.
        self.clean_found: frozenset[str] | BaseException = frozenset({"city"})
        #: What ``clean_rules`` names (a deploy of other rules changes it).
        self.rules = "rules-1"

    def plan(
        self, source: str, query: Any, *, query_uuid: str, target_rows: int, max_parts: int
    ) -> ExportPlan:
        """The real planner over ``row_groups``; the whole dataset when it cannot split."""
        reason = single_part_reason(query)
        if reason is not None or max_parts < 2:
            return ExportPlan([PartSpec(0)], None, self.name, reason)
        parts = plan_parts(
            self.row_groups(source, query), target_rows=target_rows, max_parts=max_parts
        )
        rows = sum(p.expected_rows or 0 for p in parts)
        return ExportPlan(parts if len(parts) > 1 else [PartSpec(0)], rows, self.name)

    def export(
        self,
        source: str,
        query: Any,
        fmt: str,
        out: Any,
        *,
        part: PartSpec | None = None,
        header: bool = True,
        on_progress: Callable[[int], None] | None = None,
        clean: frozenset[str] = frozenset(),
    ) -> int:
        """Write the header (unless left out) and the lines of the part's rows; remember the
        clean columns it was given."""
        self.calls += 1
        self.cleans.append(clean)
        whole = part is None or (part.start, part.stop) == (0, None)
        self.ranges.append(None if whole or part is None else (part.start, part.stop))
        if header:
            out.write(b"city\r\n")
        if on_progress is not None:
            on_progress(1)
        if self.fail_with is not None:
            raise self.fail_with
        start = 0 if part is None else part.start
        stop = self.rows if part is None or part.stop is None else part.stop
        indices = range(start, min(stop, self.rows))
        for i in indices:
            out.write(f"city-{i}\r\n".encode())
        return len(indices)

    def row_groups(self, dataset_path: str, query: Any) -> list[RowGroupCount]:
        """Every row matches; groups of ``group_rows``."""
        starts = range(0, self.rows, self.group_rows)
        stops = [min(start + self.group_rows, self.rows) for start in starts]
        return [RowGroupCount(a, b, b - a) for a, b in zip(starts, stops, strict=True)]

    def header(self, query: Any, fmt: str) -> bytes:
        """The header line (``b""`` for JSONL)."""
        return b"city\r\n" if fmt == "csv" else b""

    def finish(self, query_uuid: str) -> None:
        """Remember that the export's temporary state was dropped."""
        self.finished.append(query_uuid)

    def clean_rules(self) -> str:
        """``rules``."""
        return self.rules

    def clean_columns(self, source: str) -> frozenset[str]:
        """``clean_found`` (raised when an exception); remember the source scanned."""
        self.scanned.append(source)
        if isinstance(self.clean_found, BaseException):
            raise self.clean_found
        return self.clean_found


class FailingThenWorking(FakeEngine):
    """Fails the first ``failures`` runs with the given exception, then writes its rows."""

    def __init__(self, failures: int, error: BaseException, rows: int = 3) -> None:
        super().__init__(rows)
        self.failures, self.error = failures, error

    def export(self, *args: Any, **kwargs: Any) -> int:
        """Fail while failures are left, then export."""
        self.fail_with = self.error if self.calls < self.failures else None
        return super().export(*args, **kwargs)


class VersionedDatasets:
    """``Datasets`` with versions, as a dataset in Cloud Storage has: ``open()`` is ``current``,
    a version in ``gone`` raises ``DatasetChanged``; ``opened`` lists the versions asked for."""

    def __init__(self, current: str) -> None:
        self.current = current
        self.gone: set[str] = set()
        self.opened: list[str | None] = []

    def open(self, version: str | None = None) -> DatasetFile:
        """The dataset at ``version`` (None: the current one)."""
        self.opened.append(version)
        wanted = self.current if version is None else version
        if wanted in self.gone:
            raise DatasetChanged(f"dataset version {wanted} is gone")
        return DatasetFile(f"/data/listings-{wanted}.parquet", wanted, f"gs://d/l#{wanted}")
