"""Unit tests of the notify use case on fakes: one successful delivery, the whole retry
schedule, stops, abandoned attempts and redelivery, with an injected clock."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import random
import threading
import time
from collections.abc import Callable, Mapping

import pytest

from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.dataset import SubmittedDataset
from dataset_export.core.delivery import AttemptOutcome, DeliveryRecord, DeliveryState
from dataset_export.core.errors import Conflict, ServiceUnavailable, TransientError
from dataset_export.core.jsontext import parse_preserving
from dataset_export.core.jsstringify import js_stringify
from dataset_export.core.records import ExportRecord, ExportStatus
from dataset_export.http_api import ExportApi, HttpRequest, HttpResponse
from dataset_export.service.keys import create_api_key
from dataset_export.service.notify import Notifier, Redelivery
from dataset_export.service.submit import ExportService
from tests.fakes import FakeQueue, FakeResolver, FakeSender, InMemoryStore

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
    *outcomes: AttemptOutcome,
    status: ExportStatus = ExportStatus.SUCCEEDED,
    query_uuid: str = "q-1",
) -> tuple[Notifier, InMemoryStore, FakeSender, Clock, str]:
    store, sender, clock = InMemoryStore(), FakeSender(*outcomes), Clock()
    key, key_record = create_api_key(store, "acme", kek=KEK, now=T0)
    store.create_export(
        ExportRecord(
            query_uuid=query_uuid,
            account_id="acme",
            key_hash=key_record.key_hash,
            key_id=key_record.key_id,
            name="Seattle Rental Data Export",
            format="csv",
            webhook_url="https://hooks.example/h",
            dataset=SubmittedDataset(DATASET_JSON),
            status=status,
            requested_on=T0 - dt.timedelta(seconds=45),
            completed_on=T0 - dt.timedelta(seconds=1),
            number_rows=12847,
            size_bytes=1048576,
            object_name=f"exports/{query_uuid}.csv.gz",
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
    store.exports["q-1"] = dataclasses.replace(store.exports["q-1"], status=ExportStatus.RUNNING)
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
    notifier.retry_concurrency = 1  # one after another, so the clock moves between starts
    for name in ("q-2", "q-3"):
        twin = store.get_export("q-1")
        assert twin is not None
        store.create_export(dataclasses.replace(twin, query_uuid=name))
    for name in ("q-1", "q-2", "q-3"):
        _, _, version = store.load_delivery(name)  # type: ignore[misc]
        from dataset_export.core.delivery import DeliveryRecord

        store.save_delivery(name, DeliveryRecord.new(clock.now), version)
    assert notifier.send_due(budget=dt.timedelta(seconds=300)) == 2


EXPORT_ID = "6f1c9a52-3b0e-4c8e-9d4a-0c1e2f3a4b5c"


def redeliver_api(store: InMemoryStore, redelivery: Redelivery, clock: Clock) -> ExportApi:
    """The HTTP API with redelivery, on the notify test's store."""
    service = ExportService(
        store=store,
        queue=FakeQueue(),
        resolver=FakeResolver(),
        catalog=RENTAL_LISTINGS,
        max_rows=100,
        rate_limit_per_minute=1000,
        clock=clock,
    )
    return ExportApi(service, max_body_bytes=4096, redelivery=redelivery)


def post_redeliver(api: ExportApi, key: str) -> HttpResponse:
    return api.handle(
        HttpRequest("POST", f"/dataset/export/{EXPORT_ID}/redeliver", {"x-api-key": key}, b"")
    )


def test_redeliver_during_a_queue_outage_changes_nothing_and_a_retry_sends_once() -> None:
    """503 leaves the delivery as it was (no tick sends it); the retried request sends once."""
    notifier, store, sender, clock, key = setup(query_uuid=EXPORT_ID)
    assert notifier.deliver(EXPORT_ID) is DeliveryState.DELIVERED
    before = store.deliveries[EXPORT_ID].to_document()
    ready = FakeQueue()
    ready.unavailable = True
    api = redeliver_api(store, Redelivery(store, ready, clock=clock), clock)
    clock.now += dt.timedelta(days=1)
    response = post_redeliver(api, key)
    assert response.status == 503, response.body
    assert store.deliveries[EXPORT_ID].to_document() == before
    clock.now += dt.timedelta(hours=1)
    assert notifier.send_due() == 0
    assert len(sender.sent) == 1
    assert "nothing was changed" in response.body["error"]["message"]
    ready.unavailable = False
    assert post_redeliver(api, key).status == 202
    assert ready.published == [EXPORT_ID]
    assert notifier.deliver(EXPORT_ID) is DeliveryState.DELIVERED
    clock.now += dt.timedelta(hours=1)
    assert notifier.send_due() == 0
    assert len(sender.sent) == 2


class FailingAfter(FakeQueue):
    """A publisher that runs ``before_failing`` (a race) and then reports an outage."""

    def __init__(self, before_failing: Callable[[], object]) -> None:
        super().__init__()
        self.before_failing = before_failing

    def publish(self, query_uuid: str) -> str:
        self.before_failing()
        raise TransientError("publish timed out")


def test_redeliver_whose_round_a_worker_already_started_is_202_and_sends_once() -> None:
    """A failed publish after the tick took the round: it cannot be taken back, so it is 202."""
    notifier, store, sender, clock, key = setup(query_uuid=EXPORT_ID)
    notifier.deliver(EXPORT_ID)
    clock.now += dt.timedelta(days=1)
    redelivery = Redelivery(store, FailingAfter(notifier.send_due), clock=clock)
    api = redeliver_api(store, redelivery, clock)
    assert post_redeliver(api, key).status == 202
    assert len(sender.sent) == 2
    clock.now += dt.timedelta(hours=1)
    assert notifier.send_due() == 0
    assert len(sender.sent) == 2


@pytest.mark.parametrize("second_publishes", [True, False])
def test_concurrent_redelivers_send_at_most_once_and_answer_truthfully(
    second_publishes: bool,
) -> None:
    """B starts while A publishes, then A's publish fails: one send if B's got out, else none."""
    notifier, store, sender, clock, _ = setup(query_uuid=EXPORT_ID)
    notifier.deliver(EXPORT_ID)
    before = store.deliveries[EXPORT_ID].to_document()
    clock.now += dt.timedelta(days=1)
    b_queue = FakeQueue()
    b_queue.unavailable = not second_publishes
    b = Redelivery(store, b_queue, clock=clock, new_id=lambda: "round-b")
    b_answer: list[str] = []

    def run_b() -> None:
        try:
            b.start(EXPORT_ID)
            b_answer.append("202")
        except Exception as exc:
            b_answer.append(type(exc).__name__)

    a = Redelivery(store, FailingAfter(run_b), clock=clock, new_id=lambda: "round-a")
    if second_publishes:
        a.start(EXPORT_ID)  # B's round stands: A cannot take back what it no longer owns
        assert b_answer == ["202"]
        assert notifier.deliver(EXPORT_ID) is DeliveryState.DELIVERED
    else:
        with pytest.raises(ServiceUnavailable):
            a.start(EXPORT_ID)  # B restored A's round, so A can restore what it replaced
        assert b_answer == ["ServiceUnavailable"]
        assert store.deliveries[EXPORT_ID].to_document() == before
    clock.now += dt.timedelta(hours=1)
    notifier.send_due()
    assert len(sender.sent) == (2 if second_publishes else 1)


def test_redeliver_whose_write_landed_but_reported_failure_is_taken_back() -> None:
    """A round written although the store reported an error is taken back before the 503."""
    notifier, store, sender, clock, _ = setup(query_uuid=EXPORT_ID)
    notifier.deliver(EXPORT_ID)
    before = store.deliveries[EXPORT_ID].to_document()
    save = store.save_delivery
    lost: list[bool] = []

    def save_then_lose_the_answer(
        query_uuid: str, delivery: DeliveryRecord, version: object
    ) -> bool:
        saved = save(query_uuid, delivery, version)
        if not lost:
            lost.append(True)
            raise TransientError("deadline exceeded")
        return saved

    store.save_delivery = save_then_lose_the_answer  # type: ignore[method-assign]
    ready = FakeQueue()
    clock.now += dt.timedelta(days=1)
    with pytest.raises(TransientError):
        Redelivery(store, ready, clock=clock).start(EXPORT_ID)
    assert store.deliveries[EXPORT_ID].to_document() == before
    assert ready.published == []
    clock.now += dt.timedelta(hours=1)
    assert notifier.send_due() == 0
    assert len(sender.sent) == 1


def due_twins(store: InMemoryStore, clock: Clock, names: list[str], url: str | None = None) -> None:
    """Copies of export q-1 under ``names``, each with a delivery that is due now."""
    for name in names:
        twin = store.get_export("q-1")
        assert twin is not None
        store.create_export(
            dataclasses.replace(twin, query_uuid=name, webhook_url=url or twin.webhook_url)
        )
        _, _, version = store.load_delivery(name)  # type: ignore[misc]
        store.save_delivery(name, DeliveryRecord.new(clock.now), version)


def test_a_hanging_endpoint_does_not_delay_another_exports_retry() -> None:
    """While one endpoint hangs, the tick delivers another export's due retry."""
    notifier, store, _, clock, _ = setup()
    release, other_sent = threading.Event(), threading.Event()

    class HangingSender(FakeSender):
        def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptOutcome:
            if "hang.example" in url:
                release.wait(timeout=10)
                return AttemptOutcome(None, "timed out after 15 s", 15000)
            other_sent.set()
            return AttemptOutcome(200, None, 3)

    notifier.sender = HangingSender()
    due_twins(store, clock, ["q-hang"], url="https://hang.example/h")
    due_twins(store, clock, ["q-ok"])
    assert store.due_deliveries(clock.now, 50) == ["q-hang", "q-ok"]  # the hanging one first
    ran: list[int] = []
    tick = threading.Thread(target=lambda: ran.append(notifier.send_due()))
    tick.start()
    try:
        assert other_sent.wait(timeout=5), "the other export waited for the hanging endpoint"
        deadline = time.monotonic() + 5
        while store.deliveries["q-ok"].state is not DeliveryState.DELIVERED:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert store.deliveries["q-hang"].state is DeliveryState.DELIVERING
    finally:
        release.set()
        tick.join(timeout=15)
    assert ran == [2]
    assert store.deliveries["q-hang"].state is DeliveryState.RETRYING


def test_due_retries_run_concurrently_within_the_bound() -> None:
    """Forty due retries run at most ``retry_concurrency`` at a time, and all of them run."""
    notifier, store, _, clock, _ = setup()
    lock = threading.Lock()
    in_flight = peak = 0

    class SlowSender(FakeSender):
        def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptOutcome:
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.05)
            with lock:
                in_flight -= 1
            return AttemptOutcome(200, None, 50)

    notifier.sender = SlowSender()
    notifier.retry_concurrency = 8
    due_twins(store, clock, [f"q-{n}" for n in range(2, 41)])
    _, _, version = store.load_delivery("q-1")  # type: ignore[misc]
    store.save_delivery("q-1", DeliveryRecord.new(clock.now), version)
    started = time.monotonic()
    assert notifier.send_due() == 40
    assert 2 <= peak <= 8
    assert time.monotonic() - started < 40 * 0.05  # not one after another
    assert all(d.state is DeliveryState.DELIVERED for d in store.deliveries.values())
