"""Unit tests of the notify use case on fakes: one successful delivery, the whole retry
schedule, stops, abandoned attempts and redelivery, with an injected clock."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import random

import pytest

from dataset_export.core.delivery import AttemptOutcome, DeliveryState
from dataset_export.core.errors import Conflict
from dataset_export.core.jsontext import parse_preserving
from dataset_export.core.jsstringify import js_stringify
from dataset_export.core.records import ExportRecord, ExportStatus
from dataset_export.service.keys import create_api_key
from dataset_export.service.notify import Notifier, Redelivery
from tests.fakes import FakeQueue, FakeSender, InMemoryStore

KEK = b"k" * 32
LINK_KEY = b"l" * 32
T0 = dt.datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=dt.UTC)
DATASET_JSON = (
    '{"scopes":[{"column":"bed"}],'
    '"filters":{"and":[{"column":"asking_rent","filter":{"gte":1500.0}}]},"limit":10}'
)


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


def setup(
    *outcomes: AttemptOutcome, status: ExportStatus = ExportStatus.SUCCEEDED
) -> tuple[Notifier, InMemoryStore, FakeSender, Clock, str]:
    store, sender, clock = InMemoryStore(), FakeSender(*outcomes), Clock()
    key, key_record = create_api_key(store, "acme", kek=KEK, now=T0)
    store.create_export(
        ExportRecord(
            query_uuid="q-1",
            account_id="acme",
            key_hash=key_record.key_hash,
            key_id=key_record.key_id,
            name="Seattle Rental Data Export",
            format="csv",
            webhook_url="https://hooks.example/h",
            dataset_json=DATASET_JSON,
            status=status,
            requested_on=T0 - dt.timedelta(seconds=45),
            completed_on=T0 - dt.timedelta(seconds=1),
            number_rows=12847,
            size_bytes=1048576,
            object_name="exports/q-1.csv.gz",
        )
    )
    notifier = Notifier(
        store, sender, KEK, LINK_KEY, "https://api.example", clock=clock, rng=random.Random(7)
    )
    return notifier, store, sender, clock, key


def test_webhook_body_order_signatures_and_blob() -> None:
    """The body has the seed's keys in order, a verifiable hmacSignature and a 30-day link."""
    notifier, _, sender, _, key = setup()
    assert notifier.deliver("q-1") is DeliveryState.DELIVERED
    ((url, body, headers),) = sender.sent
    assert url == "https://hooks.example/h"
    doc = json.loads(body)
    assert list(doc) == [
        "queryUUID",
        "name",
        "format",
        "payload",
        "hmacSignature",
        "gcsBlob",
        "requestedOn",
        "completedOn",
    ]
    assert list(doc["gcsBlob"])[:4] == ["url", "expires", "timeTakenMs", "numberRows"]
    assert doc["gcsBlob"]["timeTakenMs"] == 44000
    assert doc["gcsBlob"]["numberRows"] == 12847
    assert doc["gcsBlob"]["expires"] == "2026-12-27T09:59:59.123Z"
    assert doc["gcsBlob"]["url"].startswith(
        "https://api.example/dataset/export/q-1/download?token="
    )
    assert doc["requestedOn"] == "2026-11-27T09:59:15.123Z"
    assert b'"gte":1500.0' in body  # the payload is echoed as written
    expected = hmac.new(
        key.encode(), js_stringify(parse_preserving(DATASET_JSON)).encode(), hashlib.sha256
    ).hexdigest()
    assert doc["hmacSignature"] == expected
    assert '"gte":1500}' in js_stringify(parse_preserving(DATASET_JSON))
    assert (
        headers["SHA256-HMAC-Signature"] == hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    )
    assert headers["webhook-id"] == "q-1"
    assert headers["webhook-signature"].startswith("v1,")
    assert key not in json.dumps(headers)
    assert key.encode() not in body


def test_duplicates_never_send_a_second_webhook_after_success() -> None:
    """Repeated ready messages and ticks after a delivery send nothing more."""
    notifier, _, sender, clock, _ = setup()
    notifier.deliver("q-1")
    for _ in range(3):
        assert notifier.deliver("q-1") is None
        clock.now += dt.timedelta(hours=1)
        assert notifier.send_due() == 0
    assert len(sender.sent) == 1


def test_failed_export_sends_no_webhook() -> None:
    """A failed export is never announced (the seed)."""
    notifier, _, sender, _, _ = setup(status=ExportStatus.FAILED)
    assert notifier.deliver("q-1") is None
    assert sender.sent == []


def test_whole_schedule_then_failed_and_attempt_log() -> None:
    """Eight 503s over at least a day end in 'failed'; each attempt is logged."""
    notifier, store, sender, clock, _ = setup(
        *[AttemptOutcome(503, None, 12, host="hooks.example")] * 8
    )
    assert notifier.deliver("q-1") is DeliveryState.RETRYING
    while True:
        delivery = store.deliveries["q-1"]
        if delivery.state is DeliveryState.FAILED:
            break
        assert delivery.next_attempt_on is not None
        clock.now = delivery.next_attempt_on
        assert notifier.send_due() == 1
    assert len(sender.sent) == 8
    assert clock.now - T0 >= dt.timedelta(hours=24)
    public = store.exports["q-1"].status_document()["delivery"]
    assert public["state"] == "failed"
    assert [a["statusCode"] for a in public["attempts"]] == [503] * 8
    assert set(public["attempts"][0]) == {"at", "host", "statusCode", "error", "latencyMs"}


@pytest.mark.parametrize("code", [410, 400, 401, 403, 404])
def test_gone_and_client_errors_stop_at_once(code: int) -> None:
    """410 and other 4xx (not 408/429) stop delivery after one attempt."""
    notifier, _store, sender, clock, _ = setup(AttemptOutcome(code, None, 3))
    assert notifier.deliver("q-1") is DeliveryState.FAILED
    clock.now += dt.timedelta(days=2)
    assert notifier.send_due() == 0
    assert len(sender.sent) == 1


def test_retry_after_is_honoured() -> None:
    """A 429 with Retry-After waits at least that long."""
    notifier, store, _sender, clock, _ = setup(
        AttemptOutcome(429, None, 3, retry_after=dt.timedelta(minutes=20))
    )
    notifier.deliver("q-1")
    stored_t0 = T0.replace(microsecond=123000)  # stored to the millisecond
    assert store.deliveries["q-1"].next_attempt_on >= stored_t0 + dt.timedelta(minutes=20)  # type: ignore[operator]
    clock.now += dt.timedelta(minutes=10)
    assert notifier.send_due() == 0


def test_abandoned_attempt_is_logged_and_retried() -> None:
    """A worker that died mid-attempt leaves a lease; after it expires the tick retries."""
    notifier, store, sender, clock, _ = setup()
    _record, _delivery, version = store.load_delivery("q-1")  # type: ignore[misc]
    from dataset_export.core.delivery import DeliveryRecord

    store.save_delivery("q-1", DeliveryRecord.new(T0).start_attempt(T0), version)
    assert notifier.deliver("q-1") is None  # in flight elsewhere
    clock.now += dt.timedelta(minutes=3)
    notifier.send_due()  # abandons the dead attempt and schedules the next
    clock.now = store.deliveries["q-1"].next_attempt_on or clock.now
    notifier.send_due()
    final = store.deliveries["q-1"]
    assert final.state is DeliveryState.DELIVERED
    assert "abandoned" in (final.attempts[0].error or "")
    assert len(sender.sent) == 1


def test_redelivery_starts_a_new_round_and_publishes() -> None:
    """Redelivery after success sends again with the same webhook-id; unfinished is 409."""
    notifier, store, sender, clock, _ = setup()
    notifier.deliver("q-1")
    ready = FakeQueue()
    redelivery = Redelivery(store, ready, clock=clock)
    clock.now += dt.timedelta(days=1)
    redelivery.start("q-1")
    assert ready.published == ["q-1"]
    assert notifier.deliver("q-1") is DeliveryState.DELIVERED
    assert [h["webhook-id"] for _, _, h in sender.sent] == ["q-1", "q-1"]
    assert len(store.deliveries["q-1"].attempts) == 2
    store.exports["q-1"].status = ExportStatus.RUNNING
    with pytest.raises(Conflict):
        redelivery.start("q-1")


def test_policy_violation_at_send_time_is_permanent() -> None:
    """A URL that no longer passes the policy stops delivery."""
    notifier, _store, _sender, _clock, _ = setup(
        AttemptOutcome(None, "webhook URL no longer allowed: private", 1, permanent=True)
    )
    assert notifier.deliver("q-1") is DeliveryState.FAILED


def test_tick_stops_starting_attempts_when_its_budget_is_spent() -> None:
    """A slow tick leaves the rest for the next tick instead of running past its timeout."""
    notifier, store, _, clock, _ = setup()

    class SlowSender(FakeSender):
        def send(self, url: str, body: bytes, headers: object) -> AttemptOutcome:  # type: ignore[override]
            clock.now += dt.timedelta(seconds=200)
            return super().send(url, body, headers)  # type: ignore[arg-type]

    notifier.sender = SlowSender(*[AttemptOutcome(503, None, 1)] * 3)
    for name in ("q-2", "q-3"):
        twin = store.get_export("q-1")
        assert twin is not None
        twin.query_uuid = name
        store.create_export(twin)
    for name in ("q-1", "q-2", "q-3"):
        _, _, version = store.load_delivery(name)  # type: ignore[misc]
        from dataset_export.core.delivery import DeliveryRecord

        store.save_delivery(name, DeliveryRecord.new(clock.now), version)
    assert notifier.send_due(budget=dt.timedelta(seconds=300)) == 2
