"""The notify use case: one signed webhook per finished export, retried on a schedule.

Every attempt is claimed first (a compare-and-set on the export document), so a duplicate or
concurrent Pub/Sub delivery can never send a second webhook after one succeeded. Attempts that
fail are retried by the retry tick (Cloud Scheduler on Google Cloud, a local ticker in the
stack), which calls ``send_due`` every minute; Pub/Sub's own redelivery (at most 600 s apart,
at most 24 h) is only used for crashes.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import random
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from .. import logs
from ..core.delivery import AttemptOutcome, DeliveryRecord, DeliveryState
from ..core.errors import (
    Conflict,
    DeliveryConflict,
    KeyDecryptionError,
    ServiceUnavailable,
    TransientError,
)
from ..core.records import ExportRecord, ExportStatus, iso_z
from ..core.signing import (
    BODY_SIGNATURE_HEADER,
    body_signature,
    encode_webhook_body,
    payload_signature,
    standard_webhook_headers,
)
from ..key_encryption import decrypt_key
from .downloads import mint_link
from .ports import DeliveryStore, Publisher, Sender

log = logging.getLogger(__name__)

_CLAIM_RETRIES = 5
DUE_BATCH = 50
# The next tick comes a minute later; notify's timeout is 540 s.
TICK_BUDGET = dt.timedelta(seconds=240)
# Due retries a tick sends at once: a slow endpoint holds one of these for at most the sender's
# timeout (about 20 s), so 16 keep 50 due retries well inside the budget even if all are slow.
RETRY_CONCURRENCY = 16


@dataclass(frozen=True)
class Webhook:
    """A signed webhook ready to send."""

    url: str
    body: bytes
    headers: dict[str, str]


def build_webhook(
    record: ExportRecord, api_key: str, link_key: bytes, public_url: str, now: dt.datetime
) -> Webhook:
    """The seed's body, keys in its order, signed three ways (payload, raw body, Standard)."""
    link = mint_link(record, link_key, public_url)
    if link is None or record.completed_on is None:
        raise ValueError(f"export {record.query_uuid} has no file to announce")
    payload = record.dataset.payload
    gcs_blob: dict[str, object] = {
        "url": link.url,
        "expires": iso_z(link.expires),
        "timeTakenMs": record.time_taken_ms,
        "numberRows": record.number_rows,
        "sizeBytes": record.size_bytes,
    }
    body = encode_webhook_body(
        [
            ("queryUUID", record.query_uuid),
            ("name", record.name),
            ("format", record.format),
            ("payload", payload),
            ("hmacSignature", payload_signature(api_key, payload)),
            ("gcsBlob", gcs_blob),
            ("requestedOn", iso_z(record.requested_on)),
            ("completedOn", iso_z(record.completed_on)),
        ]
    )
    # Signed afresh per attempt: Standard Webhooks receivers refuse timestamps older than 5 min.
    headers = {
        "Content-Type": "application/json",
        BODY_SIGNATURE_HEADER: body_signature(api_key, body),
        **standard_webhook_headers(api_key, record.query_uuid, int(now.timestamp()), body),
    }
    return Webhook(record.webhook_url, body, headers)


@dataclass
class Notifier:
    """Delivers webhooks for finished exports."""

    store: DeliveryStore
    sender: Sender
    kek: bytes
    link_key: bytes
    public_url: str
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    rng: random.Random = field(default_factory=random.Random)
    retry_concurrency: int = RETRY_CONCURRENCY

    def deliver(self, query_uuid: str) -> DeliveryState | None:
        """Attempt delivery if one is due and nobody else holds it; return the state after."""
        with logs.scope(query_uuid):  # a tick runs many deliveries: each tags its own lines
            claimed = self._claim(query_uuid)
            if claimed is None:
                return None
            record, delivery = claimed
            outcome = self._attempt(record)
            return self._finish(query_uuid, delivery, outcome, record.webhook_url)

    def send_due(self, limit: int = DUE_BATCH, budget: dt.timedelta = TICK_BUDGET) -> int:
        """Attempt deliveries that are due now (the retry tick); return how many ran.

        Attempts run concurrently, at most ``retry_concurrency`` at a time, so an endpoint that
        hangs until the sender's timeout delays only its own retry, not every other customer's.
        No attempt starts once ``budget`` is spent, well inside the function's timeout (a tick
        killed mid-attempt could lose the record of a webhook that was in fact sent); the rest
        are left to the next tick. A transient failure of any attempt is raised after all have
        ended, so Pub/Sub delivers the tick again.
        """
        deadline = self.clock() + budget
        due = self.store.due_deliveries(self.clock(), limit)
        if not due:
            return 0

        def attempt(query_uuid: str) -> bool:
            if self.clock() >= deadline:
                return False
            return self.deliver(query_uuid) is not None

        workers = max(1, min(self.retry_concurrency, len(due)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="retry-tick") as pool:
            # Each attempt runs in a copy of the tick's log context (its trace), as it would inline.
            futures = [pool.submit(contextvars.copy_context().run, attempt, q) for q in due]
        return sum(future.result() for future in futures)

    def _claim(self, query_uuid: str) -> tuple[ExportRecord, DeliveryRecord] | None:
        for _ in range(_CLAIM_RETRIES):
            loaded = self.store.load_delivery(query_uuid)
            if loaded is None:
                log.warning("ready message for an unknown export", extra={"queryUUID": query_uuid})
                return None
            record, delivery, version = loaded
            if record.status is not ExportStatus.SUCCEEDED:
                # The seed: a failed export sends no webhook; the status API says why.
                log.info("export not succeeded; no webhook", extra={"queryUUID": query_uuid})
                return None
            now = self.clock()
            delivery = delivery or DeliveryRecord.new(now)
            abandoned = delivery.lease_expired(now)
            if abandoned:
                delivery = delivery.abandon(now, self.rng)
            try:
                started = delivery.start_attempt(now)
            except DeliveryConflict as exc:
                log.info("no attempt: %s", exc, extra={"queryUUID": query_uuid})
                if abandoned:
                    self.store.save_delivery(query_uuid, delivery, version)
                return None
            if self.store.save_delivery(query_uuid, started, version):
                return record, started
        log.warning(
            "could not claim the delivery; leaving it to the tick", extra={"queryUUID": query_uuid}
        )
        return None

    def _attempt(self, record: ExportRecord) -> AttemptOutcome:
        key_record = self.store.get_api_key(record.key_hash)
        if key_record is None:
            return AttemptOutcome(
                None, "the export's API key no longer exists; cannot sign", 0, permanent=True
            )
        try:
            api_key = decrypt_key(key_record.ciphertext, self.kek, record.key_hash)
        except KeyDecryptionError:
            return AttemptOutcome(
                None, "the export's API key cannot be decrypted", 0, permanent=True
            )
        webhook = build_webhook(record, api_key, self.link_key, self.public_url, self.clock())
        return self.sender.send(webhook.url, webhook.body, webhook.headers)

    def _finish(
        self, query_uuid: str, started: DeliveryRecord, outcome: AttemptOutcome, url: str
    ) -> DeliveryState | None:
        after = started.record_outcome(outcome, self.clock(), self.rng)
        for _ in range(_CLAIM_RETRIES):
            loaded = self.store.load_delivery(query_uuid)
            if loaded is None:
                return None
            _, current, version = loaded
            # Compared as stored (milliseconds): is the in-flight attempt still ours?
            if current is None or iso_z(current.attempt_started_on) != iso_z(
                started.attempt_started_on
            ):
                # Our lease ran out and the attempt was logged as abandoned by someone else.
                log.warning(
                    "attempt outcome arrived after its lease", extra={"queryUUID": query_uuid}
                )
                return None
            if self.store.save_delivery(query_uuid, after, version):
                level = logging.INFO if after.state is DeliveryState.DELIVERED else logging.WARNING
                message = (
                    "webhook delivered"
                    if after.state is DeliveryState.DELIVERED
                    else "webhook delivery failed"
                )
                log.log(
                    level,
                    "%s: %s",
                    message,
                    after.reason,
                    extra={
                        "queryUUID": query_uuid,
                        "webhook": logs.url_for_log(url),
                        "deliveryState": after.state.value,
                        "statusCode": outcome.status_code,
                        "latencyMs": outcome.latency_ms,
                        "attempt": len(after.round_attempts),
                    },
                )
                return after.state
        return None


@dataclass
class Redelivery:
    """``POST /dataset/export/{queryUUID}/redeliver``: a new delivery round, sent at once.

    Either the redelivery happens (202) or nothing changed (503), so a client that retries
    after a 503 never causes two sends. The round is written first (compare-and-set, tagged
    with this request's id), then the ready message is published. If the publish fails, the
    round is taken back with another compare-and-set, and only while it is still this
    request's round with no attempt begun: then nothing changed and the answer is 503. If it
    cannot be taken back, a worker has already started it (the retry tick, or notify woken by a
    message that did get out) or another request has replaced it; the redelivery stands and the
    answer is 202 (the retry tick sends a pending round even without a message). Before the
    first delivery there is nothing to restore: the round is that first delivery, owed anyway.
    A round whose write the store reported as failed may have landed all the same: it is taken
    back the same way before the 503.

    Under at-least-once delivery: every ready message, duplicate or late, only asks notify to
    attempt a delivery that is due, and notify's claim is a compare-and-set, so a message can
    never make a second send out of one round; a message from a publish that reported failure
    but got through finds either the round (and sends it once: then the take-back fails and the
    answer is 202) or the previous state (nothing due, nothing sent). Concurrent requests each
    write their own round from the state they read; a take-back restores exactly the state its
    request replaced, and only if nobody moved on from it.
    """

    store: DeliveryStore
    ready: Publisher
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    new_id: Callable[[], str] = lambda: uuid.uuid4().hex

    def start(self, query_uuid: str) -> DeliveryRecord:
        """Reset the delivery to due-now (keeping the log) and wake notify, or change nothing."""
        round_id = self.new_id()
        previous, fresh = self._write_round(query_uuid, round_id)
        try:
            self.ready.publish(query_uuid)
        except TransientError as exc:
            if (
                previous is not None
                and self._take_back(query_uuid, round_id, previous) == "restored"
            ):
                raise ServiceUnavailable(
                    "the notification queue is unavailable; nothing was changed, please retry"
                ) from exc
            log.warning(
                "ready message not published; the retry tick will send the redelivery: %s",
                exc,
                extra={"queryUUID": query_uuid},
            )
        return fresh

    def _write_round(
        self, query_uuid: str, round_id: str
    ) -> tuple[DeliveryRecord | None, DeliveryRecord]:
        for _ in range(_CLAIM_RETRIES):
            loaded = self.store.load_delivery(query_uuid)
            if loaded is None:
                raise LookupError(query_uuid)
            record, delivery, version = loaded
            if record.status is not ExportStatus.SUCCEEDED:
                raise Conflict(
                    f"export is {record.status.value}; only a finished export can be redelivered"
                )
            now = self.clock()
            try:
                fresh = (delivery or DeliveryRecord.new(now)).redeliver(now, round_id)
            except DeliveryConflict as exc:
                raise Conflict(str(exc)) from exc
            try:
                saved = self.store.save_delivery(query_uuid, fresh, version)
            except TransientError:
                # The write may have landed all the same: take it back, unless it is under way.
                if (
                    delivery is not None
                    and self._take_back(query_uuid, round_id, delivery) == "moved_on"
                ):
                    return delivery, fresh
                raise
            if saved:
                return delivery, fresh
        raise Conflict("the delivery changed while redelivering; try again")

    def _take_back(
        self, query_uuid: str, round_id: str, previous: DeliveryRecord
    ) -> Literal["restored", "absent", "moved_on", "unknown"]:
        """Restore ``previous`` if the round is still ours and unstarted, and say what was found:
        ``absent`` (not ours: never written, or replaced by another request's round),
        ``moved_on`` (ours, and an attempt has begun), or ``unknown`` (the store did not say)."""
        try:
            for _ in range(_CLAIM_RETRIES):
                loaded = self.store.load_delivery(query_uuid)
                current = None if loaded is None else loaded[1]
                if loaded is None or current is None or current.round_id != round_id:
                    return "absent"
                if not current.is_unstarted_round(round_id):
                    return "moved_on"
                if self.store.save_delivery(query_uuid, previous, loaded[2]):
                    return "restored"
        except TransientError:
            log.warning("could not take back a redelivery round", extra={"queryUUID": query_uuid})
        return "unknown"
