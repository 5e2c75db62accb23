"""Integration tests of notify through the whole stack: the receiver gets exactly one signed
webhook per export, failures are retried by the tick, 410 stops, redelivery sends again."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import pubsub_v1
from standardwebhooks.webhooks import Webhook

from dataset_export.adapters.firestore_store import FirestoreStore
from dataset_export.adapters.pubsub_publisher import PubSubPublisher
from dataset_export.core.errors import ExportError, ServiceUnavailable
from dataset_export.events import READY_KIND
from dataset_export.service.notify import Redelivery

pytestmark = pytest.mark.integration

DATASET = {
    "scopes": [{"column": "msa"}, {"column": "asking_rent", "aggregate": "avg"}],
    "filters": {"and": [{"column": "bath", "filter": {"gte": 1.50}}, None]},
    "limit": 50,
}


def submit(client: httpx.Client, env: dict[str, str], path: str = "/webhook") -> str:
    url = env["EXPORT_WEBHOOK_URL"].rsplit("/", 1)[0] + path
    response = client.post(
        "/dataset/export",
        json={"dataset": DATASET, "webhookURL": url, "name": "notify itest", "format": "csv"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["queryUUID"])


def received(env: dict[str, str], query_uuid: str) -> list[dict[str, Any]]:
    hits = []
    for path in sorted(Path(env["EXPORT_WEBHOOK_DIR"]).glob("*.json")):
        entry = json.loads(path.read_text("utf-8"))
        if entry["headers"].get("webhook-id") == query_uuid:
            hits.append(entry)
    return hits


def wait_for(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError("condition not met in time")


def delivery(client: httpx.Client, query_uuid: str) -> dict[str, Any]:
    return client.get(f"/dataset/export/{query_uuid}").json().get("delivery") or {}


def test_one_signed_webhook_that_verifies_and_no_duplicate(
    stack_env: dict[str, str], client: httpx.Client
) -> None:
    """One webhook arrives, its signatures verify, and re-sent ready messages add none."""
    key = stack_env["EXPORT_API_KEY"]
    query_uuid = submit(client, stack_env)
    (hit,) = wait_for(lambda: received(stack_env, query_uuid))
    body = hit["body"].encode("utf-8")
    doc = json.loads(body)
    assert doc["queryUUID"] == query_uuid
    assert doc["payload"] == DATASET
    assert hmac.compare_digest(
        hit["headers"]["sha256-hmac-signature"],
        hmac.new(key.encode(), body, hashlib.sha256).hexdigest(),
    )
    Webhook(base64.b64encode(key.encode()).decode()).verify(body, hit["headers"])
    assert wait_for(lambda: delivery(client, query_uuid).get("state") == "delivered")

    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(stack_env["GOOGLE_CLOUD_PROJECT"], "export-ready")
    for _ in range(3):
        publisher.publish(
            topic, json.dumps({"queryUUID": query_uuid}).encode(), kind="export-ready"
        ).result(10)
    time.sleep(4)
    assert len(received(stack_env, query_uuid)) == 1
    log = delivery(client, query_uuid)["attempts"]
    assert len(log) == 1
    assert log[0]["statusCode"] == 200


def test_failing_endpoint_is_retried_by_the_tick_and_logged(
    stack_env: dict[str, str], client: httpx.Client
) -> None:
    """A 503 endpoint gets a second attempt from the retry tick; each attempt is in the log."""
    query_uuid = submit(client, stack_env, "/status/503")
    # The receiver stores a request before notify records its outcome: wait for the log.
    wait_for(lambda: len(delivery(client, query_uuid).get("attempts") or []) >= 2, timeout=45)
    assert len(received(stack_env, query_uuid)) >= 2
    state = delivery(client, query_uuid)
    assert state["state"] in ("retrying", "delivering")
    assert [a["statusCode"] for a in state["attempts"]][:2] == [503, 503]
    assert state["attempts"][0]["host"] == "127.0.0.1"


def test_gone_stops_delivery_and_redeliver_sends_again(
    stack_env: dict[str, str], client: httpx.Client
) -> None:
    """410 fails the delivery after one attempt; POST .../redeliver starts a new round."""
    query_uuid = submit(client, stack_env, "/status/410")
    wait_for(lambda: delivery(client, query_uuid).get("state") == "failed")
    time.sleep(6)  # a tick passes: nothing more is sent
    assert len(received(stack_env, query_uuid)) == 1
    response = client.post(f"/dataset/export/{query_uuid}/redeliver")
    assert response.status_code == 202, response.text
    wait_for(lambda: len(received(stack_env, query_uuid)) == 2)
    ids = {hit["headers"]["webhook-id"] for hit in received(stack_env, query_uuid)}
    assert ids == {query_uuid}


def test_redeliver_during_a_queue_outage_changes_nothing_and_a_retry_sends_once(
    stack_env: dict[str, str], client: httpx.Client
) -> None:
    """With the ready topic unreachable redelivery is refused and Firestore keeps the delivered
    state (no tick sends it); the client's retry then sends exactly one more webhook."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    query_uuid = submit(client, stack_env)
    wait_for(lambda: delivery(client, query_uuid).get("state") == "delivered")
    store = FirestoreStore.for_project(project)
    loaded = store.load_delivery(query_uuid)
    assert loaded is not None
    assert loaded[1] is not None
    before = loaded[1].to_document()
    outage = Redelivery(store, PubSubPublisher(project, f"gone-{uuid.uuid4().hex[:6]}", READY_KIND))
    with pytest.raises(ExportError) as refused:
        outage.start(query_uuid)
    after = store.load_delivery(query_uuid)
    assert after is not None
    assert after[1] is not None
    assert after[1].to_document() == before
    time.sleep(12)  # more than two retry ticks (every 5 s locally)
    assert len(received(stack_env, query_uuid)) == 1
    assert isinstance(refused.value, ServiceUnavailable)
    response = client.post(f"/dataset/export/{query_uuid}/redeliver")
    assert response.status_code == 202, response.text
    wait_for(lambda: len(received(stack_env, query_uuid)) == 2)
    wait_for(lambda: delivery(client, query_uuid).get("state") == "delivered")
    time.sleep(6)
    assert len(received(stack_env, query_uuid)) == 2
