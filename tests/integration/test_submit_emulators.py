"""Integration tests of the submit API on the real emulators (Firestore, Pub/Sub)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from google.cloud import firestore, pubsub_v1

from dataset_export.adapters.dns import resolve
from dataset_export.adapters.firestore_store import FirestoreStore
from dataset_export.adapters.pubsub_publisher import PubSubPublisher
from dataset_export.core.apikeys import looks_like_key
from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.http_api import BODY_TIMEOUT_SECONDS, ExportApi, HttpRequest
from dataset_export.service.keys import create_api_key
from dataset_export.service.submit import ExportService
from dataset_export_tools.demo import SEED_DATASET, SEED_DATASET_FILE

pytestmark = pytest.mark.integration

EXPORTCTL = Path(sys.executable).with_name("exportctl")


def seed_body(env: dict[str, str], name: str = "Seattle Rental Data Export") -> dict[str, object]:
    return {
        "dataset": SEED_DATASET,
        "webhookURL": env["EXPORT_WEBHOOK_URL"],
        "name": name,
        "format": "csv",
    }


@pytest.fixture
def request_tap(stack_env: dict[str, str]) -> Iterator[tuple[pubsub_v1.SubscriberClient, str]]:
    """A fresh pull subscription on export-requests, to see exactly what submit publishes."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    subscriber = pubsub_v1.SubscriberClient()
    name = subscriber.subscription_path(project, f"tap-{uuid.uuid4().hex[:8]}")
    topic = f"projects/{project}/topics/{stack_env.get('EXPORT_REQUESTS_TOPIC', 'export-requests')}"
    subscriber.create_subscription(request={"name": name, "topic": topic})
    try:
        yield subscriber, name
    finally:
        subscriber.delete_subscription(request={"subscription": name})
        subscriber.close()


def pull_all(
    tap: tuple[pubsub_v1.SubscriberClient, str], wait_s: float = 3.0
) -> list[pubsub_v1.types.PubsubMessage]:
    subscriber, name = tap
    messages = []
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        reply = subscriber.pull(request={"subscription": name, "max_messages": 50}, timeout=5)
        if reply.received_messages:
            messages.extend(m.message for m in reply.received_messages)
            subscriber.acknowledge(
                request={
                    "subscription": name,
                    "ack_ids": [m.ack_id for m in reply.received_messages],
                }
            )
        else:
            time.sleep(0.2)
    return messages


def test_submit_records_then_publishes_one_message_without_secrets(
    stack_env: dict[str, str],
    client: httpx.Client,
    request_tap: tuple[pubsub_v1.SubscriberClient, str],
) -> None:
    """A 201 means the record is in Firestore and exactly one message, with no secret, is out."""
    response = client.post("/dataset/export", json=seed_body(stack_env))
    assert response.status_code == 201, response.text
    query_uuid = response.json()["queryUUID"]
    assert str(uuid.UUID(query_uuid)) == query_uuid

    doc = (
        firestore.Client(project=stack_env["GOOGLE_CLOUD_PROJECT"])
        .collection("exports")
        .document(query_uuid)
        .get()
    )
    assert doc.exists
    stored = doc.to_dict() or {}
    assert stored["status"] in ("queued", "running", "succeeded")
    assert json.loads(stored["datasetJson"]) == SEED_DATASET
    assert stack_env["EXPORT_API_KEY"] not in json.dumps(stored, default=str)

    messages = [m for m in pull_all(request_tap) if query_uuid in m.data.decode()]
    assert len(messages) == 1
    assert json.loads(messages[0].data) == {"queryUUID": query_uuid}
    everything = messages[0].data.decode() + json.dumps(dict(messages[0].attributes))
    assert stack_env["EXPORT_API_KEY"] not in everything
    assert stack_env["EXPORT_WEBHOOK_URL"] not in everything

    status = client.get(f"/dataset/export/{query_uuid}")
    assert status.status_code == 200
    assert status.json()["queryUUID"] == query_uuid


CITY = {"column": "city"}
REFUSED_QUERIES = [
    # Issue 9's reproductions: each was a 201 and then held or failed the export.
    (
        "csv",
        {"scopes": [CITY], "filters": [{"column": "city", "filter": {"equals": "\udfff"}}]},
        "dataset.filters[0].filter.equals",
        "not valid Unicode",
    ),
    ("csv", {"scopes": [CITY, {"column": "state", "alias": "CITY"}]}, "dataset.scopes[1]", "case"),
    (
        "jsonl",
        {"scopes": [CITY, {"column": "state", "alias": "CITY"}]},
        "dataset.scopes[1]",
        "case",
    ),
    (
        "jsonl",
        {
            "scopes": [
                {"column": "msa"},
                {"column": "asking_rent", "aggregate": "Avg"},
                {"column": "sqft", "aggregate": "Avg", "alias": "AVG_ASKING_RENT"},
            ]
        },
        "dataset.scopes[2]",
        "dataset.scopes[1]",
    ),
    ("csv", {"scopes": [CITY], "filters": {"or": []}}, "dataset.filters.or", "no condition"),
    ("csv", {"scopes": [CITY], "filters": {"or": [None]}}, "dataset.filters.or", "no condition"),
    (
        "csv",
        {"scopes": [CITY], "filters": {"not": {"or": []}}},
        "dataset.filters.not.or",
        "no condition",
    ),
]


def test_queries_that_cannot_export_correctly_are_400_and_queue_nothing(
    stack_env: dict[str, str],
    client: httpx.Client,
    request_tap: tuple[pubsub_v1.SubscriberClient, str],
) -> None:
    """Lone surrogates, output names equal ignoring case and empty or/not are 400 at submit."""
    for fmt, dataset, field, words in REFUSED_QUERIES:
        body = {**seed_body(stack_env), "dataset": dataset, "format": fmt}
        response = client.post(
            "/dataset/export",
            content=json.dumps(body).encode(),  # ASCII JSON: a lone surrogate as its escape
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, (dataset, response.text)
        error = response.json()["error"]
        assert error["field"] == field, error
        assert words in error["message"], error
    assert pull_all(request_tap, wait_s=1.0) == []


def test_idempotency_key_gives_one_export_and_one_message(
    stack_env: dict[str, str],
    client: httpx.Client,
    request_tap: tuple[pubsub_v1.SubscriberClient, str],
) -> None:
    """Retrying with the same Idempotency-Key returns the same queryUUID and publishes once."""
    headers = {"Idempotency-Key": f"itest-{uuid.uuid4()}"}
    body = seed_body(stack_env, "idempotent")
    first = client.post("/dataset/export", json=body, headers=headers)
    second = client.post("/dataset/export", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    query_uuid = first.json()["queryUUID"]
    assert len([m for m in pull_all(request_tap) if query_uuid in m.data.decode()]) == 1
    other = client.post("/dataset/export", json={**body, "name": "changed"}, headers=headers)
    assert other.status_code == 422


def test_queue_outage_is_503_and_leaves_no_record(stack_env: dict[str, str]) -> None:
    """With the topic missing the client gets 503 and Firestore keeps nothing of the attempt."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    store = FirestoreStore.for_project(project)
    fixed = str(uuid.uuid4())
    service = ExportService(
        store=store,
        queue=PubSubPublisher(project, f"missing-{uuid.uuid4().hex[:6]}", "export-request"),
        resolver=resolve,
        catalog=RENTAL_LISTINGS,
        max_rows=1_000_000,
        rate_limit_per_minute=100,
        allow_loopback_webhooks=True,
        new_uuid=lambda: fixed,
    )
    key, _ = create_api_key(
        store, "outage", kek=base64.b64decode(stack_env["EXPORT_KEY_ENCRYPTION_KEY"])
    )
    api = ExportApi(service, max_body_bytes=262144)
    request = HttpRequest(
        "POST",
        "/dataset/export",
        {"x-api-key": key, "Content-Type": "application/json", "Idempotency-Key": "outage-1"},
        json.dumps(seed_body(stack_env)).encode(),
    )
    response = api.handle(request)
    assert response.status == 503, response.body
    assert "nothing was created" in response.body["error"]["message"]
    assert store.get_export(fixed) is None
    db = firestore.Client(project=project)
    assert not [
        d
        for d in db.collection("idempotencyKeys").stream()
        if (d.to_dict() or {}).get("queryUUID") == fixed
    ]


def run_exportctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXPORTCTL), *args],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_keys_cli_create_revoke_and_subscription(stack_env: dict[str, str]) -> None:
    """`exportctl keys create` prints the key alone; revoked and unsubscribed keys get 403."""
    created = run_exportctl(stack_env, "keys", "create", "--account", "itest")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == key + "\n"
    assert looks_like_key(key)
    key_id = key.split("_")[1]
    assert key_id in created.stderr
    assert key not in created.stderr

    with httpx.Client(base_url=stack_env["EXPORT_API_URL"], timeout=30) as http:
        ok = http.post("/dataset/export", json=seed_body(stack_env), headers={"x-api-key": key})
        assert ok.status_code == 201, ok.text
        revoked = run_exportctl(stack_env, "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        refused = http.post(
            "/dataset/export", json=seed_body(stack_env), headers={"x-api-key": key}
        )
        assert refused.status_code == 403
        assert "revoked" in refused.json()["error"]["message"]
        # The owner's status page goes with the key.
        assert (
            http.get(
                f"/dataset/export/{ok.json()['queryUUID']}", headers={"x-api-key": key}
            ).status_code
            == 403
        )

        trial = run_exportctl(
            stack_env, "keys", "create", "--account", "trial", "--no-subscription"
        ).stdout.strip()
        no_sub = http.post(
            "/dataset/export", json=seed_body(stack_env), headers={"x-api-key": trial}
        )
        assert no_sub.status_code == 403
        assert no_sub.json()["error"]["code"] == "subscription_required"

    assert run_exportctl(stack_env, "keys", "revoke", "nosuchkeyid").returncode == 1


def test_stored_key_material_is_hash_and_ciphertext_only(stack_env: dict[str, str]) -> None:
    """Firestore holds API keys by hash with an encrypted copy, never in the clear."""
    db = firestore.Client(project=stack_env["GOOGLE_CLOUD_PROJECT"])
    dump = json.dumps(
        [{"id": d.id, **(d.to_dict() or {})} for d in db.collection("apiKeys").stream()],
        default=str,
    )
    assert stack_env["EXPORT_API_KEY"] not in dump
    assert stack_env["EXPORT_API_KEY"].split("_")[1] in dump  # the public key id is there


def test_cli_submit_and_status(stack_env: dict[str, str]) -> None:
    """`exportctl submit` of the README's example file prints the queryUUID and `exportctl
    status` shows it queued or later; an API error is one line naming the field."""
    query = SEED_DATASET_FILE
    submitted = run_exportctl(
        stack_env,
        "submit",
        "--dataset",
        str(query),
        "--webhook",
        stack_env["EXPORT_WEBHOOK_URL"],
        "--name",
        "cli",
        "--format",
        "jsonl",
    )
    assert submitted.returncode == 0, submitted.stderr
    query_uuid = submitted.stdout.strip()
    status = run_exportctl(stack_env, "status", query_uuid)
    assert status.returncode == 0, status.stderr
    assert query_uuid in status.stdout
    assert "status" in status.stdout
    bad = run_exportctl(
        stack_env,
        "submit",
        "--dataset",
        str(query),
        "--webhook",
        "http://example.com/x",
        "--name",
        "cli",
    )
    assert bad.returncode == 1
    [line] = bad.stderr.splitlines()
    assert line.startswith(f"exportctl: HTTP 400 from POST {stack_env['EXPORT_API_URL']}/")
    assert line.endswith("(webhookURL)")
    unknown = run_exportctl(stack_env, "status", "no-such-export")
    assert unknown.returncode == 1
    [line] = unknown.stderr.splitlines()
    assert line.startswith(
        f"exportctl: HTTP 404 from GET {stack_env['EXPORT_API_URL']}/dataset/export/no-such-export:"
    )


def _cli_submit(stack_env: dict[str, str], webhook_path: str) -> str:
    webhook = stack_env["EXPORT_WEBHOOK_URL"].rsplit("/", 1)[0] + webhook_path
    submitted = run_exportctl(
        stack_env,
        *("submit", "--dataset", str(SEED_DATASET_FILE), "--webhook", webhook, "--name", "w"),
    )
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip()


def test_cli_wait_shows_the_delivery_and_waits_for_it(stack_env: dict[str, str]) -> None:
    """`exportctl wait` ends with the delivery state; `--delivered` waits until the webhook is
    delivered, and exits non-zero when delivery has failed for good."""
    query_uuid = _cli_submit(stack_env, "/webhook")
    waited = run_exportctl(stack_env, "wait", "--delivered", "--interval", "0.2", query_uuid)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == query_uuid
    assert waited.stderr.splitlines()[-1] == "delivery  delivered; 1 attempt, last: 200"

    gone = _cli_submit(stack_env, "/status/410")
    waited = run_exportctl(stack_env, "wait", "--delivered", "--interval", "0.2", gone)
    assert waited.returncode == 1
    last = waited.stderr.splitlines()[-1]
    assert last.startswith("exportctl: webhook delivery failed for good (failed; 1 attempt, ")
    assert "last: 410" in last
    assert last.endswith(f"'exportctl redeliver {gone}' sends it again")
    plain = run_exportctl(stack_env, "wait", "--interval", "0.2", gone)
    assert plain.returncode == 0, plain.stderr  # the export itself succeeded
    assert plain.stderr.splitlines()[-1].startswith("delivery  failed; 1 attempt, last: 410")


def test_stalled_bodies_get_408_and_do_not_starve_other_requests(
    stack_env: dict[str, str],
) -> None:
    """Connections that send headers and then no body hold no thread for long: 408 each, and a
    request queued behind them is served."""
    port = urlsplit(stack_env["EXPORT_API_URL"]).port
    assert port is not None
    # As many as the submit function has threads (functions-framework: THREADS or 4 per CPU).
    threads = int(os.environ.get("THREADS") or (os.cpu_count() or 1) * 4)
    patience = BODY_TIMEOUT_SECONDS + 15
    head = (
        b"POST /dataset/export HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
    )
    stalled: list[socket.socket] = []
    try:
        t0 = time.monotonic()
        for _ in range(threads):
            connection = socket.create_connection(("127.0.0.1", port), timeout=patience)
            connection.sendall(head + b'{"dataset":')
            stalled.append(connection)
        time.sleep(1)  # every worker thread is now waiting for a body
        normal = httpx.get(f"{stack_env['EXPORT_API_URL']}/openapi.json", timeout=patience)
        assert normal.status_code == 200
        assert time.monotonic() - t0 < BODY_TIMEOUT_SECONDS + 5
        for connection in stalled:
            answer = http.client.HTTPResponse(connection)
            answer.begin()
            assert answer.status == 408
            error = json.loads(answer.read())["error"]
            assert error["code"] == "request_timeout"
            assert f"within {BODY_TIMEOUT_SECONDS:.0f} s" in error["message"]
        elapsed = time.monotonic() - t0
        assert BODY_TIMEOUT_SECONDS - 1 < elapsed < BODY_TIMEOUT_SECONDS + 5
    finally:
        for connection in stalled:
            connection.close()
