"""Delivery against Firestore on the emulator and real local HTTP servers: a receiver that fails
twice then answers 200 gets exactly one successful delivery; concurrent deliveries send once;
a redirect towards a private address is never followed."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from dataset_export.adapters.firestore_store import FirestoreStore
from dataset_export.adapters.webhook_sender import WebhookSender
from dataset_export.core.dataset import SubmittedDataset
from dataset_export.core.delivery import DeliveryState
from dataset_export.core.records import ExportRecord, ExportStatus
from dataset_export.service.keys import create_api_key
from dataset_export.service.notify import Notifier

pytestmark = pytest.mark.integration

KEK = b"k" * 32


class Receiver(BaseHTTPRequestHandler):
    """Answers from a script of status codes (then 200) and counts requests."""

    script: ClassVar[list[int]] = []
    hits: ClassVar[list[str]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.lock:
            Receiver.hits.append(self.headers.get("webhook-id", ""))
            status = Receiver.script.pop(0) if Receiver.script else 200
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "http://10.0.0.1/internal")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def receiver() -> Iterator[str]:
    """A real HTTP server on loopback; yields its webhook URL."""
    Receiver.script, Receiver.hits = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


def finished_export(store: FirestoreStore, url: str) -> str:
    _, key = create_api_key(store, "delivery-itest", kek=KEK)
    query_uuid = str(uuid.uuid4())
    now = dt.datetime.now(dt.UTC)
    store.create_export(
        ExportRecord(
            query_uuid=query_uuid, account_id="delivery-itest", key_hash=key.key_hash,
            key_id=key.key_id, name="delivery", format="csv", webhook_url=url,
            dataset=SubmittedDataset('{"scopes":[{"column":"city"}]}'),
            status=ExportStatus.SUCCEEDED,
            requested_on=now, completed_on=now, number_rows=1, size_bytes=20,
            object_name=f"exports/{query_uuid}.csv.gz",
        )
    )  # fmt: skip
    return query_uuid


def notifier(store: FirestoreStore, clock: Clock) -> Notifier:
    return Notifier(
        store, WebhookSender(allow_loopback=True, total_timeout=5), KEK, b"l" * 32,
        "http://127.0.0.1", clock=clock, rng=random.Random(1),
    )  # fmt: skip


def test_fails_twice_then_one_successful_delivery(stack_env: dict[str, str], receiver: str) -> None:
    """500, 503, then 200: three attempts logged, delivered once, nothing after."""
    store = FirestoreStore.for_project(stack_env["GOOGLE_CLOUD_PROJECT"])
    clock = Clock()
    query_uuid = finished_export(store, receiver)
    Receiver.script = [500, 503]
    service = notifier(store, clock)
    assert service.deliver(query_uuid) is DeliveryState.RETRYING
    for expected in (DeliveryState.RETRYING, DeliveryState.DELIVERED):
        loaded = store.load_delivery(query_uuid)
        assert loaded is not None
        delivery = loaded[1]
        assert delivery is not None
        assert delivery.next_attempt_on is not None
        clock.now = delivery.next_attempt_on
        assert query_uuid in store.due_deliveries(clock.now, 500)
        assert service.deliver(query_uuid) is expected
    clock.now += dt.timedelta(days=2)
    assert query_uuid not in store.due_deliveries(clock.now, 500)
    assert service.deliver(query_uuid) is None
    assert Receiver.hits == [query_uuid] * 3
    record = store.get_export(query_uuid)
    assert record is not None
    log = record.status_document()["delivery"]
    assert log["state"] == "delivered"
    assert [a["statusCode"] for a in log["attempts"]] == [500, 503, 200]


def test_concurrent_deliveries_send_exactly_once(stack_env: dict[str, str], receiver: str) -> None:
    """Eight workers racing on one export: one claim wins, one webhook is sent."""
    store = FirestoreStore.for_project(stack_env["GOOGLE_CLOUD_PROJECT"])
    query_uuid = finished_export(store, receiver)
    services = [
        notifier(FirestoreStore.for_project(stack_env["GOOGLE_CLOUD_PROJECT"]), Clock())
        for _ in range(8)
    ]
    barrier = threading.Barrier(len(services))
    results: list[object] = []

    def race(service: Notifier) -> None:
        barrier.wait()
        results.append(service.deliver(query_uuid))

    threads = [threading.Thread(target=race, args=(s,)) for s in services]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert Receiver.hits == [query_uuid]
    assert results.count(DeliveryState.DELIVERED) == 1
    record = store.get_export(query_uuid)
    assert record is not None
    assert len(record.status_document()["delivery"]["attempts"]) == 1


def test_redirect_to_a_private_address_is_not_followed(
    stack_env: dict[str, str], receiver: str
) -> None:
    """A 302 towards 10.0.0.1 is logged as a failed attempt; nothing connects there."""
    store = FirestoreStore.for_project(stack_env["GOOGLE_CLOUD_PROJECT"])
    query_uuid = finished_export(store, receiver)
    Receiver.script = [302]
    assert notifier(store, Clock()).deliver(query_uuid) is DeliveryState.RETRYING
    record = store.get_export(query_uuid)
    assert record is not None
    (attempt,) = record.status_document()["delivery"]["attempts"]
    assert attempt["statusCode"] == 302
    assert "redirects are not followed" in attempt["error"]
    assert "10.0.0.1" not in json.dumps(attempt)
