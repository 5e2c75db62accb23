"""Exports planned as parts (ExportRunner and PartRunner) over the in-memory fakes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from dataset_export.adapters.datasets import FixedDataset
from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.dataset import SubmittedDataset
from dataset_export.core.errors import LeaseLost, QueryRejected, TransientError
from dataset_export.core.parts import composed_object_name, part_object_name, tmp_prefix
from dataset_export.core.records import ExportRecord, ExportStatus
from dataset_export.events import PART_KIND, PubSubMessage
from dataset_export.service.ports import ObjectInfo
from dataset_export.service.process import MAX_RUN_ATTEMPTS, ExportRunner, object_name
from tests.fakes import (
    FakeEngine,
    FakePartsQueue,
    FakeQueue,
    InMemoryExportStorage,
    InMemoryStore,
    VersionedDatasets,
    gcs_crc32c,
)

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
QUERY_UUID = "7b4f2c1e-0000-4000-8000-0000000000aa"
FINAL = object_name(QUERY_UUID, "csv")


def queued(scopes: list[dict[str, Any]] | None = None, fmt: str = "csv") -> ExportRecord:
    dataset = {"scopes": scopes or [{"column": "city"}]}
    return ExportRecord(
        query_uuid=QUERY_UUID,
        account_id="acct",
        key_hash="h",
        key_id="k",
        name="test",
        format=fmt,
        webhook_url="https://hooks.example/x",
        dataset=SubmittedDataset(json.dumps(dataset)),
        status=ExportStatus.QUEUED,
        requested_on=NOW,
    )


@dataclasses.dataclass
class Rig:
    """A store, a bucket, the queues and an engine shared by any number of workers."""

    store: InMemoryStore
    storage: InMemoryExportStorage
    ready: FakeQueue
    parts: FakePartsQueue
    engine: FakeEngine
    clock: list[dt.datetime]

    def runner(self, worker: str = "w1", **options: Any) -> ExportRunner:
        settings: dict[str, Any] = {"part_rows": 2, "max_parts": 100} | options
        datasets = settings.pop("datasets", FixedDataset("/data/listings.parquet"))
        return ExportRunner(
            store=self.store,
            storage=self.storage,
            ready=self.ready,
            engine=self.engine,
            datasets=datasets,
            catalog=RENTAL_LISTINGS,
            parts_queue=self.parts,
            clock=lambda: self.clock[0],
            worker=worker,
            **settings,
        )

    def run_parts(self, runner: ExportRunner | None = None) -> None:
        """Deliver every published part message once, in order."""
        runner = runner or self.runner("w-parts")
        for query_uuid, index in list(self.parts.published):
            runner.handle_message(part_message(query_uuid, index), dead_letter=False)

    @property
    def record(self) -> ExportRecord:
        return self.store.exports[QUERY_UUID]

    def temporaries(self) -> list[str]:
        return [o.name for o in self.storage.list(tmp_prefix(QUERY_UUID))]


def rig(rows: int = 10, record: ExportRecord | None = None, **engine: Any) -> Rig:
    store = InMemoryStore()
    store.create_export(record or queued())
    return Rig(
        store,
        InMemoryExportStorage(),
        FakeQueue(),
        FakePartsQueue(),
        FakeEngine(rows, **engine),
        [NOW],
    )


def part_message(query_uuid: str, index: int) -> PubSubMessage:
    return PubSubMessage(
        message_id=f"m{index}",
        query_uuid=query_uuid,
        attributes={"kind": PART_KIND, "part": str(index)},
        delivery_attempt=1,
        part=index,
    )


def single_file(rows: int) -> bytes:
    return b"city\r\n" + b"".join(f"city-{i}\r\n".encode() for i in range(rows))


def test_a_request_that_counts_more_than_one_part_is_planned_and_handed_to_the_parts() -> None:
    """The plan is stored, one message per part published, the lease freed, nothing announced."""
    r = rig(10)
    r.runner().handle(QUERY_UUID)
    record = r.record
    assert record.status is ExportStatus.RUNNING
    assert record.parts_total == 5
    assert record.parts_published_on == NOW
    assert (record.lease_owner, record.lease_expires_on) == (None, None)
    assert r.parts.published == [(QUERY_UUID, i) for i in range(5)]
    parts = r.store.list_parts(QUERY_UUID)
    assert [(p.start, p.stop, p.expected_rows) for p in parts] == [
        (0, 2, 2), (2, 4, 2), (4, 6, 2), (6, 8, 2), (8, 10, 2)
    ]  # fmt: skip
    assert r.ready.published == []
    assert r.storage.objects == {}
    assert r.engine.calls == 0


def test_the_parts_compose_into_the_bytes_of_the_single_part_export() -> None:
    """Header member, then the parts in order: the file one instance would have written."""
    r = rig(10)
    r.runner().handle(QUERY_UUID)
    r.run_parts()
    record = r.record
    assert record.status is ExportStatus.SUCCEEDED
    assert r.storage.objects[FINAL] == single_file(10)
    assert record.number_rows == 10
    assert record.size_bytes == len(single_file(10))
    assert record.crc32c == gcs_crc32c(single_file(10))
    assert record.md5 is None
    assert record.lease_owner is None
    assert r.ready.published == [QUERY_UUID]
    assert r.temporaries() == []
    assert record.status_document()["parts"] == {"total": 5, "done": 5}


def test_jsonl_parts_compose_without_a_header() -> None:
    """JSONL has no header member: the file is the parts alone."""
    r = rig(6, record=queued(fmt="jsonl"))
    r.runner().handle(QUERY_UUID)
    r.run_parts()
    name = object_name(QUERY_UUID, "jsonl")
    assert r.storage.objects[name] == single_file(6).removeprefix(b"city\r\n")


def test_a_query_that_cannot_be_split_runs_as_one_part() -> None:
    """An aggregate is never planned as parts, whatever its size."""
    record = queued([{"column": "city"}, {"column": "asking_rent", "aggregate": "Avg"}])
    r = rig(10, record=record)
    r.runner().handle(QUERY_UUID)
    assert r.parts.published == []
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.record.parts_total is None
    assert r.engine.ranges == [None]


def test_an_export_that_fits_one_part_runs_at_once_without_a_plan() -> None:
    """Rows within one part's target: no plan, no part messages, the single path."""
    r = rig(2)
    r.runner().handle(QUERY_UUID)
    assert r.parts.published == []
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.storage.objects[FINAL] == single_file(2)


def test_duplicate_part_messages_write_no_second_part_and_compose_once() -> None:
    """Every part message delivered twice: each part runs once and the file is composed once."""
    r = rig(8)
    r.runner().handle(QUERY_UUID)
    r.run_parts()
    calls, composed = r.engine.calls, len(r.storage.composed)
    r.run_parts(r.runner("w-other"))
    assert (r.engine.calls, len(r.storage.composed)) == (calls, composed)
    assert calls == 4
    assert r.ready.published == [QUERY_UUID]


def test_a_duplicate_request_after_the_hand_over_does_nothing() -> None:
    """Once every part message is out, a redelivered request neither plans nor publishes."""
    r = rig(8)
    r.runner().handle(QUERY_UUID)
    r.runner("w2").handle(QUERY_UUID)
    assert len(r.parts.published) == 4
    assert r.engine.calls == 0


def test_a_plan_whose_messages_did_not_all_go_out_is_published_again_unchanged() -> None:
    """The queue fails after the plan is stored: the retry republishes the same parts."""
    r = rig(8)
    r.parts.unavailable = True
    with pytest.raises(TransientError):
        r.runner().handle(QUERY_UUID)
    assert r.record.parts_total == 4
    assert r.record.parts_published_on is None
    assert r.record.lease_owner is None  # freed for the retry
    r.parts.unavailable = False
    plan = r.store.list_parts(QUERY_UUID)
    r.runner("w2").handle(QUERY_UUID)
    assert r.store.list_parts(QUERY_UUID) == plan
    assert r.parts.published == [(QUERY_UUID, i) for i in range(4)]
    r.run_parts()
    assert r.storage.objects[FINAL] == single_file(8)


def test_a_part_killed_mid_upload_leaves_nothing_and_runs_again() -> None:
    """A part whose engine dies mid-way aborts its upload; its redelivery writes the part once."""
    r = rig(6)
    r.runner().handle(QUERY_UUID)
    r.engine.fail_with = TransientError("instance lost")
    with pytest.raises(TransientError):
        r.runner("w-a").handle_message(part_message(QUERY_UUID, 1), dead_letter=False)
    assert r.temporaries() == []
    assert all(u.aborted for u in r.storage.uploads)
    part = r.store.list_parts(QUERY_UUID)[1]
    assert part.status is ExportStatus.RUNNING
    assert part.lease_owner is None
    doc = r.record.status_document(r.store.list_parts(QUERY_UUID))
    assert doc["lastError"]["message"].startswith("part 2: attempt 1 of")
    r.engine.fail_with = None
    r.run_parts()
    assert r.storage.objects[FINAL] == single_file(6)
    assert r.store.list_parts(QUERY_UUID)[1].attempts == 2


def test_an_attempt_that_died_after_its_upload_leaves_an_object_no_one_composes() -> None:
    """Attempt 1 committed its object and died before its record: attempt 2 writes its own
    object, the compose takes that one, and the clean-up removes attempt 1's."""
    r = rig(6)
    r.runner().handle(QUERY_UUID)
    read = r.store.read_part(QUERY_UUID, 0)
    assert read is not None
    dead = dataclasses.replace(
        read.part, status=ExportStatus.RUNNING, lease_owner="w-dead", lease_expires_on=NOW,
        attempts=1,
    )  # fmt: skip
    r.store.write_part_claim(dead, if_version=read.version)
    r.storage.put(part_object_name(QUERY_UUID, 0, 1), b"attempt 1's bytes\r\n")
    r.run_parts()
    assert r.storage.objects[FINAL] == single_file(6)
    assert r.store.list_parts(QUERY_UUID)[0].object_name == part_object_name(QUERY_UUID, 0, 2)
    assert r.temporaries() == []


def test_a_part_that_fails_for_good_fails_the_export_and_removes_every_temporary() -> None:
    """A permanent failure ends the export failed with the part's reason; no object is left."""
    r = rig(6)
    r.runner().handle(QUERY_UUID)
    runner = r.runner("w-a")
    runner.handle_message(part_message(QUERY_UUID, 0), dead_letter=False)
    assert r.temporaries() == [part_object_name(QUERY_UUID, 0, 1)]
    r.engine.fail_with = QueryRejected("the query engine refused the query: bad value")
    runner.handle_message(part_message(QUERY_UUID, 1), dead_letter=False)
    record = r.record
    assert record.status is ExportStatus.FAILED
    assert record.error == {
        "code": "query_rejected",
        "message": "part 2 of 3: the query engine refused the query: bad value",
    }
    assert r.temporaries() == []
    r.engine.fail_with = None
    calls = r.engine.calls
    runner.handle_message(part_message(QUERY_UUID, 2), dead_letter=False)
    assert r.engine.calls == calls
    assert FINAL not in r.storage.objects
    assert r.ready.published == []


def test_a_part_that_finishes_after_the_export_failed_deletes_its_object() -> None:
    """The failure's clean-up ran before this part's object appeared: the part removes it."""
    r = rig(4)
    r.runner().handle(QUERY_UUID)
    runner = r.runner("w-a")

    class FailsMeanwhile(FakeEngine):
        def export(self, *args: Any, **kwargs: Any) -> int:
            rows = super().export(*args, **kwargs)
            r.store.fail_export(QUERY_UUID, "dead_lettered", "another part gave up", NOW)
            return rows

    runner.engine = FailsMeanwhile(4)
    runner.handle_message(part_message(QUERY_UUID, 0), dead_letter=False)
    assert r.record.status is ExportStatus.FAILED
    assert r.temporaries() == []


def test_more_than_32_parts_compose_in_two_rounds() -> None:
    """40 parts and a header: intermediates of at most 32 sources, then the final object."""
    r = rig(40)
    r.runner(part_rows=1).handle(QUERY_UUID)
    assert r.record.parts_total == 40
    r.run_parts()
    assert r.storage.objects[FINAL] == single_file(40)
    assert all(len(sources) <= 32 for sources, _ in r.storage.composed)
    destinations = [destination for _, destination in r.storage.composed]
    assert len(destinations) >= 2
    assert destinations[-1] == FINAL
    assert all(d.startswith(tmp_prefix(QUERY_UUID)) for d in destinations[:-1])
    assert r.temporaries() == []


def test_a_composite_that_does_not_match_its_parts_is_deleted_and_composed_again() -> None:
    """The crc32c combined from the parts catches a corrupt composite before it gets the
    export's name, without reading it back."""
    r = rig(4)
    r.runner().handle(QUERY_UUID)
    corrupt = [True]
    real_compose = r.storage.compose

    def compose(sources: Any, destination: str, *, metadata: dict[str, str]) -> ObjectInfo:
        info = real_compose(sources, destination, metadata=metadata)
        if corrupt[0] and destination == composed_object_name(QUERY_UUID):
            corrupt[0] = False
            r.storage.objects[destination] = r.storage.objects[destination][:-1] + b"?"
            return r.storage.info(destination)
        return info

    r.storage.compose = compose  # type: ignore[method-assign]
    with pytest.raises(TransientError, match="does not match its parts"):
        r.run_parts()
    assert FINAL not in r.storage.objects
    assert r.record.status is ExportStatus.RUNNING
    r.run_parts()  # the last part's message comes again
    assert r.storage.objects[FINAL] == single_file(4)
    assert r.record.status is ExportStatus.SUCCEEDED


def test_only_one_worker_composes_while_its_lease_lives() -> None:
    """A second worker that finds every part done while another composes leaves it alone."""
    r = rig(4)
    r.runner().handle(QUERY_UUID)
    first = r.runner("w-a")
    first.handle_message(part_message(QUERY_UUID, 0), dead_letter=False)
    read = r.store.read_for_claim(QUERY_UUID)
    assert read is not None
    # w-b finishes the last part while w-a holds the compose lease: its message comes again.
    r.store.claim_compose(QUERY_UUID, "w-a", NOW + dt.timedelta(minutes=2), if_version=read.version)
    with pytest.raises(TransientError, match="being composed by another worker"):
        r.runner("w-b").handle_message(part_message(QUERY_UUID, 1), dead_letter=False)
    assert FINAL not in r.storage.objects
    assert r.record.lease_owner == "w-a"
    # w-a's lease runs out (it died): the redelivered last message composes.
    r.clock[0] = NOW + dt.timedelta(minutes=3)
    r.runner("w-c").handle_message(part_message(QUERY_UUID, 1), dead_letter=False)
    assert r.storage.objects[FINAL] == single_file(4)


def test_a_part_out_of_attempts_fails_the_export() -> None:
    """After the last attempt a part's next delivery fails the export, quoting its last error."""
    r = rig(4)
    r.runner().handle(QUERY_UUID)
    r.engine.fail_with = TransientError("disk full")
    for _ in range(MAX_RUN_ATTEMPTS):
        with pytest.raises(TransientError):
            r.runner().handle_message(part_message(QUERY_UUID, 0), dead_letter=False)
    r.runner().handle_message(part_message(QUERY_UUID, 0), dead_letter=False)
    record = r.record
    assert record.status is ExportStatus.FAILED
    assert record.error is not None
    assert record.error["code"] == "too_many_attempts"
    assert "part 1 of 2" in record.error["message"]
    assert "disk full" in record.error["message"]


def test_a_part_that_finds_other_rows_than_planned_fails_the_export() -> None:
    """The dataset changed between plan and part: the export fails instead of mixing files."""
    r = rig(4)
    r.runner().handle(QUERY_UUID)
    r.engine.rows = 3  # the file lost a row
    r.run_parts()
    record = r.record
    assert record.status is ExportStatus.FAILED
    assert record.error is not None
    assert record.error["code"] == "dataset_changed"
    assert r.temporaries() == []


def test_a_dead_lettered_part_fails_the_export_naming_the_part() -> None:
    """A part message Pub/Sub gave up on ends the export failed, and its temporaries go."""
    r = rig(4)
    r.runner().handle(QUERY_UUID)
    runner = r.runner()
    runner.handle_message(part_message(QUERY_UUID, 0), dead_letter=False)
    message = dataclasses.replace(
        part_message(QUERY_UUID, 1),
        attributes={"kind": PART_KIND, "CloudPubSubDeadLetterSourceDeliveryCount": "10"},
    )
    runner.handle_message(message, dead_letter=True)
    record = r.record
    assert record.status is ExportStatus.FAILED
    assert record.error is not None
    assert record.error["message"].startswith("part 2 of the export could not be processed")
    assert r.temporaries() == []


def test_a_dead_lettered_message_of_a_done_part_composes_instead_of_failing() -> None:
    """A done part whose message ran out of attempts while another worker held the compose
    does not fail the export: it asks to come back while the compose is leased, and composes
    once the composer is gone."""
    r = rig(4)
    r.runner().handle(QUERY_UUID)
    runner = r.runner()
    for index in range(1, r.record.parts_total or 0):
        runner.handle_message(part_message(QUERY_UUID, index), dead_letter=False)
    read = r.store.read_for_claim(QUERY_UUID)
    assert read is not None
    lease = NOW + dt.timedelta(minutes=5)
    r.store.claim_compose(QUERY_UUID, "w-composer", lease, if_version=read.version)
    with pytest.raises(TransientError, match="being composed"):  # the last part is done
        runner.handle_message(part_message(QUERY_UUID, 0), dead_letter=False)
    message = dataclasses.replace(
        part_message(QUERY_UUID, 1),
        attributes={"kind": PART_KIND, "CloudPubSubDeadLetterSourceDeliveryCount": "10"},
    )
    with pytest.raises(TransientError, match="being composed"):
        runner.handle_message(message, dead_letter=True)
    assert r.record.status is ExportStatus.RUNNING
    r.clock[0] = NOW + dt.timedelta(minutes=10)  # the composer died; its lease ran out
    runner.handle_message(message, dead_letter=True)
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.temporaries() == []
    assert r.ready.published == [QUERY_UUID]


def test_the_status_shows_parts_done_and_rows_across_parts_while_they_run() -> None:
    """Live progress: parts done of the total, rows written summed over the parts."""
    r = rig(6)
    r.runner().handle(QUERY_UUID)
    runner = r.runner()
    runner.handle_message(part_message(QUERY_UUID, 0), dead_letter=False)
    runner.handle_message(part_message(QUERY_UUID, 2), dead_letter=False)
    doc = r.record.status_document(r.store.list_parts(QUERY_UUID))
    assert doc["status"] == "running"
    assert doc["parts"] == {"total": 3, "done": 2}
    assert doc["progress"] == {"rowsWritten": 4}


def test_a_part_object_lost_before_the_compose_is_run_again() -> None:
    """A recorded part object that is gone at compose time: that part is queued and published
    again, and its completion composes the whole file."""
    r = rig(6)
    r.runner().handle(QUERY_UUID)
    runner = r.runner("w-a")
    runner.handle_message(part_message(QUERY_UUID, 0), dead_letter=False)
    runner.handle_message(part_message(QUERY_UUID, 1), dead_letter=False)
    lost = r.store.list_parts(QUERY_UUID)[1].object_name
    assert lost is not None
    del r.storage.objects[lost]
    runner.handle_message(part_message(QUERY_UUID, 2), dead_letter=False)
    assert r.record.status is ExportStatus.RUNNING
    assert r.store.list_parts(QUERY_UUID)[1].status is ExportStatus.QUEUED
    assert r.parts.published[-1] == (QUERY_UUID, 1)
    assert r.record.lease_owner is None
    runner.handle_message(part_message(QUERY_UUID, 1), dead_letter=False)
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.storage.objects[FINAL] == single_file(6)
    assert r.temporaries() == []


def test_an_attempt_that_lost_its_lease_removes_its_own_object() -> None:
    """A worker whose lease was taken over finishes its upload: its object is not the part's,
    so it deletes it and stops, and the owner's attempt is what gets composed."""
    r = rig(4)
    r.runner().handle(QUERY_UUID)
    engine = r.engine

    class TakenOverMeanwhile(FakeEngine):
        def export(self, *args: Any, **kwargs: Any) -> int:
            rows = engine.export(*args, **kwargs)
            read = r.store.read_part(QUERY_UUID, 0)
            assert read is not None
            r.store.write_part_claim(
                dataclasses.replace(read.part, lease_owner="w-new"), if_version=read.version
            )
            return rows

    slow = r.runner("w-slow")
    slow.engine = TakenOverMeanwhile()
    with pytest.raises(LeaseLost):
        slow.handle_message(part_message(QUERY_UUID, 0), dead_letter=False)
    assert r.temporaries() == []


def test_a_final_object_an_earlier_composer_made_is_kept_when_it_is_the_same() -> None:
    """A composer died after naming the file but before recording it: the next one keeps it."""
    r = rig(4)
    r.runner().handle(QUERY_UUID)
    real_complete = r.store.complete_export
    died = [False]

    def dies_once(query_uuid: str, worker: str, result: Any) -> None:
        if not died[0]:
            died[0] = True
            raise TransientError("instance lost before the record")
        real_complete(query_uuid, worker, result)

    r.store.complete_export = dies_once  # type: ignore[method-assign]
    with pytest.raises(TransientError):
        r.run_parts()
    generation = r.storage.generations[FINAL]
    r.run_parts(r.runner("w-next"))
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.storage.generations[FINAL] == generation
    assert r.storage.objects[FINAL] == single_file(4)
    assert r.ready.published == [QUERY_UUID]


def test_the_engine_drops_its_temporary_state_once_the_export_ends_either_way() -> None:
    """finish() runs after the compose, after a single-part export and after a failure; the
    record and the status say which engine ran the export."""
    composed = rig(4)
    composed.runner().handle(QUERY_UUID)
    composed.run_parts()
    assert composed.engine.finished == [QUERY_UUID]
    assert composed.record.status_document()["engine"] == "fake"
    single = rig(2)
    single.runner().handle(QUERY_UUID)
    assert single.engine.finished == [QUERY_UUID]
    assert single.record.engine == "fake"
    failed = rig(4)
    failed.runner().handle(QUERY_UUID)
    failed.engine.fail_with = QueryRejected("the query engine refused the query: bad value")
    failed.run_parts()
    assert failed.record.status is ExportStatus.FAILED
    assert QUERY_UUID in failed.engine.finished


def test_every_part_reads_the_dataset_version_the_plan_counted() -> None:
    """The plan records the dataset's version, and each part opens that version even when the
    dataset was replaced after the plan, so one file never mixes two versions."""
    r = rig()
    datasets = VersionedDatasets(current="1")
    r.runner(datasets=datasets).handle(QUERY_UUID)
    assert r.record.dataset_version == "1"
    datasets.current = "2"
    r.run_parts(r.runner("w-parts", datasets=datasets))
    assert r.record.status is ExportStatus.SUCCEEDED
    assert datasets.opened == [None] + ["1"] * r.record.parts_total


def test_a_part_whose_dataset_version_is_gone_fails_the_export_as_changed() -> None:
    """A dataset replaced (its planned version deleted) while the parts run fails the export at
    once with ``dataset_changed``, naming the part, and leaves no temporary object."""
    r = rig()
    datasets = VersionedDatasets(current="1")
    r.runner(datasets=datasets).handle(QUERY_UUID)
    datasets.current, datasets.gone = "2", {"1"}
    r.run_parts(r.runner("w-parts", datasets=datasets))
    assert r.record.status is ExportStatus.FAILED
    assert r.record.error is not None
    assert r.record.error["code"] == "dataset_changed"
    assert r.record.error["message"].startswith("part 1 of 5: ")
    assert r.temporaries() == []
    assert r.ready.published == []
