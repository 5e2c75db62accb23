"""``ExportStore`` on Cloud Firestore (native mode), and on its emulator locally."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from ..core.dataset import SubmittedDataset
from ..core.delivery import DeliveryRecord
from ..core.errors import AlreadyExists, LeaseLost, PreconditionFailed
from ..core.ratelimit import RequestCount, window_of
from ..core.records import ExportRecord, ExportStatus, PartRecord
from ..service.ports import (
    Account,
    ApiKeyRecord,
    ExportResult,
    IdempotencyRecord,
    ObjectInfo,
    VersionedExport,
    VersionedPart,
)
from .errors import google_errors

ACCOUNTS = "accounts"
API_KEYS = "apiKeys"
EXPORTS = "exports"
IDEMPOTENCY = "idempotencyKeys"
RATE_LIMITS = "rateLimits"
DATASET_VERSIONS = "datasetVersions"
#: How long what was learnt of a dataset version is kept (Firestore's TTL on ``expiresOn``,
#: infra/terraform/firestore.tf): a version exported from again after that is scanned again.
CLEAN_COLUMNS_KEPT = dt.timedelta(days=30)

# Record attribute -> Firestore field, for the fields stored one to one.
_EXPORT_FIELDS = {
    "query_uuid": "queryUUID",
    "account_id": "accountId",
    "key_hash": "keyHash",
    "key_id": "keyId",
    "name": "name",
    "format": "format",
    "webhook_url": "webhookURL",
    "requested_on": "requestedOn",
    "idempotency_key": "idempotencyKey",
    "queued_message_id": "queuedMessageId",
    "started_on": "startedOn",
    "completed_on": "completedOn",
    "rows_written": "rowsWritten",
    "number_rows": "numberRows",
    "size_bytes": "sizeBytes",
    "error": "error",
    "object_name": "objectName",
    "crc32c": "crc32c",
    "md5": "md5",
    "lease_owner": "leaseOwner",
    "lease_expires_on": "leaseExpiresOn",
    "run_attempts": "runAttempts",
    "last_error": "lastError",
    "ready_published_on": "readyPublishedOn",
    "parts_total": "partsTotal",
    "parts_published_on": "partsPublishedOn",
    "planned_rows": "plannedRows",
    "dataset_version": "datasetVersion",
    "clean_rules": "cleanRules",
    "engine": "engine",
}
# Part record attribute -> field of its document in the export's ``parts`` subcollection.
_PART_FIELDS = {
    "query_uuid": "queryUUID",
    "index": "index",
    "start": "start",
    "stop": "stop",
    "expected_rows": "expectedRows",
    "stream": "stream",
    "lease_owner": "leaseOwner",
    "lease_expires_on": "leaseExpiresOn",
    "attempts": "attempts",
    "rows_written": "rowsWritten",
    "object_name": "objectName",
    "size_bytes": "sizeBytes",
    "crc32c": "crc32c",
    "last_error": "lastError",
    "completed_on": "completedOn",
}
PARTS = "parts"
# Writes per batch when storing a plan (Firestore takes at most 500).
_PLAN_BATCH = 400
_KNOWN_FIELDS = {
    *_EXPORT_FIELDS.values(),
    "status",
    "datasetJson",
    "cleanColumns",
    "deliveryState",
    "deliveryDueOn",
}
# A precondition race is retried this often before giving the message back to Pub/Sub.
_CONFLICT_RETRIES = 5


def export_to_document(record: ExportRecord) -> dict[str, Any]:
    """The Firestore document of an export (None fields left out)."""
    doc = {f: getattr(record, a) for a, f in _EXPORT_FIELDS.items()}
    doc["status"] = record.status.value
    doc["datasetJson"] = record.dataset.text  # byte for byte as submitted: the webhook signs it
    doc["cleanColumns"] = sorted(record.clean_columns) or None
    if record.delivery is not None:
        doc.update(_delivery_fields(record.delivery))
    doc.update(record.extra)
    return {k: v for k, v in doc.items() if v is not None}


def export_from_document(doc: dict[str, Any]) -> ExportRecord:
    """An export record from its Firestore document."""
    values: dict[str, Any] = {a: doc.get(f) for a, f in _EXPORT_FIELDS.items()}
    extra = {k: v for k, v in doc.items() if k not in _KNOWN_FIELDS}
    return ExportRecord(
        status=ExportStatus(doc["status"]),
        dataset=SubmittedDataset(doc["datasetJson"]),
        delivery=DeliveryRecord.from_document(doc["delivery"]) if doc.get("delivery") else None,
        clean_columns=frozenset(doc.get("cleanColumns") or ()),
        extra=extra,
        **values,
    )


def part_to_document(part: PartRecord) -> dict[str, Any]:
    """The Firestore document of a part (None fields left out)."""
    doc = {f: getattr(part, a) for a, f in _PART_FIELDS.items()}
    doc["status"] = part.status.value
    return {k: v for k, v in doc.items() if v is not None}


def part_from_document(doc: dict[str, Any]) -> PartRecord:
    """A part record from its Firestore document."""
    values: dict[str, Any] = {a: doc.get(f) for a, f in _PART_FIELDS.items()}
    values["attempts"] = values["attempts"] or 0
    values["rows_written"] = values["rows_written"] or 0
    return PartRecord(status=ExportStatus(doc["status"]), **values)


def _delivery_fields(delivery: DeliveryRecord) -> dict[str, Any]:
    """The export document's delivery fields: the record, and its state and due time indexed
    for the retry tick's query."""
    due = delivery.due_on
    return {
        "delivery": delivery.to_document(),
        "deliveryState": delivery.state.value,
        # To the millisecond, as the delivery document keeps it, so "due at t" means due.
        "deliveryDueOn": None
        if due is None
        else due.replace(microsecond=due.microsecond // 1000 * 1000),
    }


class FirestoreStore:
    """Accounts, keys, exports, idempotency keys and rate counters in Firestore."""

    def __init__(self, client: firestore.Client) -> None:
        self._db = client

    @classmethod
    def for_project(cls, project: str, database: str | None = None) -> FirestoreStore:
        """A store on one database of the project, by default its ``(default)`` database (on the
        emulator when FIRESTORE_EMULATOR_HOST is set)."""
        return cls(firestore.Client(project=project, database=database))

    def get_account(self, account_id: str) -> Account | None:
        """The account, or None."""
        with google_errors("reading an account"):
            snap = self._db.collection(ACCOUNTS).document(account_id).get()
        if not snap.exists:
            return None
        doc = snap.to_dict() or {}
        return Account(
            account_id=account_id,
            query_builder=bool(doc.get("queryBuilder")),
            created_on=doc["createdOn"],
        )

    def put_account(self, account: Account) -> None:
        """Create or replace an account."""
        with google_errors("writing an account"):
            self._db.collection(ACCOUNTS).document(account.account_id).set(
                {"queryBuilder": account.query_builder, "createdOn": account.created_on}
            )

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, or None."""
        with google_errors("reading an API key"):
            snap = self._db.collection(API_KEYS).document(key_hash).get()
        if not snap.exists:
            return None
        doc = snap.to_dict() or {}
        return ApiKeyRecord(
            key_hash=key_hash,
            key_id=doc["keyId"],
            account_id=doc["accountId"],
            ciphertext=doc["ciphertext"],
            created_on=doc["createdOn"],
            revoked_on=doc.get("revokedOn"),
        )

    def create_api_key(self, record: ApiKeyRecord) -> None:
        """Store a new key record; raise ``AlreadyExists`` if the hash is taken."""
        doc = {
            "keyId": record.key_id,
            "accountId": record.account_id,
            "ciphertext": record.ciphertext,
            "createdOn": record.created_on,
        }
        try:
            with google_errors("storing an API key"):
                self._db.collection(API_KEYS).document(record.key_hash).create(doc)
        except gexc.Conflict as exc:
            raise AlreadyExists(record.key_hash) from exc

    def revoke_api_key(self, key_id: str, when: dt.datetime) -> bool:
        """Mark the key with this id revoked; False when no such key."""
        with google_errors("revoking an API key"):
            query = self._db.collection(API_KEYS).where(filter=FieldFilter("keyId", "==", key_id))
            found = False
            for snap in query.stream():
                snap.reference.update({"revokedOn": when})
                found = True
        return found

    def create_export(self, record: ExportRecord) -> None:
        """Store a new export; raise ``AlreadyExists`` if the queryUUID is taken."""
        try:
            with google_errors("recording the export"):
                self._db.collection(EXPORTS).document(record.query_uuid).create(
                    export_to_document(record)
                )
        except gexc.Conflict as exc:
            raise AlreadyExists(record.query_uuid) from exc

    def get_export(self, query_uuid: str) -> ExportRecord | None:
        """The export, or None."""
        with google_errors("reading the export"):
            snap = self._db.collection(EXPORTS).document(query_uuid).get()
        return export_from_document(snap.to_dict() or {}) if snap.exists else None

    def mark_queued(self, query_uuid: str, message_id: str) -> None:
        """Record the published message; only a ``submitting`` export becomes ``queued``."""
        ref = self._db.collection(EXPORTS).document(query_uuid)
        with google_errors("marking the export queued"):
            snap = ref.get()
            if not snap.exists:
                return
            update: dict[str, Any] = {"queuedMessageId": message_id}
            if (snap.to_dict() or {}).get("status") == ExportStatus.SUBMITTING.value:
                update["status"] = ExportStatus.QUEUED.value
            # The precondition keeps a concurrent 'running' from being overwritten by 'queued'.
            try:
                ref.update(update, option=self._db.write_option(last_update_time=snap.update_time))
            except gexc.FailedPrecondition:
                ref.update({"queuedMessageId": message_id})

    def delete_export(self, query_uuid: str) -> None:
        """Remove an export whose request could not be queued."""
        with google_errors("removing the export"):
            self._db.collection(EXPORTS).document(query_uuid).delete()

    def create_idempotency(self, record: IdempotencyRecord) -> None:
        """Store an idempotency record; raise ``AlreadyExists`` if the scope id is taken."""
        doc = {
            "queryUUID": record.query_uuid,
            "bodyHash": record.body_hash,
            "createdOn": record.created_on,
            # A TTL policy on this field (see infra/terraform) expires keys after a day.
            "expiresOn": record.created_on + dt.timedelta(hours=24),
        }
        try:
            with google_errors("recording the Idempotency-Key"):
                self._db.collection(IDEMPOTENCY).document(record.scope_id).create(doc)
        except gexc.Conflict as exc:
            raise AlreadyExists(record.scope_id) from exc

    def get_idempotency(self, scope_id: str) -> IdempotencyRecord | None:
        """The idempotency record, or None."""
        with google_errors("reading the Idempotency-Key"):
            snap = self._db.collection(IDEMPOTENCY).document(scope_id).get()
        if not snap.exists:
            return None
        doc = snap.to_dict() or {}
        return IdempotencyRecord(scope_id, doc["queryUUID"], doc["bodyHash"], doc["createdOn"])

    def delete_idempotency(self, scope_id: str) -> None:
        """Forget an idempotency record whose export was never queued."""
        with google_errors("forgetting the Idempotency-Key"):
            self._db.collection(IDEMPOTENCY).document(scope_id).delete()

    # --- rate limit: per-second counts in one document per key and minute -----------------
    # Atomic increments, no transaction and no read-modify-write race: each request learns its
    # position in its second from the increment's own result (core.ratelimit decides). Counts
    # of a minute live in one small document ({"counts": {"07": 3, ...}}) that a TTL policy
    # on expiresOn removes once no window can reach it.

    def _rate_ref(self, key_hash: str, minute: int) -> Any:
        stamp = dt.datetime.fromtimestamp(minute * 60, dt.UTC).strftime("%Y%m%d%H%M")
        return self._db.collection(RATE_LIMITS).document(f"{key_hash}-{stamp}")

    def count_request(self, key_hash: str, second: int) -> RequestCount:
        """Count one request in ``second``; its position there and the window's counts."""
        minute, offset = divmod(second, 60)
        expires = dt.datetime.fromtimestamp((minute + 3) * 60, dt.UTC)
        window = window_of(second)
        refs = {m: self._rate_ref(key_hash, m) for m in sorted({s // 60 for s in window})}
        minute_of = {ref.id: m for m, ref in refs.items()}
        with google_errors("counting the request"):
            result = refs[minute].set(
                {"counts": {f"{offset:02d}": firestore.Increment(1)}, "expiresOn": expires},
                merge=True,
            )
            counts: dict[int, int] = {}
            for snap in self._db.get_all(list(refs.values())):
                base = minute_of[snap.id] * 60
                for text, value in ((snap.to_dict() or {}).get("counts") or {}).items():
                    counts[base + int(text)] = int(value)
        position = int(result.transform_results[0].integer_value)
        counts[second] = max(counts.get(second, 0), position)
        return RequestCount(second, position, {s: n for s, n in counts.items() if s in window})

    def uncount_request(self, key_hash: str, second: int) -> None:
        """Take back one request counted in ``second`` (it was refused)."""
        minute, offset = divmod(second, 60)
        with google_errors("taking back a refused request"):
            self._rate_ref(key_hash, minute).set(
                {"counts": {f"{offset:02d}": firestore.Increment(-1)}}, merge=True
            )

    # --- export lifecycle (process function) -------------------------------------------------
    # Each transition writes with a precondition on the document's update time: no contended
    # transactions (slow on the emulator), and still exactly one winner per race. The claim's
    # decision is the runner's (service/process.py); the other transitions only check that the
    # lease is still the worker's, or that the export has not finished, before they write.

    def _export_ref(self, query_uuid: str) -> Any:
        return self._db.collection(EXPORTS).document(query_uuid)

    def _guarded_update(self, ref: Any, snap: Any, update: dict[str, Any]) -> bool:
        try:
            ref.update(update, option=self._db.write_option(last_update_time=snap.update_time))
        except gexc.FailedPrecondition:
            return False
        return True

    def read_for_claim(self, query_uuid: str) -> VersionedExport | None:
        """The export and its update time, or None when there is no such export."""
        with google_errors("reading the export to claim"):
            snap = self._export_ref(query_uuid).get()
        if not snap.exists:
            return None
        return VersionedExport(export_from_document(snap.to_dict() or {}), snap.update_time)

    def write_claim(self, record: ExportRecord, *, if_version: object) -> None:
        """Store ``record``'s claim if the document's update time is still ``if_version``."""
        update = {
            "status": record.status.value,
            "leaseOwner": record.lease_owner,
            "leaseExpiresOn": record.lease_expires_on,
            "runAttempts": record.run_attempts,
            "rowsWritten": record.rows_written,
            "startedOn": record.started_on,
        }
        ref = self._export_ref(record.query_uuid)
        with google_errors("claiming the export"):
            try:
                ref.update(update, option=self._db.write_option(last_update_time=if_version))
            except gexc.FailedPrecondition as exc:
                raise PreconditionFailed(f"export {record.query_uuid} changed since read") from exc

    def _owned_update(self, query_uuid: str, worker: str, update: dict[str, Any]) -> None:
        self._owned_write(self._export_ref(query_uuid), f"export {query_uuid}", worker, update)

    def _owned_write(self, ref: Any, what: str, worker: str, update: dict[str, Any]) -> None:
        for _ in range(_CONFLICT_RETRIES):
            snap = ref.get()
            doc = snap.to_dict() or {}
            if not snap.exists or doc.get("leaseOwner") != worker or doc.get("status") != "running":
                raise LeaseLost(f"{what} is no longer leased to {worker}")
            if self._guarded_update(ref, snap, update):
                return
        raise LeaseLost(f"{what}: too many concurrent updates")

    def record_progress(
        self, query_uuid: str, worker: str, rows: int, lease_expires_on: dt.datetime
    ) -> None:
        """Store rows written so far and renew the lease; raise ``LeaseLost`` if not ours."""
        with google_errors("recording progress"):
            self._owned_update(
                query_uuid, worker, {"rowsWritten": rows, "leaseExpiresOn": lease_expires_on}
            )

    def complete_export(self, query_uuid: str, worker: str, result: ExportResult) -> None:
        """Mark the export ``succeeded``; raise ``LeaseLost`` if not ours."""
        update = {
            "status": ExportStatus.SUCCEEDED.value,
            "rowsWritten": result.rows,
            "numberRows": result.rows,
            "sizeBytes": result.size_bytes,
            "objectName": result.object_name,
            "crc32c": result.crc32c,
            "md5": result.md5,
            "engine": result.engine,
            "completedOn": result.completed_on,
            "leaseOwner": None,
            "leaseExpiresOn": None,
        }
        with google_errors("recording the finished export"):
            self._owned_update(query_uuid, worker, update)

    def release_export(self, query_uuid: str, worker: str, error: dict[str, str]) -> None:
        """Record a failed attempt and free the lease; raise ``LeaseLost`` if not ours."""
        update = {"lastError": dict(error), "leaseOwner": None, "leaseExpiresOn": None}
        with google_errors("recording the failed attempt"):
            self._owned_update(query_uuid, worker, update)

    def fail_export(self, query_uuid: str, code: str, message: str, now: dt.datetime) -> bool:
        """Mark a not-yet-finished export ``failed``; False if it had already finished."""
        ref = self._export_ref(query_uuid)
        with google_errors("recording the failure"):
            for _ in range(_CONFLICT_RETRIES):
                snap = ref.get()
                doc = snap.to_dict() or {}
                if not snap.exists or doc.get("status") in ("succeeded", "failed"):
                    return False
                update = {
                    "status": ExportStatus.FAILED.value,
                    "error": {"code": code, "message": message},
                    "completedOn": now,
                    "leaseOwner": None,
                    "leaseExpiresOn": None,
                }
                if self._guarded_update(ref, snap, update):
                    return True
        raise LeaseLost(f"export {query_uuid}: too many concurrent updates")

    def mark_ready_published(self, query_uuid: str, now: dt.datetime) -> None:
        """Remember that notify was told."""
        with google_errors("recording the ready message"):
            self._export_ref(query_uuid).update({"readyPublishedOn": now})

    # --- the parts of an export planned as parts (process function) ------------------------
    # One document per part under the export (``exports/<id>/parts/<00007>``): parts running in
    # parallel write only their own document, so the export's document (one document sustains
    # about one write a second) is written by the plan, the compose lease and the result.

    def _part_ref(self, query_uuid: str, index: int) -> Any:
        return self._export_ref(query_uuid).collection(PARTS).document(f"{index:05d}")

    def _owned_part_update(
        self, query_uuid: str, index: int, worker: str, update: dict[str, Any]
    ) -> None:
        what = f"part {index} of export {query_uuid}"
        self._owned_write(self._part_ref(query_uuid, index), what, worker, update)

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
        dataset's version and its clean columns with their rules on the export;
        ``LeaseLost`` if not ours."""
        with google_errors("storing the plan"):
            snap = self._export_ref(query_uuid).get()
            doc = snap.to_dict() or {}
            if not snap.exists or doc.get("leaseOwner") != worker or doc.get("status") != "running":
                raise LeaseLost(f"export {query_uuid} is no longer leased to {worker}")
            # The parts first, the export last: a plan counts only once its number is stored,
            # and a worker that dies in between leaves parts that the next plan overwrites.
            # (ref, document): a document to set, None to delete. Parts of an earlier, longer
            # plan that died before it counted are not this plan's.
            writes: list[tuple[Any, dict[str, Any] | None]] = [
                (self._part_ref(query_uuid, part.index), part_to_document(part)) for part in parts
            ]
            planned = {f"{part.index:05d}" for part in parts}
            for ref in self._export_ref(query_uuid).collection(PARTS).list_documents():
                if ref.id not in planned:
                    writes.append((ref, None))
            for first in range(0, len(writes), _PLAN_BATCH):
                batch = self._db.batch()
                for ref, document in writes[first : first + _PLAN_BATCH]:
                    if document is None:
                        batch.delete(ref)
                    else:
                        batch.set(ref, document)
                batch.commit()
            update = {
                "partsTotal": len(parts),
                "plannedRows": planned_rows,
                "engine": engine,
                "datasetVersion": dataset_version,
                "cleanColumns": sorted(clean_columns),
                "cleanRules": clean_rules,
                "rowsWritten": 0,
            }
            self._owned_update(query_uuid, worker, update)

    def mark_parts_published(self, query_uuid: str, worker: str, now: dt.datetime) -> None:
        """Every part message is out: free the export's lease; ``LeaseLost`` if not ours."""
        update = {"partsPublishedOn": now, "leaseOwner": None, "leaseExpiresOn": None}
        with google_errors("recording the published parts"):
            self._owned_update(query_uuid, worker, update)

    def read_part(self, query_uuid: str, index: int) -> VersionedPart | None:
        """The part and its update time, or None."""
        with google_errors("reading the part"):
            snap = self._part_ref(query_uuid, index).get()
        if not snap.exists:
            return None
        return VersionedPart(part_from_document(snap.to_dict() or {}), snap.update_time)

    def write_part_claim(self, part: PartRecord, *, if_version: object) -> None:
        """Store the part's claim if its update time is still ``if_version``."""
        update = {
            "status": part.status.value,
            "leaseOwner": part.lease_owner,
            "leaseExpiresOn": part.lease_expires_on,
            "attempts": part.attempts,
            "rowsWritten": part.rows_written,
        }
        ref = self._part_ref(part.query_uuid, part.index)
        with google_errors("claiming the part"):
            try:
                ref.update(update, option=self._db.write_option(last_update_time=if_version))
            except (gexc.FailedPrecondition, gexc.NotFound) as exc:
                raise PreconditionFailed(
                    f"part {part.index} of export {part.query_uuid} changed since read"
                ) from exc

    def record_part_progress(
        self, query_uuid: str, index: int, worker: str, rows: int, lease_expires_on: dt.datetime
    ) -> None:
        """Store the part's rows so far and renew its lease; ``LeaseLost`` if not ours."""
        update = {"rowsWritten": rows, "leaseExpiresOn": lease_expires_on}
        with google_errors("recording the part's progress"):
            self._owned_part_update(query_uuid, index, worker, update)

    def complete_part(
        self, query_uuid: str, index: int, worker: str, rows: int, info: ObjectInfo,
        now: dt.datetime,
    ) -> None:  # fmt: skip
        """Mark the part ``succeeded`` with its object; ``LeaseLost`` if not ours."""
        update = {
            "status": ExportStatus.SUCCEEDED.value,
            "rowsWritten": rows,
            "objectName": info.name,
            "sizeBytes": info.size,
            "crc32c": info.crc32c,
            "completedOn": now,
            "leaseOwner": None,
            "leaseExpiresOn": None,
        }
        with google_errors("recording the finished part"):
            self._owned_part_update(query_uuid, index, worker, update)

    def release_part(self, query_uuid: str, index: int, worker: str, error: dict[str, str]) -> None:
        """Record the part's failed attempt and free its lease; ``LeaseLost`` if not ours."""
        update = {"lastError": dict(error), "leaseOwner": None, "leaseExpiresOn": None}
        with google_errors("recording the failed part attempt"):
            self._owned_part_update(query_uuid, index, worker, update)

    def list_parts(self, query_uuid: str) -> list[PartRecord]:
        """The export's parts in order."""
        with google_errors("reading the parts"):
            docs = self._export_ref(query_uuid).collection(PARTS).stream()
            parts = [part_from_document(d.to_dict() or {}) for d in docs]
        return sorted(parts, key=lambda p: p.index)

    def claim_compose(
        self, query_uuid: str, worker: str, lease_expires_on: dt.datetime, *, if_version: object
    ) -> None:
        """Lease the export to ``worker`` if its update time is still ``if_version``."""
        update = {"leaseOwner": worker, "leaseExpiresOn": lease_expires_on}
        with google_errors("leasing the export to compose it"):
            try:
                self._export_ref(query_uuid).update(
                    update, option=self._db.write_option(last_update_time=if_version)
                )
            except gexc.FailedPrecondition as exc:
                raise PreconditionFailed(f"export {query_uuid} changed since read") from exc

    def _dataset_ref(self, dataset: str) -> Any:
        # The identity holds '/' (a gs:// URI), which a document id may not: its digest.
        digest = hashlib.sha256(dataset.encode()).hexdigest()[:40]
        return self._db.collection(DATASET_VERSIONS).document(digest)

    def clean_columns(self, dataset: str) -> frozenset[str] | None:
        """The clean columns kept under ``dataset`` (an identity and the rules), or None."""
        with google_errors("reading what is known of the dataset"):
            snap = self._dataset_ref(dataset).get()
        doc = snap.to_dict() or {}
        # The digest's document holds the identity itself: a collision reads as unknown.
        if not snap.exists or doc.get("dataset") != dataset or "cleanColumns" not in doc:
            return None
        return frozenset(doc["cleanColumns"])

    def keep_clean_columns(self, dataset: str, columns: frozenset[str], now: dt.datetime) -> None:
        """Store the clean columns found under ``dataset`` (an identity and the rules: the
        same answer whoever finds it, so a racer's write is as good as this one)."""
        doc = {
            "dataset": dataset,
            "cleanColumns": sorted(columns),
            "learnedOn": now,
            "expiresOn": now + CLEAN_COLUMNS_KEPT,
        }
        with google_errors("keeping what is known of the dataset"):
            self._dataset_ref(dataset).set(doc)

    # --- webhook delivery (notify function) --------------------------------------------------

    def load_delivery(
        self, query_uuid: str
    ) -> tuple[ExportRecord, DeliveryRecord | None, object] | None:
        """The export, its delivery (None before the first attempt) and a version token."""
        with google_errors("reading the delivery"):
            snap = self._export_ref(query_uuid).get()
        if not snap.exists:
            return None
        record = export_from_document(snap.to_dict() or {})
        return record, record.delivery, snap.update_time

    def save_delivery(self, query_uuid: str, delivery: DeliveryRecord, version: object) -> bool:
        """Write ``delivery`` if the document is still at ``version``; False otherwise."""
        update = _delivery_fields(delivery)
        ref = self._export_ref(query_uuid)
        with google_errors("recording the delivery"):
            try:
                ref.update(update, option=self._db.write_option(last_update_time=version))
            except gexc.FailedPrecondition:
                return False
        return True

    def due_deliveries(self, now: dt.datetime, limit: int) -> list[str]:
        """Exports whose delivery is due (or whose in-flight attempt's lease ran out)."""
        query = (
            self._db.collection(EXPORTS)
            .where(filter=FieldFilter("deliveryDueOn", "<=", now))
            .order_by("deliveryDueOn")
            .limit(limit)
        )
        with google_errors("listing due deliveries"):
            return [snap.id for snap in query.stream()]
