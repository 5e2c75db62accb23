"""Exports planned as parts, on the emulators: real Firestore, Pub/Sub and fake-gcs-server.

Each test runs the process use case in this process (``build_export_runner`` on the test
stack's settings), so it can deliver part messages twice or kill a part mid-upload; the part
messages go through a topic of the test's own on the Pub/Sub emulator and are pulled and handed
over as the push subscription would. The dataset is generated here with 500-row row groups, so
20,000 rows split into up to 40 parts.

What the emulator does differently (DESIGN.md) and the tests do not rely on: fake-gcs-server
ignores ``ifGenerationMatch`` on compose (the create-only rule is unit-tested against a fake
transport in ``tests/unit/test_gcs_compose.py``), returns an MD5 for composites (the record
keeps none), and answers 500 for a missing source.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as dt
import gzip
import io
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import google_crc32c
import pandas as pd
import pytest
from google.cloud import pubsub_v1, storage

from dataset_export.adapters.datasets import FixedDataset
from dataset_export.adapters.firestore_store import FirestoreStore
from dataset_export.adapters.pubsub_publisher import PubSubPublisher
from dataset_export.config import Settings
from dataset_export.core.dataset import SubmittedDataset
from dataset_export.core.errors import QueryRejected, TransientError
from dataset_export.core.parts import PartSpec, tmp_prefix
from dataset_export.core.records import ExportRecord, ExportStatus
from dataset_export.engine.duckdb_engine import DuckDbEngine
from dataset_export.events import PART_KIND, READY_KIND, decode_message
from dataset_export.service.process import ExportRunner, object_name
from dataset_export.wiring import build_export_runner
from dataset_export_tools.dataset.generate import generate_dataset
from tests.integration.midupload import REPO

pytestmark = pytest.mark.integration

ROWS = 20_000
GROUP_ROWS = 500


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20,000 rows in 40 row groups of 500."""
    path = tmp_path_factory.mktemp("parts") / "listings.parquet"
    generate_dataset(ROWS, str(path), row_group_rows=GROUP_ROWS)
    return path


@dataclasses.dataclass
class Topic:
    """A topic of the test's own with a pull subscription."""

    name: str
    subscription: str
    subscriber: pubsub_v1.SubscriberClient

    def pull(self) -> list[Any]:
        """Every message waiting (several pulls: the emulator hands out a few at a time)."""
        messages: list[Any] = []
        while True:
            response = self.subscriber.pull(
                request={"subscription": self.subscription, "max_messages": 100},
                timeout=10,
            )
            if not response.received_messages:
                return messages
            messages += response.received_messages
            self.subscriber.acknowledge(
                request={
                    "subscription": self.subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )


@pytest.fixture
def topics(stack_env: dict[str, str]) -> Iterator[dict[str, Topic]]:
    """A parts topic and a ready topic for this test alone."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    made: dict[str, Topic] = {}
    for kind in ("parts", "ready"):
        suffix = f"{kind}-itest-{uuid.uuid4().hex[:8]}"
        topic = publisher.topic_path(project, suffix)
        subscription = subscriber.subscription_path(project, suffix)
        publisher.create_topic(request={"name": topic})
        subscriber.create_subscription(request={"name": subscription, "topic": topic})
        made[kind] = Topic(suffix, subscription, subscriber)
    try:
        yield made
    finally:
        for topic in made.values():
            subscriber.delete_subscription(request={"subscription": topic.subscription})
            publisher.delete_topic(request={"topic": publisher.topic_path(project, topic.name)})


def runner_for(
    env: dict[str, str], dataset: Path, topics: dict[str, Topic], **options: Any
) -> ExportRunner:
    """The process use case on the stack's Firestore and bucket, the test's topics and dataset."""
    base = build_export_runner(Settings.from_env(env))
    project = env["GOOGLE_CLOUD_PROJECT"]
    return dataclasses.replace(
        base,
        datasets=FixedDataset(str(dataset)),
        parts_queue=PubSubPublisher(project, topics["parts"].name, PART_KIND),
        ready=PubSubPublisher(project, topics["ready"].name, READY_KIND),
        **({"part_rows": GROUP_ROWS * 4, "max_parts": 100} | options),
    )


def new_export(env: dict[str, str], dataset: dict[str, Any], fmt: str = "csv") -> str:
    """A queued export whose request was never published: only this test runs it."""
    query_uuid = str(uuid.uuid4())
    FirestoreStore.for_project(env["GOOGLE_CLOUD_PROJECT"]).create_export(
        ExportRecord(
            query_uuid=query_uuid, account_id="parts-itest", key_hash="h", key_id="k",
            name="parts", format=fmt, webhook_url="https://hooks.example/x",
            dataset=SubmittedDataset(json.dumps(dataset)), status=ExportStatus.QUEUED,
            requested_on=dt.datetime.now(dt.UTC),
        )
    )  # fmt: skip
    return query_uuid


def deliver(runner: ExportRunner, messages: list[Any], times: int = 1) -> None:
    """Hand each pulled message to the runner as its push would, ``times`` times each."""
    for received in messages:
        event = {
            "message": {
                "data": base64.b64encode(received.message.data).decode("ascii"),
                "attributes": dict(received.message.attributes),
                "messageId": received.message.message_id,
            }
        }
        for _ in range(times):
            runner.handle_message(decode_message(event), dead_letter=False)


def record_of(env: dict[str, str], query_uuid: str) -> ExportRecord:
    record = FirestoreStore.for_project(env["GOOGLE_CLOUD_PROJECT"]).get_export(query_uuid)
    assert record is not None
    return record


def bucket(env: dict[str, str]) -> storage.Bucket:
    return storage.Client(project=env["GOOGLE_CLOUD_PROJECT"]).bucket(env["EXPORT_BUCKET"])


def download(env: dict[str, str], name: str) -> bytes:
    data: bytes = bucket(env).blob(name).download_as_bytes(raw_download=True)
    return data


def records(text: bytes, fmt: str) -> list[Any]:
    """The file's records: CSV rows as parsed (a quoted field may hold a line break), or JSONL
    lines (JSON escapes every line break)."""
    if fmt == "csv":
        return [tuple(row) for row in csv.reader(io.StringIO(text.decode("utf-8"), newline=""))]
    return text.split(b"\n")[:-1]


def temporaries(env: dict[str, str], query_uuid: str) -> list[str]:
    return [b.name for b in bucket(env).list_blobs(prefix=tmp_prefix(query_uuid))]


def run_as_parts(
    env: dict[str, str], runner: ExportRunner, topics: dict[str, Topic], query_uuid: str
) -> int:
    """Run the request, then every part message once; the number of parts."""
    runner.handle(query_uuid)
    messages = topics["parts"].pull()
    deliver(runner, messages)
    return len(messages)


FULL_TABLE = {
    "scopes": [{"column": c} for c in ("property_id", "msa", "building_name", "asking_rent", "bed")]
}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_multi_part_export_has_the_rows_of_the_single_part_export(
    stack_env: dict[str, str], dataset: Path, topics: dict[str, Topic], fmt: str
) -> None:
    """10 parts composed: the same header and lines as one instance's file; no temporaries."""
    parted = new_export(stack_env, FULL_TABLE, fmt)
    single = new_export(stack_env, FULL_TABLE, fmt)
    runner = runner_for(stack_env, dataset, topics)
    assert run_as_parts(stack_env, runner, topics, parted) == 10
    dataclasses.replace(runner, parts_queue=None).handle(single)
    record = record_of(stack_env, parted)
    assert record.status is ExportStatus.SUCCEEDED, record.error
    assert (record.parts_total, record.number_rows) == (10, ROWS)
    parted_text = records(gzip.decompress(download(stack_env, object_name(parted, fmt))), fmt)
    single_text = records(gzip.decompress(download(stack_env, object_name(single, fmt))), fmt)
    if fmt == "csv":
        assert parted_text[0] == single_text[0]
        assert parted_text.count(parted_text[0]) == 1  # the header, once
    assert Counter(parted_text) == Counter(single_text)
    assert len(parted_text) == ROWS + (fmt == "csv")
    assert temporaries(stack_env, parted) == []
    assert record.status_document()["parts"] == {"total": 10, "done": 10}


def test_forty_parts_compose_in_two_rounds_and_every_reader_reads_the_whole_file(
    stack_env: dict[str, str], dataset: Path, topics: dict[str, Topic], tmp_path: Path
) -> None:
    """More than 32 sources: the composite's crc32c is the parts' combined; gzip, zcat, pandas
    and DuckDB read every row of the concatenated members."""
    query_uuid = new_export(stack_env, FULL_TABLE)
    runner = runner_for(stack_env, dataset, topics, part_rows=GROUP_ROWS)
    assert run_as_parts(stack_env, runner, topics, query_uuid) == 40
    record = record_of(stack_env, query_uuid)
    assert record.status is ExportStatus.SUCCEEDED, record.error
    data = download(stack_env, object_name(query_uuid, "csv"))
    crc = base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")
    assert (record.crc32c, record.size_bytes, record.md5) == (crc, len(data), None)
    path = tmp_path / "export.csv.gz"
    path.write_bytes(data)
    text = gzip.decompress(data)
    assert len(records(text, "csv")) == ROWS + 1
    zcat = subprocess.run(["zcat", str(path)], capture_output=True, check=True).stdout
    assert zcat == text
    assert subprocess.run(["gzip", "-t", str(path)], check=False).returncode == 0
    frame = pd.read_csv(path, compression="gzip")
    assert len(frame) == ROWS
    assert list(frame.columns) == [s["column"] for s in FULL_TABLE["scopes"]]
    assert duckdb.read_csv(str(path)).aggregate("count(*)").fetchall() == [(ROWS,)]
    assert frame["asking_rent"].sum() == pd.read_csv(io.BytesIO(text))["asking_rent"].sum()
    assert temporaries(stack_env, query_uuid) == []


def test_duplicate_part_messages_write_each_part_once_and_the_file_once(
    stack_env: dict[str, str], dataset: Path, topics: dict[str, Topic]
) -> None:
    """Every part message delivered three times: each part runs once, one final object."""
    query_uuid = new_export(stack_env, FULL_TABLE)
    runner = runner_for(stack_env, dataset, topics)
    runs: list[PartSpec | None] = []

    class Counting(DuckDbEngine):
        def export(self, *args: Any, **kwargs: Any) -> int:
            runs.append(kwargs.get("part"))
            return super().export(*args, **kwargs)

    runner = dataclasses.replace(runner, engine=Counting())
    runner.handle(query_uuid)
    runner.handle(query_uuid)  # a duplicate request after the hand-over
    messages = topics["parts"].pull()
    assert len(messages) == 10
    deliver(runner, messages, times=3)
    assert len(runs) == 10
    assert len({(p.start, p.stop) for p in runs if p is not None}) == 10
    blob = bucket(stack_env).get_blob(object_name(query_uuid, "csv"))
    assert blob is not None
    generation = blob.generation
    deliver(runner, messages)
    again = bucket(stack_env).get_blob(object_name(query_uuid, "csv"))
    assert again is not None
    assert again.generation == generation
    assert len(topics["ready"].pull()) == 1
    assert record_of(stack_env, query_uuid).number_rows == ROWS


def test_a_part_killed_mid_upload_leaves_nothing_visible_and_runs_again(
    stack_env: dict[str, str], dataset: Path, topics: dict[str, Topic]
) -> None:
    """Part 3 dies after sending bytes: no object of it appears; its redelivery completes it."""
    query_uuid = new_export(stack_env, FULL_TABLE)
    runner = runner_for(stack_env, dataset, topics)
    killed: list[int] = []

    class KillsOnce(DuckDbEngine):
        def export(self, path: str, query: Any, fmt: str, out: Any, **kwargs: Any) -> int:
            part = kwargs.get("part")
            if part is not None and part.start == 4 * GROUP_ROWS * 3 and not killed:
                out.write(b"\x1f\x8b" + b"x" * 100_000)  # some bytes go out, then it dies
                killed.append(1)
                raise TransientError("instance lost")
            return super().export(path, query, fmt, out, **kwargs)

    runner = dataclasses.replace(runner, engine=KillsOnce())
    runner.handle(query_uuid)
    messages = topics["parts"].pull()
    by_part = {json.loads(m.message.data)["part"]: m for m in messages}
    with pytest.raises(TransientError):
        deliver(runner, [by_part[3]])
    assert killed == [1]
    assert temporaries(stack_env, query_uuid) == []
    status = record_of(stack_env, query_uuid).status_document(
        FirestoreStore.for_project(stack_env["GOOGLE_CLOUD_PROJECT"]).list_parts(query_uuid)
    )
    assert status["lastError"]["message"].startswith("part 4: attempt 1 of")
    deliver(runner, messages)  # part 3's redelivery among them
    record = record_of(stack_env, query_uuid)
    assert record.status is ExportStatus.SUCCEEDED, record.error
    text = gzip.decompress(download(stack_env, object_name(query_uuid, "csv")))
    assert len(records(text, "csv")) == ROWS + 1
    assert temporaries(stack_env, query_uuid) == []


def test_a_part_that_fails_for_good_fails_the_export_and_leaves_no_temporary(
    stack_env: dict[str, str], dataset: Path, topics: dict[str, Topic]
) -> None:
    """Part 5 is refused: the export fails with its reason, no file, nothing under tmp/."""
    query_uuid = new_export(stack_env, FULL_TABLE)
    runner = runner_for(stack_env, dataset, topics)

    class RefusesPart5(DuckDbEngine):
        def export(self, path: str, query: Any, fmt: str, out: Any, **kwargs: Any) -> int:
            part = kwargs.get("part")
            if part is not None and part.start == 4 * GROUP_ROWS * 5:
                raise QueryRejected("the query engine refused the query: a value is not valid")
            return super().export(path, query, fmt, out, **kwargs)

    runner = dataclasses.replace(runner, engine=RefusesPart5())
    run_as_parts(stack_env, runner, topics, query_uuid)
    record = record_of(stack_env, query_uuid)
    assert record.status is ExportStatus.FAILED
    assert record.error == {
        "code": "query_rejected",
        "message": "part 6 of 10: the query engine refused the query: a value is not valid",
    }
    assert temporaries(stack_env, query_uuid) == []
    assert bucket(stack_env).get_blob(object_name(query_uuid, "csv")) is None
    assert topics["ready"].pull() == []


def test_a_filtered_jsonl_export_splits_where_its_rows_are_and_reads_whole(
    stack_env: dict[str, str], dataset: Path, topics: dict[str, Topic], tmp_path: Path
) -> None:
    """A filter that most row groups do not match: the plan cuts by matching rows, the parts
    hold the single export's lines, and pandas and DuckDB read the JSONL file whole."""
    table = pd.read_parquet(dataset, columns=["msa"])
    metros = list(table["msa"].value_counts().index[:2])
    wanted = int(table["msa"].isin(metros).sum())
    query = {
        "scopes": [{"column": "property_id"}, {"column": "msa"}, {"column": "listed_on"}],
        "filters": [{"column": "msa", "filter": {"in": metros}}],
    }
    parted = new_export(stack_env, query, "jsonl")
    single = new_export(stack_env, query, "jsonl")
    runner = runner_for(stack_env, dataset, topics, part_rows=max(1, wanted // 3))
    parts = run_as_parts(stack_env, runner, topics, parted)
    assert parts >= 2
    dataclasses.replace(runner, parts_queue=None).handle(single)
    record = record_of(stack_env, parted)
    assert record.status is ExportStatus.SUCCEEDED, record.error
    assert record.number_rows == wanted
    data = download(stack_env, object_name(parted, "jsonl"))
    lines = records(gzip.decompress(data), "jsonl")
    single_lines = records(
        gzip.decompress(download(stack_env, object_name(single, "jsonl"))), "jsonl"
    )
    assert Counter(lines) == Counter(single_lines)
    path = tmp_path / "export.jsonl.gz"
    path.write_bytes(data)
    frame = pd.read_json(path, lines=True, compression="gzip")
    assert len(frame) == wanted
    assert set(frame["msa"]) == set(metros)
    assert duckdb.read_json(str(path)).aggregate("count(*)").fetchall() == [(wanted,)]
    assert temporaries(stack_env, parted) == []


PART_WORKER = r"""
import json, sys
from dataset_export.adapters.datasets import FixedDataset
from dataset_export.config import Settings
from dataset_export.wiring import build_export_runner
from tests.integration.midupload import dying_export

spec = json.loads(sys.argv[1])
runner = build_export_runner(Settings.from_env())
runner.datasets = FixedDataset(spec["dataset"])
runner.engine.export = dying_export(runner.engine.export, spec["kill_after_bytes"])
runner.parts.handle(spec["queryUUID"], spec["part"])
"""


def test_a_part_killed_by_sigkill_mid_upload_shows_nothing_and_is_taken_over(
    stack_env: dict[str, str], topics: dict[str, Topic], tmp_path: Path
) -> None:
    """A worker process killed while its part's bytes are on the wire: no object of it appears,
    the part stays leased to the dead worker, and after the lease a redelivery completes the
    export with every row."""
    path = tmp_path / "big.parquet"
    generate_dataset(200_000, str(path), row_group_rows=50_000)
    query_uuid = new_export(stack_env, FULL_TABLE)
    runner = runner_for(stack_env, path, topics, part_rows=100_000)
    runner.handle(query_uuid)
    messages = topics["parts"].pull()
    assert len(messages) == 2
    worker = subprocess.run(
        [
            sys.executable,
            "-c",
            PART_WORKER,
            json.dumps(
                {"queryUUID": query_uuid, "part": 0, "dataset": str(path),
                 "kill_after_bytes": 700 * 1024}
            ),
        ],
        env={**os.environ, **stack_env, "EXPORT_ENV": "local"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert worker.returncode == -signal.SIGKILL, worker.stderr[-2000:]
    assert "killed after sending" in worker.stderr
    assert temporaries(stack_env, query_uuid) == []
    store = FirestoreStore.for_project(stack_env["GOOGLE_CLOUD_PROJECT"])
    part = store.list_parts(query_uuid)[0]
    assert part.status is ExportStatus.RUNNING
    assert part.lease_owner is not None
    # Inside the dead worker's lease the part is busy; after it, a redelivery takes over.
    # The emulator hands messages out in no set order: pick the killed part's own.
    killed = [m for m in messages if json.loads(m.message.data).get("part") == 0]
    assert len(killed) == 1
    with pytest.raises(TransientError, match="is being run"):
        deliver(runner, killed)
    later = dataclasses.replace(
        runner, clock=lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    )
    deliver(later, messages)
    record = record_of(stack_env, query_uuid)
    assert record.status is ExportStatus.SUCCEEDED, record.error
    assert record.number_rows == 200_000
    assert store.list_parts(query_uuid)[0].attempts == 2
    text = gzip.decompress(download(stack_env, object_name(query_uuid, "csv")))
    assert len(records(text, "csv")) == 200_001
    assert temporaries(stack_env, query_uuid) == []
