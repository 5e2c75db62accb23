"""The export record (what Firestore keeps about one export) and its public status document."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from .dataset import SubmittedDataset
from .parts import PartSpec

if TYPE_CHECKING:  # delivery.py reads iso_z from here and its lease from lifecycle.py
    from .delivery import DeliveryRecord


class ExportStatus(StrEnum):
    """Lifecycle of an export. ``submitting`` is internal: the client has no 201 for it yet."""

    SUBMITTING = "submitting"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def iso_z(moment: dt.datetime | None) -> str | None:
    """ISO-8601 UTC with millisecond precision and a ``Z``, as every timestamp in the API."""
    if moment is None:
        return None
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class ExportRecord:
    """Everything known about one export; later stages fill the optional fields.

    Frozen: a transition is a new record (``dataclasses.replace``), as ``lifecycle.claimed``
    makes one; the store writes the fields that changed.
    """

    query_uuid: str
    account_id: str
    key_hash: str
    key_id: str
    name: str
    format: str
    webhook_url: str
    dataset: SubmittedDataset  # as submitted; the webhook echoes it
    status: ExportStatus
    requested_on: dt.datetime
    idempotency_key: str | None = None
    queued_message_id: str | None = None
    started_on: dt.datetime | None = None
    completed_on: dt.datetime | None = None
    rows_written: int | None = None
    number_rows: int | None = None
    size_bytes: int | None = None
    error: dict[str, str] | None = None
    delivery: DeliveryRecord | None = None  # None until the first webhook attempt
    object_name: str | None = None
    crc32c: str | None = None
    md5: str | None = None
    lease_owner: str | None = None
    lease_expires_on: dt.datetime | None = None
    run_attempts: int | None = None
    last_error: dict[str, str] | None = None  # the last failed attempt: code, message, at
    ready_published_on: dt.datetime | None = None
    #: Set when the export was planned as parts (``core.parts``): how many.
    parts_total: int | None = None
    #: When every part's message was published: from then on the parts run the export.
    parts_published_on: dt.datetime | None = None
    #: The rows the plan expects in the whole result, when the engine knows them.
    planned_rows: int | None = None
    #: The version of the dataset the plan counted (a Cloud Storage generation): every part
    #: reads that one, or fails with ``dataset_changed`` when it is gone. None: unversioned.
    dataset_version: str | None = None
    #: The columns known clean in that dataset when it was planned
    #: (``ExportEngine.clean_columns``), and the engine's rules they were found under
    #: (``ExportEngine.clean_rules``): a part under the same rules writes them unchecked.
    clean_columns: frozenset[str] = frozenset()
    clean_rules: str | None = None
    #: The query engine that runs (or ran) the export: "duckdb" or "bigquery".
    engine: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def time_taken_ms(self) -> int | None:
        """Milliseconds from request to completion, once complete."""
        if self.completed_on is None:
            return None
        return int((self.completed_on - self.requested_on) / dt.timedelta(milliseconds=1))

    def status_document(self, parts: Sequence[PartRecord] = ()) -> dict[str, Any]:
        """The body of ``GET /dataset/export/{queryUUID}``; fields that do not apply are absent.

        ``parts``: the part records of an export planned as parts, for its live progress (rows
        written across parts, parts done); a finished export needs none.
        """
        status = ExportStatus.QUEUED if self.status is ExportStatus.SUBMITTING else self.status
        rows_written = self.rows_written
        parts_doc = None
        if self.parts_total:
            done = sum(1 for p in parts if p.status is ExportStatus.SUCCEEDED)
            if self.status is ExportStatus.SUCCEEDED:
                done = self.parts_total
            elif parts:
                rows_written = sum(p.rows_written for p in parts)
            parts_doc = {"total": self.parts_total, "done": done}
        last_error = self.last_error
        if last_error is None and self.status is ExportStatus.RUNNING:
            # The most recent failed attempt of any part, while the parts retry.
            errors = [
                p.last_error
                for p in parts
                if p.last_error and p.status is not ExportStatus.SUCCEEDED
            ]
            last_error = max(errors, key=lambda e: e.get("at", ""), default=None)
        doc: dict[str, Any] = {
            "queryUUID": self.query_uuid,
            "name": self.name,
            "format": self.format,
            "status": status.value,
            "requestedOn": iso_z(self.requested_on),
        }
        optional: dict[str, Any] = {
            "startedOn": iso_z(self.started_on),
            "completedOn": iso_z(self.completed_on),
            "progress": None if rows_written is None else {"rowsWritten": rows_written},
            "parts": parts_doc,
            "timeTakenMs": self.time_taken_ms,
            "engine": self.engine,
            "numberRows": self.number_rows,
            "sizeBytes": self.size_bytes,
            "checksum": (
                {k: v for k, v in (("crc32c", self.crc32c), ("md5", self.md5)) if v} or None
            ),
            "error": self.error,
            "attempts": self.run_attempts or None,
            "lastError": last_error,
            "delivery": None if self.delivery is None else self.delivery.public_document(),
        }
        doc.update({k: v for k, v in optional.items() if v is not None})
        return doc


@dataclass(frozen=True)
class PartRecord:
    """One part of an export planned as parts: its rows of the dataset file and how it runs.

    Claimed like an export (``core.lifecycle.decide_claim`` on its status and lease): ``queued``,
    ``running`` under a worker's lease, ``succeeded`` with its temporary object, or ``failed``.
    """

    query_uuid: str
    index: int
    start: int  # what the part reads: file rows [start, stop) (stop None: to the end) ...
    stop: int | None
    expected_rows: int | None  # what the plan counted there; a part that finds other rows fails
    stream: str | None = None  # ... or a read stream of the result (BigQuery)
    status: ExportStatus = ExportStatus.QUEUED
    lease_owner: str | None = None
    lease_expires_on: dt.datetime | None = None
    attempts: int = 0
    rows_written: int = 0
    object_name: str | None = None
    size_bytes: int | None = None
    crc32c: str | None = None
    last_error: dict[str, str] | None = None
    completed_on: dt.datetime | None = None


def part_record(query_uuid: str, spec: PartSpec) -> PartRecord:
    """The queued record of a planned part."""
    return PartRecord(
        query_uuid, spec.index, spec.start, spec.stop, spec.expected_rows, stream=spec.stream
    )


def part_spec(part: PartRecord) -> PartSpec:
    """What the engine reads for ``part``."""
    return PartSpec(part.index, part.start, part.stop, part.expected_rows, part.stream)
