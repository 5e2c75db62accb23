"""Use cases of the HTTP API: authenticate, submit an export, read its status."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..core.apikeys import key_hash, looks_like_key
from ..core.catalog import Catalog
from ..core.errors import (
    AlreadyExists,
    Forbidden,
    IdempotencyConflict,
    IdempotencyKeyReused,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    TransientError,
)
from ..core.ratelimit import decide as decide_rate
from ..core.ratelimit import second_of
from ..core.records import ExportRecord, ExportStatus, PartRecord
from ..core.request import parse_export_request
from ..core.urlpolicy import Resolver, check_webhook_url
from .ports import ApiKeyRecord, ExportStore, IdempotencyRecord, Publisher

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 255
# An idempotency record with no export after this long belongs to a request that died midway.
STALE_IDEMPOTENCY = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class Caller:
    """An authenticated API key and its account."""

    key_hash: str
    key_id: str
    account_id: str


@dataclass(frozen=True)
class SubmitResult:
    """What ``POST /dataset/export`` answers: the export's id, and whether it was a replay."""

    query_uuid: str
    replayed: bool


@dataclass
class ExportService:
    """The API's use cases over a store, a queue and a DNS resolver."""

    store: ExportStore
    queue: Publisher
    resolver: Resolver
    catalog: Catalog
    max_rows: int
    rate_limit_per_minute: int
    allow_loopback_webhooks: bool = False
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    new_uuid: Callable[[], str] = lambda: str(uuid.uuid4())

    def authenticate(self, api_key: str | None) -> Caller:
        """Return the caller for a valid key of a subscribed account, else raise ``Forbidden``."""
        if not api_key:
            raise Forbidden("missing API key: send it in the x-api-key header")
        record: ApiKeyRecord | None = None
        if looks_like_key(api_key):
            record = self.store.get_api_key(key_hash(api_key))
        if record is None or record.revoked_on is not None:
            raise Forbidden("invalid API key: it is unknown or has been revoked")
        account = self.store.get_account(record.account_id)
        if account is None or not account.query_builder:
            raise Forbidden(
                "this account has no active Query Builder subscription; contact sales for access",
                code="subscription_required",
            )
        return Caller(key_hash=record.key_hash, key_id=record.key_id, account_id=record.account_id)

    def check_rate(self, caller: Caller) -> None:
        """Count one request against the key's allowance (any 60 s); raise 429 beyond it."""
        now = self.clock()
        count = self.store.count_request(caller.key_hash, second_of(now))
        verdict = decide_rate(count, self.rate_limit_per_minute, now)
        if verdict.allowed:
            return
        try:
            # A refused request does not use up the allowance.
            self.store.uncount_request(caller.key_hash, count.second)
        except TransientError:
            log.warning("could not take back a refused request; it counts for a minute")
        raise RateLimited(
            f"rate limit exceeded: at most {self.rate_limit_per_minute} export requests in any"
            f" 60 seconds per API key; retry in {verdict.retry_after_seconds} s",
            retry_after_seconds=verdict.retry_after_seconds,
        )

    def submit(
        self, caller: Caller, body: bytes, idempotency_key: str | None = None
    ) -> SubmitResult:
        """Validate, record and queue an export; the result is durable when this returns."""
        self.check_rate(caller)
        submission = parse_export_request(body, self.catalog, max_rows=self.max_rows)
        check_webhook_url(
            submission.webhook_url, self.resolver, allow_loopback=self.allow_loopback_webhooks
        )
        body_hash = hashlib.sha256(body).hexdigest()
        scope_id: str | None = None
        if idempotency_key is not None:
            scope_id = self._idempotency_scope(caller, idempotency_key)
            replay = self._replay(scope_id, body_hash)
            if replay is not None:
                return replay
            query_uuid = self.new_uuid()
            try:
                self.store.create_idempotency(
                    IdempotencyRecord(scope_id, query_uuid, body_hash, self.clock())
                )
            except AlreadyExists:
                # A concurrent twin won the race; answer what it answers.
                replay = self._replay(scope_id, body_hash)
                if replay is None:
                    raise IdempotencyConflict(
                        "a request with this Idempotency-Key is still in progress; retry shortly",
                        field="Idempotency-Key",
                    ) from None
                return replay
        else:
            query_uuid = self.new_uuid()
        record = ExportRecord(
            query_uuid=query_uuid,
            account_id=caller.account_id,
            key_hash=caller.key_hash,
            key_id=caller.key_id,
            name=submission.name,
            format=submission.format.value,
            webhook_url=submission.webhook_url,
            dataset=submission.dataset,
            status=ExportStatus.SUBMITTING,
            requested_on=self.clock(),
            idempotency_key=idempotency_key,
        )
        try:
            self.store.create_export(record)
        except TransientError:
            if scope_id is not None:
                self._forget(scope_id)
            raise
        self._queue(record, scope_id)
        return SubmitResult(query_uuid=query_uuid, replayed=False)

    def _queue(self, record: ExportRecord, scope_id: str | None) -> None:
        try:
            message_id = self.queue.publish(record.query_uuid)
        except TransientError as exc:
            # Leave nothing that looks accepted: the client gets 503 and may simply retry.
            log.warning(
                "queue unavailable, export not accepted",
                extra={"queryUUID": record.query_uuid, "reason": str(exc)},
            )
            self.store.delete_export(record.query_uuid)
            if scope_id is not None:
                self._forget(scope_id)
            raise ServiceUnavailable(
                "the export queue is unavailable; nothing was created, please retry"
            ) from exc
        try:
            self.store.mark_queued(record.query_uuid, message_id)
        except TransientError:
            # The message is out and the process function accepts 'submitting' records too,
            # so the export is safe; only the status label lags.
            log.warning(
                "export queued but not marked queued", extra={"queryUUID": record.query_uuid}
            )
        log.info("export queued", extra={"queryUUID": record.query_uuid})

    def _forget(self, scope_id: str) -> None:
        try:
            self.store.delete_idempotency(scope_id)
        except TransientError:
            log.warning("could not forget an idempotency key after a failed submit")

    @staticmethod
    def _idempotency_scope(caller: Caller, idempotency_key: str) -> str:
        if (
            not idempotency_key
            or len(idempotency_key) > MAX_IDEMPOTENCY_KEY
            or not all(" " <= ch <= "~" for ch in idempotency_key)
        ):
            raise InvalidRequest(
                f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters",
                field="Idempotency-Key",
            )
        # Keys are per API key: two customers may both use "order-42".
        return hashlib.sha256(f"{caller.key_hash}:{idempotency_key}".encode()).hexdigest()

    def _replay(self, scope_id: str, body_hash: str) -> SubmitResult | None:
        existing = self.store.get_idempotency(scope_id)
        if existing is None:
            return None
        if not hmac.compare_digest(existing.body_hash, body_hash):
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different request body; "
                "use a new key for a new export",
                field="Idempotency-Key",
            )
        record = self.store.get_export(existing.query_uuid)
        if record is None:
            if self.clock() - existing.created_on > STALE_IDEMPOTENCY:
                self.store.delete_idempotency(scope_id)
                return None
            raise IdempotencyConflict(
                "a request with this Idempotency-Key is still in progress; retry shortly",
                field="Idempotency-Key",
            )
        if record.status is ExportStatus.SUBMITTING:
            # The first attempt died between recording and queueing: finish its job.
            self._queue(record, None)
        return SubmitResult(query_uuid=record.query_uuid, replayed=True)

    def live_parts(self, record: ExportRecord) -> list[PartRecord]:
        """The parts of an export planned as parts that is running or failed (for its live
        progress, or how far it got); none otherwise."""
        if not record.parts_total or record.status not in (
            ExportStatus.RUNNING,
            ExportStatus.FAILED,
        ):
            return []
        return self.store.list_parts(record.query_uuid)

    def status(self, caller: Caller, query_uuid: str) -> ExportRecord:
        """The export if the caller's key owns it; otherwise ``NotFound`` (never 403: no leak)."""
        try:
            canonical = str(uuid.UUID(query_uuid))
        except ValueError:
            raise NotFound(f"no export with queryUUID '{query_uuid}'") from None
        record = self.store.get_export(canonical)
        if record is None or not hmac.compare_digest(record.key_hash, caller.key_hash):
            raise NotFound(f"no export with queryUUID '{query_uuid}' for this API key")
        return record
