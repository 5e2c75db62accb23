"""Integration tests of the process function on the emulators: the file is right to the row,
one file per export however often Pub/Sub delivers, nothing lost when a worker dies."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import gzip
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from google.cloud import pubsub_v1, storage

from dataset_export.adapters.firestore_store import FirestoreStore
from dataset_export.config import Settings
from dataset_export.core.dataset import SubmittedDataset
from dataset_export.core.errors import PreconditionFailed
from dataset_export.core.lifecycle import DEFAULT_LEASE, ClaimVerdict, claimed
from dataset_export.core.records import ExportRecord, ExportStatus
from dataset_export.service.process import ExportRunner
from dataset_export.wiring import build_export_runner
from dataset_export_tools.dataset.generate import HOSTILE_BUILDING_NAMES, generate_dataset
from dataset_export_tools.demo import SEED_DATASET
from dataset_export_tools.localstack.stack import StackInfo
from tests.integration.midupload import REPO

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def table(stack_env: dict[str, str]) -> pa.Table:
    """The test stack's dataset, read independently of the engine."""
    return pq.read_table(stack_env["EXPORT_DATASET_PATH"])


def submit(
    client: httpx.Client, env: dict[str, str], dataset: dict[str, Any], fmt: str = "csv"
) -> str:
    body = {
        "dataset": dataset,
        "webhookURL": env["EXPORT_WEBHOOK_URL"],
        "name": "itest",
        "format": fmt,
    }
    response = client.post("/dataset/export", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["queryUUID"])


def wait_finished(client: httpx.Client, query_uuid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc: dict[str, Any] = client.get(f"/dataset/export/{query_uuid}").json()
        if doc["status"] in ("succeeded", "failed"):
            return doc
        time.sleep(0.2)
    raise AssertionError(f"export {query_uuid} did not finish: {doc}")


def download(client: httpx.Client, doc: dict[str, Any]) -> bytes:
    response = client.get(doc["download"]["url"], follow_redirects=True)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert "content-encoding" not in response.headers
    assert len(response.content) == doc["sizeBytes"]
    return response.content


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(gzip.decompress(data).decode("utf-8"), newline="")))


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def test_seed_example_has_exactly_the_rows_of_an_independent_query(
    stack_env: dict[str, str], client: httpx.Client, table: pa.Table
) -> None:
    """The seed's grouped Seattle query matches a pyarrow group-by of the same file."""
    doc = wait_finished(client, submit(client, stack_env, SEED_DATASET))
    assert doc["status"] == "succeeded", doc
    rows = csv_rows(download(client, doc))
    assert rows[0] == ["street_address", "avg_asking_rent"]
    got = {r[0]: float(r[1]) for r in rows[1:]}

    mask = pc.and_(
        pc.equal(table["msa"], "Seattle, WA"),
        pc.is_in(table["bed"], pa.array([1, 2, 3], pa.int32())),
    )
    expected_table = (
        table.filter(mask).group_by("street_address").aggregate([("asking_rent", "mean")])
    )
    expected = dict(
        zip(
            expected_table["street_address"].to_pylist(),
            expected_table["asking_rent_mean"].to_pylist(),
            strict=True,
        )
    )
    assert len(expected) > 0
    assert doc["numberRows"] == len(expected) == len(rows) - 1
    assert set(got) == set(expected)
    assert all(close(got[k], expected[k]) for k in expected)


def test_jsonl_types_and_csv_quoting_round_trip(
    stack_env: dict[str, str], client: httpx.Client, table: pa.Table
) -> None:
    """Hostile text survives CSV quoting; JSONL keeps numbers, dates, booleans and nulls typed."""
    columns = [
        "property_id",
        "building_name",
        "bed",
        "bath",
        "asking_rent",
        "listed_on",
        "is_active",
    ]
    dataset = {
        "scopes": [{"column": c} for c in columns],
        "filters": {
            "or": [
                {"column": "building_name", "filter": {"in": list(HOSTILE_BUILDING_NAMES)}},
                {"column": "property_type", "filter": {"equals": "single_family"}},
            ]
        },
        "orderBy": [{"column": "property_id"}],
    }
    mask = pc.or_(
        pc.is_in(table["building_name"], pa.array(HOSTILE_BUILDING_NAMES)),
        pc.equal(table["property_type"], "single_family"),
    )
    expected = table.filter(mask).select(columns).sort_by("property_id").to_pylist()
    assert any(r["building_name"] in HOSTILE_BUILDING_NAMES for r in expected)
    assert any(r["building_name"] is None for r in expected)

    csv_doc = wait_finished(client, submit(client, stack_env, dataset, "csv"))
    rows = csv_rows(download(client, csv_doc))
    assert rows[0] == columns
    assert [r[1] for r in rows[1:]] == [r["building_name"] or "" for r in expected]
    assert [r[0] for r in rows[1:]] == [r["property_id"] for r in expected]

    jsonl_doc = wait_finished(client, submit(client, stack_env, dataset, "jsonl"))
    lines = gzip.decompress(download(client, jsonl_doc)).decode("utf-8").splitlines()
    objects = [json.loads(line) for line in lines]
    assert len(objects) == len(expected) == jsonl_doc["numberRows"]
    for got, want in zip(objects, expected, strict=True):
        assert list(got) == columns
        assert got["building_name"] == want["building_name"]
        assert got["bed"] == want["bed"]
        assert isinstance(got["bed"], int)
        assert close(got["asking_rent"], want["asking_rent"])
        assert got["listed_on"] == want["listed_on"].isoformat()
        assert got["is_active"] is want["is_active"]


def objects_for(env: dict[str, str], query_uuid: str) -> list[str]:
    bucket = storage.Client(project=env["GOOGLE_CLOUD_PROJECT"]).bucket(env["EXPORT_BUCKET"])
    return [b.name for b in bucket.list_blobs(prefix=f"exports/{query_uuid}")]


def test_duplicate_delivery_makes_no_second_file_or_ready_message(
    stack_env: dict[str, str], client: httpx.Client
) -> None:
    """Re-publishing a finished export's request is acknowledged and changes nothing."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    subscriber = pubsub_v1.SubscriberClient()
    tap = subscriber.subscription_path(project, f"ready-tap-{uuid.uuid4().hex[:8]}")
    subscriber.create_subscription(
        request={"name": tap, "topic": f"projects/{project}/topics/export-ready"}
    )
    try:
        query_uuid = submit(
            client,
            stack_env,
            {"scopes": [{"column": "msa"}, {"column": "sqft", "aggregate": "Median"}]},
        )
        first = wait_finished(client, query_uuid)
        assert first["status"] == "succeeded"
        publisher = pubsub_v1.PublisherClient()
        topic = publisher.topic_path(project, "export-requests")
        for _ in range(3):
            publisher.publish(
                topic, json.dumps({"queryUUID": query_uuid}).encode(), kind="export-request"
            ).result(10)
        time.sleep(3)
        after = client.get(f"/dataset/export/{query_uuid}").json()
        assert after["completedOn"] == first["completedOn"]
        assert after["sizeBytes"] == first["sizeBytes"]
        assert objects_for(stack_env, query_uuid) == [f"exports/{query_uuid}.csv.gz"]
        ready = subscriber.pull(
            request={"subscription": tap, "max_messages": 20}, timeout=5
        ).received_messages
        assert [m.message.data for m in ready].count(
            json.dumps({"queryUUID": query_uuid}).encode()
        ) == 1
    finally:
        subscriber.delete_subscription(request={"subscription": tap})


def unpublished_export(store: FirestoreStore) -> str:
    """A queued export in Firestore whose request was never published: only the test claims it."""
    query_uuid = str(uuid.uuid4())
    store.create_export(
        ExportRecord(
            query_uuid=query_uuid, account_id="claim-itest", key_hash="h", key_id="k",
            name="claim", format="csv", webhook_url="https://hooks.example/x",
            dataset=SubmittedDataset('{"scopes":[{"column":"city"}]}'),
            status=ExportStatus.QUEUED, requested_on=dt.datetime.now(dt.UTC),
        )
    )  # fmt: skip
    return query_uuid


def test_racing_claims_let_exactly_one_worker_run(stack_env: dict[str, str]) -> None:
    """Eight runners claim one queued export at once: one runs it, the seven others see BUSY."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    query_uuid = unpublished_export(FirestoreStore.for_project(project))
    base = build_export_runner(Settings.from_env(stack_env))
    runners = [
        dataclasses.replace(base, store=FirestoreStore.for_project(project), worker=f"race-{i}")
        for i in range(8)
    ]
    barrier = threading.Barrier(len(runners))
    verdicts: dict[str, ClaimVerdict] = {}

    def race(runner: ExportRunner) -> None:
        barrier.wait()
        verdicts[runner.worker] = runner.claim(query_uuid).decision.verdict

    threads = [threading.Thread(target=race, args=(r,)) for r in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    winners = [w for w, v in verdicts.items() if v is ClaimVerdict.RUN]
    assert len(verdicts) == 8
    assert len(winners) == 1
    assert sorted(v.value for v in verdicts.values()) == ["busy"] * 7 + ["run"]
    record = FirestoreStore.for_project(project).get_export(query_uuid)
    assert record is not None
    assert (record.status, record.lease_owner, record.run_attempts) == (
        ExportStatus.RUNNING,
        winners[0],
        1,
    )


def test_a_claim_written_over_a_stale_read_fails_its_precondition(
    stack_env: dict[str, str],
) -> None:
    """Firestore refuses a claim whose read is no longer current, and keeps the first claim."""
    store = FirestoreStore.for_project(stack_env["GOOGLE_CLOUD_PROJECT"])
    query_uuid = unpublished_export(store)
    read = store.read_for_claim(query_uuid)
    assert read is not None
    now = dt.datetime.now(dt.UTC)
    store.write_claim(claimed(read.record, "first", now, DEFAULT_LEASE), if_version=read.version)
    with pytest.raises(PreconditionFailed):
        store.write_claim(
            claimed(read.record, "second", now, DEFAULT_LEASE), if_version=read.version
        )
    record = store.get_export(query_uuid)
    assert record is not None
    assert (record.lease_owner, record.run_attempts) == ("first", 1)
    assert store.read_for_claim(str(uuid.uuid4())) is None


def test_dead_lettered_request_marks_the_export_failed(
    stack_env: dict[str, str], client: httpx.Client
) -> None:
    """A request that lands in the dead-letter topic ends as 'failed' with the reason, not lost."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    store = FirestoreStore.for_project(project)
    query_uuid = submit(client, stack_env, {"scopes": [{"column": "city"}]})
    wait_finished(client, query_uuid)
    # Put a queued twin in place and dead-letter it, as Pub/Sub does after the last attempt.
    twin = store.get_export(query_uuid)
    assert twin is not None
    twin_uuid = str(uuid.uuid4())
    twin = dataclasses.replace(
        twin, query_uuid=twin_uuid, status=type(twin.status)("queued"),
        completed_on=None, started_on=None, number_rows=None, size_bytes=None,
        rows_written=None, object_name=None, crc32c=None, md5=None, ready_published_on=None,
    )  # fmt: skip
    store.create_export(twin)
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(project, "export-dead-letter")
    publisher.publish(
        topic, json.dumps({"queryUUID": twin_uuid}).encode(), kind="export-request"
    ).result(10)
    doc = wait_finished(client, twin_uuid, timeout=30)
    assert doc["status"] == "failed"
    assert doc["error"]["code"] == "dead_lettered"
    assert "dead-letter" in doc["error"]["message"]
    assert objects_for(stack_env, twin_uuid) == []


def test_permanent_failure_is_recorded_and_not_retried(
    stack_env: dict[str, str], tmp_path: Path, table: pa.Table
) -> None:
    """A dataset lacking a queried column fails the export with a reason; no file, no ready."""
    broken = tmp_path / "broken.parquet"
    pq.write_table(table.drop_columns(["sqft"]), broken)
    result = run_worker(stack_env, broken, {"scopes": [{"column": "city"}, {"column": "sqft"}]})
    assert result["status"] == "failed", result
    assert "sqft" in result["error"]["message"]
    assert objects_for(stack_env, result["queryUUID"]) == []


WORKER = r"""
import datetime as dt, json, sys
from dataset_export.adapters.datasets import FixedDataset
from dataset_export.config import Settings
from dataset_export.wiring import build_export_runner
from tests.integration.midupload import dying_export

spec = json.loads(sys.argv[1])
runner = build_export_runner(Settings.from_env())
runner.datasets = FixedDataset(spec["dataset"])
if spec.get("kill_after_bytes"):
    runner.engine.export = dying_export(runner.engine.export, spec["kill_after_bytes"])
if spec.get("clock_offset_s"):
    offset = dt.timedelta(seconds=spec["clock_offset_s"])
    runner.clock = lambda: dt.datetime.now(dt.UTC) + offset
runner.handle(spec["queryUUID"])
"""


def make_queued_export(
    env: dict[str, str], dataset: dict[str, Any], owner: str | None = None
) -> str:
    """A queued export record that no Pub/Sub message announces (the test plays the worker);
    ``owner``: an export whose API key it shares, so that key may read its status."""
    from dataset_export.core.records import ExportRecord, ExportStatus

    store = FirestoreStore.for_project(env["GOOGLE_CLOUD_PROJECT"])
    query_uuid = str(uuid.uuid4())
    mine = store.get_export(owner) if owner else None
    store.create_export(
        ExportRecord(
            query_uuid=query_uuid,
            account_id=mine.account_id if mine else "demo",
            key_hash=mine.key_hash if mine else "test",
            key_id=mine.key_id if mine else "test",
            name="worker",
            format="csv",
            webhook_url=env["EXPORT_WEBHOOK_URL"],
            # ASCII JSON: lone surrogates stay escapes
            dataset=SubmittedDataset(json.dumps(dataset)),
            status=ExportStatus.QUEUED,
            requested_on=dt.datetime.now(dt.UTC),
        )
    )
    return query_uuid


def test_a_query_the_engine_refuses_ends_failed_on_its_first_delivery(
    stack_env: dict[str, str], client: httpx.Client
) -> None:
    """A stored filter with a lone surrogate (past submit) fails at once with its reason, acked."""
    owner = submit(client, stack_env, {"scopes": [{"column": "city"}], "limit": 1})
    wait_finished(client, owner)
    dataset = {
        "scopes": [{"column": "city"}],
        "filters": [{"column": "city", "filter": {"equals": "\udfff"}}],
    }
    query_uuid = make_queued_export(stack_env, dataset, owner=owner)
    publisher = pubsub_v1.PublisherClient()
    topic = publisher.topic_path(stack_env["GOOGLE_CLOUD_PROJECT"], "export-requests")
    started = time.monotonic()
    publisher.publish(
        topic, json.dumps({"queryUUID": query_uuid}).encode(), kind="export-request"
    ).result(10)
    # Before, the engine's error was a 500 under a 2-minute lease until the dead letter.
    doc = wait_finished(client, query_uuid, timeout=20)
    assert time.monotonic() - started < 20
    assert doc["status"] == "failed", doc
    assert doc["error"]["code"] == "query_rejected"
    message = doc["error"]["message"]
    assert "not valid input" in message
    assert "surrogate" in message
    assert "/" not in message  # no paths, no SQL
    assert "SELECT" not in message
    time.sleep(3)  # acknowledged: no further delivery runs it again
    after = client.get(f"/dataset/export/{query_uuid}").json()
    assert after["attempts"] == 1
    assert after["completedOn"] == doc["completedOn"]
    assert objects_for(stack_env, query_uuid) == []


def test_a_failed_attempt_shows_its_error_while_the_export_is_retried(
    stack_env: dict[str, str], client: httpx.Client, tmp_path: Path
) -> None:
    """An unexpected failure leaves the export running with lastError and attempts; the next
    delivery starts at once and finishes it."""
    owner = submit(client, stack_env, {"scopes": [{"column": "city"}], "limit": 1})
    wait_finished(client, owner)
    dataset = {"scopes": [{"column": "city"}, {"column": "bed"}], "limit": 50}
    query_uuid = make_queued_export(stack_env, dataset, owner=owner)
    missing = tmp_path / "gone" / "listings.parquet"  # an I/O error in the engine
    failed = run_worker(stack_env, missing, dataset, query_uuid=query_uuid)
    assert failed["returncode"] != 0
    doc = client.get(f"/dataset/export/{query_uuid}").json()
    assert doc["status"] == "running", doc
    assert doc["attempts"] == 1
    last = doc["lastError"]
    assert last["code"] == "internal_error"
    assert "attempt 1 of 5 failed" in last["message"]
    assert "IOException" in last["message"]
    assert str(tmp_path) not in last["message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", last["at"])
    assert objects_for(stack_env, query_uuid) == []
    # The lease was freed: the redelivery runs now, not after the lease would have expired.
    done = run_worker(
        stack_env, Path(stack_env["EXPORT_DATASET_PATH"]), dataset, query_uuid=query_uuid
    )
    assert done["returncode"] == 0, done["stderr"]
    doc = client.get(f"/dataset/export/{query_uuid}").json()
    assert doc["status"] == "succeeded", doc
    assert doc["attempts"] == 2
    assert doc["numberRows"] == 50


def run_worker(
    env: dict[str, str],
    dataset_file: Path,
    dataset: dict[str, Any],
    query_uuid: str | None = None,
    **spec: Any,
) -> dict[str, Any]:
    query_uuid = query_uuid or make_queued_export(env, dataset)
    worker_env = {**os.environ, **env, "EXPORT_ENV": "local"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            WORKER,
            json.dumps({"queryUUID": query_uuid, "dataset": str(dataset_file), **spec}),
        ],
        env=worker_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    record = FirestoreStore.for_project(env["GOOGLE_CLOUD_PROJECT"]).get_export(query_uuid)
    assert record is not None
    doc = record.status_document()
    doc["returncode"] = proc.returncode
    doc["stderr"] = proc.stderr[-2000:]
    return doc


def test_worker_killed_mid_upload_leaves_no_object_and_redelivery_completes(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL in the middle of the upload shows no partial object; the next delivery finishes."""
    dataset = {
        "scopes": [
            {"column": c}
            for c in (
                "property_id",
                "street_address",
                "city",
                "building_name",
                "asking_rent",
                "lat",
                "lon",
            )
        ]
    }
    # Big enough that the kill at 700 KiB comes well before the end of the file.
    path = generate_dataset(200_000, tmp_path / "big.parquet").path
    killed = run_worker(stack_env, path, dataset, kill_after_bytes=700 * 1024)
    query_uuid = killed["queryUUID"]
    assert killed["returncode"] == -signal.SIGKILL, killed["stderr"]
    sent = re.search(r"killed after sending (\d+) bytes", killed["stderr"])
    assert sent, killed["stderr"]
    assert int(sent.group(1)) >= 700 * 1024
    assert killed["status"] == "running"
    assert objects_for(stack_env, query_uuid) == []

    # A redelivery inside the dead worker's lease is told to come back later...
    busy = run_worker(stack_env, path, dataset, query_uuid=query_uuid)
    assert busy["returncode"] != 0
    assert "being run by another worker" in busy["stderr"]
    # ...and once the lease has expired, it takes over and finishes.
    done = run_worker(stack_env, path, dataset, query_uuid=query_uuid, clock_offset_s=600)
    assert done["returncode"] == 0, done["stderr"]
    assert done["status"] == "succeeded"
    assert objects_for(stack_env, query_uuid) == [f"exports/{query_uuid}.csv.gz"]
    bucket = storage.Client(project=stack_env["GOOGLE_CLOUD_PROJECT"]).bucket(
        stack_env["EXPORT_BUCKET"]
    )
    assert list(bucket.list_blobs(prefix=f"tmp/{query_uuid}/")) == []
    data = bucket.blob(f"exports/{query_uuid}.csv.gz").download_as_bytes(raw_download=True)
    assert len(data) == done["sizeBytes"]
    rows = csv_rows(data)
    assert len(rows) - 1 == done["numberRows"] == pq.read_metadata(path).num_rows
    assert Counter(r[0] for r in rows[1:]).most_common(1)[0][1] == 1


def test_download_link_tampered_is_403_and_status_hides_other_keys(
    stack_env: dict[str, str], client: httpx.Client, stack: StackInfo
) -> None:
    """A modified token is refused with 403 and a JSON error."""
    doc = wait_finished(
        client, submit(client, stack_env, {"scopes": [{"column": "state"}], "limit": 5})
    )
    url = doc["download"]["url"]
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    response = client.get(tampered)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "link_invalid"
    other = client.get(url.replace(doc["queryUUID"], str(uuid.uuid4())))
    assert other.status_code == 403


def test_streamed_upload_writes_the_object_once_with_its_metadata(
    stack_env: dict[str, str],
) -> None:
    """Many writes become one object: gzip type, attachment name, queryUUID, matching crc32c."""
    from dataset_export.adapters.gcs_storage import GcsExportStorage

    client = storage.Client(project=stack_env["GOOGLE_CLOUD_PROJECT"])
    name = f"exports/{uuid.uuid4()}.csv.gz"
    upload = GcsExportStorage(client, stack_env["EXPORT_BUCKET"]).open_upload(
        name, metadata={"queryUUID": "q-1"}
    )
    data = os.urandom(3 * 1024 * 1024 + 17)
    for start in range(0, len(data), 100_000):
        upload.write(data[start : start + 100_000])
    info = upload.commit()
    blob = client.bucket(stack_env["EXPORT_BUCKET"]).get_blob(name)
    assert blob is not None
    assert blob.download_as_bytes(raw_download=True) == data
    assert (info.size, info.crc32c) == (len(data), blob.crc32c)
    assert blob.content_type == "application/gzip"
    assert blob.content_encoding is None
    assert blob.content_disposition == f'attachment; filename="{name.rsplit("/", 1)[1]}"'
    assert blob.metadata == {"queryUUID": "q-1"}


def test_aborted_streamed_upload_leaves_no_object(stack_env: dict[str, str]) -> None:
    """Bytes already on the wire never become an object when the export is abandoned."""
    from dataset_export.adapters.gcs_storage import GcsExportStorage

    client = storage.Client(project=stack_env["GOOGLE_CLOUD_PROJECT"])
    name = f"exports/{uuid.uuid4()}.csv.gz"
    upload = GcsExportStorage(client, stack_env["EXPORT_BUCKET"]).open_upload(name, metadata={})
    for _ in range(20):
        upload.write(os.urandom(100_000))
    deadline = time.monotonic() + 10
    while upload.sent_bytes < 2_000_000 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert upload.sent_bytes == 2_000_000
    upload.abort()
    time.sleep(0.5)
    assert client.bucket(stack_env["EXPORT_BUCKET"]).get_blob(name) is None
