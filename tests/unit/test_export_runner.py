"""The process use case (ExportRunner) over the in-memory fakes: every branch of a delivery."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from dataset_export.adapters.datasets import FixedDataset
from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.dataset import SubmittedDataset
from dataset_export.core.errors import (
    LeaseLost,
    PermanentError,
    PreconditionFailed,
    QueryRejected,
    TransientError,
)
from dataset_export.core.records import ExportRecord, ExportStatus
from dataset_export.events import READY_KIND, REQUEST_KIND, PubSubMessage, decode_message
from dataset_export.service.process import MAX_RUN_ATTEMPTS, ExportRunner, object_name
from tests.fakes import (
    FailingThenWorking,
    FakeEngine,
    FakeQueue,
    InMemoryExportStorage,
    InMemoryStore,
)

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
QUERY_UUID = "7b4f2c1e-0000-4000-8000-000000000001"
OBJECT = object_name(QUERY_UUID, "csv")


def queued(**changes: Any) -> ExportRecord:
    record = ExportRecord(
        query_uuid=QUERY_UUID,
        account_id="acct",
        key_hash="h",
        key_id="k",
        name="test",
        format="csv",
        webhook_url="https://hooks.example/x",
        dataset=SubmittedDataset(json.dumps({"scopes": [{"column": "city"}]})),
        status=ExportStatus.QUEUED,
        requested_on=NOW,
    )
    return dataclasses.replace(record, **changes)


def make_runner(
    record: ExportRecord | None = None, engine: FakeEngine | None = None, worker: str = "w1"
) -> tuple[ExportRunner, InMemoryStore, InMemoryExportStorage, FakeQueue, FakeEngine]:
    store, storage, ready = InMemoryStore(), InMemoryExportStorage(), FakeQueue()
    engine = engine or FakeEngine()
    if record is not None:
        store.create_export(record)
    runner = ExportRunner(
        store=store,
        storage=storage,
        ready=ready,
        engine=engine,
        datasets=FixedDataset("/data/listings.parquet"),
        catalog=RENTAL_LISTINGS,
        clock=lambda: NOW,
        worker=worker,
    )
    return runner, store, storage, ready, engine


def test_a_queued_export_runs_once_and_announces_once() -> None:
    """The file is written under the queryUUID's name, the record completed, notify told once."""
    runner, store, storage, ready, _ = make_runner(queued())
    runner.handle(QUERY_UUID)
    record = store.exports[QUERY_UUID]
    assert record.status is ExportStatus.SUCCEEDED
    assert record.number_rows == 3
    assert storage.objects[OBJECT] == b"city\r\ncity-0\r\ncity-1\r\ncity-2\r\n"
    assert record.size_bytes == len(storage.objects[OBJECT])
    assert record.crc32c == storage.info(OBJECT).crc32c
    assert record.run_attempts == 1
    assert record.lease_owner is None
    assert ready.published == [QUERY_UUID]
    assert record.ready_published_on == NOW


def test_a_single_part_export_is_written_under_tmp_and_named_by_a_create_only_compose() -> None:
    """The attempt writes its own temporary object, which gets the export's name by a compose
    and is deleted: nothing is left under ``tmp/`` and no MD5 is claimed for the composite."""
    runner, store, storage, _, _ = make_runner(queued())
    runner.handle(QUERY_UUID)
    assert storage.composed == [([f"tmp/{QUERY_UUID}/single-a1"], OBJECT)]
    assert storage.list("tmp/") == []
    assert store.exports[QUERY_UUID].md5 is None


def test_a_repeated_delivery_after_success_does_nothing() -> None:
    """A duplicate message neither runs the engine nor publishes a second ready message."""
    runner, _, _, ready, engine = make_runner(queued())
    runner.handle(QUERY_UUID)
    runner.handle(QUERY_UUID)
    assert engine.calls == 1
    assert ready.published == [QUERY_UUID]


def test_a_success_whose_ready_message_was_lost_is_announced_again() -> None:
    """If the worker died between completing and publishing, the redelivery publishes."""
    runner, store, _, ready, engine = make_runner(queued(status=ExportStatus.SUCCEEDED))
    runner.handle(QUERY_UUID)
    assert engine.calls == 0
    assert ready.published == [QUERY_UUID]
    assert store.exports[QUERY_UUID].ready_published_on == NOW


def test_an_unknown_export_is_dropped() -> None:
    """A message for a record that does not exist is acknowledged without any work."""
    runner, _, storage, ready, engine = make_runner(None)
    runner.handle(QUERY_UUID)
    assert engine.calls == 0
    assert storage.uploads == []
    assert ready.published == []


def test_a_live_lease_of_another_worker_asks_for_redelivery() -> None:
    """While another worker holds the lease, the duplicate raises TransientError (503)."""
    record = queued(
        status=ExportStatus.RUNNING, lease_owner="w0", lease_expires_on=NOW + dt.timedelta(1)
    )
    runner, store, _, _, engine = make_runner(record)
    with pytest.raises(TransientError, match="being run by another worker"):
        runner.handle(QUERY_UUID)
    assert engine.calls == 0
    assert store.exports[QUERY_UUID].lease_owner == "w0"


def test_an_expired_lease_is_taken_over() -> None:
    """A worker that died mid-export is replaced once its lease ran out."""
    record = queued(
        status=ExportStatus.RUNNING,
        lease_owner="w0",
        lease_expires_on=NOW - dt.timedelta(seconds=1),
        run_attempts=1,
    )
    runner, store, _, _, _ = make_runner(record)
    runner.handle(QUERY_UUID)
    assert store.exports[QUERY_UUID].status is ExportStatus.SUCCEEDED
    assert store.exports[QUERY_UUID].run_attempts == 2


def test_too_many_attempts_fail_the_export() -> None:
    """After MAX_RUN_ATTEMPTS runs that never finished, the export fails instead of looping."""
    record = queued(
        status=ExportStatus.RUNNING,
        lease_expires_on=NOW - dt.timedelta(seconds=1),
        run_attempts=MAX_RUN_ATTEMPTS,
    )
    runner, store, _, ready, engine = make_runner(record)
    runner.handle(QUERY_UUID)
    assert engine.calls == 0
    assert store.exports[QUERY_UUID].status is ExportStatus.FAILED
    assert store.exports[QUERY_UUID].error == {
        "code": "too_many_attempts",
        "message": f"the export did not finish in {MAX_RUN_ATTEMPTS} attempts; "
        "please submit it again",
    }
    assert ready.published == []


def test_an_object_left_by_an_earlier_run_is_kept_and_recorded() -> None:
    """When a previous run uploaded but died before recording, its object is adopted."""
    runner, store, storage, ready, _ = make_runner(queued())
    storage.objects[OBJECT] = b"city\r\ncity-0\r\ncity-1\r\ncity-2\r\n"
    runner.handle(QUERY_UUID)
    record = store.exports[QUERY_UUID]
    assert record.status is ExportStatus.SUCCEEDED
    assert record.size_bytes == len(storage.objects[OBJECT])
    assert record.crc32c == storage.info(OBJECT).crc32c
    assert ready.published == [QUERY_UUID]


def test_an_object_of_other_content_under_the_exports_name_fails_the_export() -> None:
    """An earlier attempt's file from other data is neither replaced nor adopted: the export
    fails for good, saying which object and what to do, and its temporary object is deleted."""
    runner, store, storage, ready, _ = make_runner(queued())
    storage.objects[OBJECT] = b"city\r\nsomewhere-else\r\n"
    runner.handle(QUERY_UUID)
    record = store.exports[QUERY_UUID]
    assert record.status is ExportStatus.FAILED
    assert record.error is not None
    assert OBJECT in record.error["message"]
    assert "submit the export again" in record.error["message"]
    assert storage.objects[OBJECT] == b"city\r\nsomewhere-else\r\n"
    assert storage.list("tmp/") == []
    assert ready.published == []


class CorruptingOnce(InMemoryExportStorage):
    """Storage whose first upload arrives damaged, and which cannot delete it (as the upload's
    integrity check finds, under an identity without delete rights on the object)."""

    def __init__(self) -> None:
        super().__init__()
        self.damaged: list[str] = []

    def open_upload(self, name: str, *, metadata: dict[str, str]) -> Any:
        upload = super().open_upload(name, metadata=metadata)
        if self.damaged:
            return upload
        commit = upload.commit

        def damaged_commit() -> Any:
            info = commit()
            self.objects[name] = self.objects[name][:-1] + b"?"
            self.damaged.append(name)
            raise TransientError(f"the uploaded object does not match what was sent ({info.size})")

        upload.commit = damaged_commit  # type: ignore[method-assign]
        return upload


def test_a_damaged_upload_never_becomes_the_export() -> None:
    """An attempt whose upload arrived damaged fails; the next writes an object of its own, so
    the export's file holds the right bytes and the damaged one is cleaned up with the rest."""
    store, storage, ready = InMemoryStore(), CorruptingOnce(), FakeQueue()
    store.create_export(queued())
    runner = ExportRunner(
        store=store, storage=storage, ready=ready, engine=FakeEngine(),
        datasets=FixedDataset("/data/listings.parquet"), catalog=RENTAL_LISTINGS,
        clock=lambda: NOW, worker="w1",
    )  # fmt: skip
    with pytest.raises(TransientError, match="does not match"):
        runner.handle(QUERY_UUID)
    runner.handle(QUERY_UUID)
    assert storage.damaged == [f"tmp/{QUERY_UUID}/single-a1"]
    assert store.exports[QUERY_UUID].status is ExportStatus.SUCCEEDED
    assert storage.objects[OBJECT] == b"city\r\ncity-0\r\ncity-1\r\ncity-2\r\n"
    assert storage.list("tmp/") == []


def test_a_transient_engine_failure_aborts_the_upload_and_leaves_the_export_running() -> None:
    """The upload is abandoned, no object appears, and the error reaches Pub/Sub."""
    engine = FakeEngine(fail_with=TransientError("dataset bucket unavailable"))
    runner, store, storage, ready, _ = make_runner(queued(), engine)
    with pytest.raises(TransientError, match="dataset bucket unavailable"):
        runner.handle(QUERY_UUID)
    assert storage.objects == {}
    assert [u.aborted for u in storage.uploads] == [True]
    assert store.exports[QUERY_UUID].status is ExportStatus.RUNNING
    assert store.exports[QUERY_UUID].rows_written == 1
    assert ready.published == []


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (TransientError("dataset bucket unavailable"), "transient_error", "bucket unavailable"),
        (RuntimeError("cannot open /srv/data/x.parquet"), "internal_error", "RuntimeError"),
    ],
)
def test_a_failed_attempt_is_shown_and_frees_the_lease_for_the_retry(
    error: Exception, code: str, words: str
) -> None:
    """While it retries, the status shows the attempt count and the last error; no lease waits."""
    engine = FailingThenWorking(1, error)
    runner, store, _, ready, _ = make_runner(queued(), engine)
    with pytest.raises(type(error)):
        runner.handle(QUERY_UUID)
    record = store.exports[QUERY_UUID]
    assert record.status is ExportStatus.RUNNING
    assert (record.lease_owner, record.lease_expires_on) == (None, None)
    doc = record.status_document()
    assert doc["status"] == "running"
    assert doc["attempts"] == 1
    assert doc["lastError"]["code"] == code
    assert doc["lastError"]["at"] == "2026-11-27T12:00:00.000Z"
    message = doc["lastError"]["message"]
    assert f"attempt 1 of {MAX_RUN_ATTEMPTS} failed" in message
    assert words in message
    assert "/srv/data" not in message
    assert "retried automatically" in message
    # The redelivery starts at once (the lease was freed) and finishes the export.
    runner.handle(QUERY_UUID)
    record = store.exports[QUERY_UUID]
    assert record.status is ExportStatus.SUCCEEDED
    assert record.status_document()["attempts"] == 2
    assert ready.published == [QUERY_UUID]


def test_an_export_failing_every_attempt_fails_with_the_last_error() -> None:
    """After MAX_RUN_ATTEMPTS failed attempts the next delivery fails it, quoting the cause."""
    engine = FailingThenWorking(99, RuntimeError("disk full"))
    runner, store, _, ready, _ = make_runner(queued(), engine)
    for _ in range(MAX_RUN_ATTEMPTS):
        with pytest.raises(RuntimeError):
            runner.handle(QUERY_UUID)
    last = (store.exports[QUERY_UUID].last_error or {})["message"]
    assert f"attempt {MAX_RUN_ATTEMPTS} of {MAX_RUN_ATTEMPTS} failed" in last
    assert "this was the last attempt" in last
    runner.handle(QUERY_UUID)  # acknowledged: nothing more to try
    record = store.exports[QUERY_UUID]
    assert engine.calls == MAX_RUN_ATTEMPTS
    assert record.status is ExportStatus.FAILED
    assert record.error is not None
    assert record.error["code"] == "too_many_attempts"
    assert "RuntimeError: disk full" in record.error["message"]
    assert ready.published == []


def test_a_worker_that_lost_its_lease_leaves_the_record_alone() -> None:
    """LeaseLost means another worker runs the export now: no lastError, its lease untouched."""
    engine = FakeEngine()
    runner, store, _, _, _ = make_runner(queued(), engine)

    def taken_over(path: str, query: Any, fmt: str, out: Any, **kwargs: Any) -> int:
        store.exports[QUERY_UUID] = dataclasses.replace(store.exports[QUERY_UUID], lease_owner="w2")
        kwargs["on_progress"](1)
        return 0

    engine.export = taken_over  # type: ignore[method-assign]
    with pytest.raises(LeaseLost):
        runner.handle(QUERY_UUID)
    record = store.exports[QUERY_UUID]
    assert record.lease_owner == "w2"
    assert record.lease_expires_on is not None
    assert record.last_error is None


def test_a_claim_that_loses_the_race_reads_again_and_decides_on_what_won() -> None:
    """Another worker claims between our read and our write: our write fails, we see BUSY."""
    runner, store, _, _, engine = make_runner(queued())
    rival = dataclasses.replace(runner, worker="w2")
    read_for_claim = store.read_for_claim
    reads = 0

    def read_then_lose(query_uuid: str) -> Any:
        nonlocal reads
        reads += 1
        read = read_for_claim(query_uuid)
        if reads == 1:
            assert rival.claim(query_uuid).record is not None  # w2 writes after our read
        return read

    store.read_for_claim = read_then_lose  # type: ignore[method-assign]
    with pytest.raises(TransientError, match="being run by another worker"):
        runner.handle(QUERY_UUID)
    record = store.exports[QUERY_UUID]
    assert reads == 3  # ours, w2's, then ours again after the failed precondition
    assert (record.lease_owner, record.run_attempts) == ("w2", 1)
    assert engine.calls == 0


def test_a_claim_that_keeps_losing_gives_the_message_back() -> None:
    """When every guarded claim write fails, the runner stops after a few reads: LeaseLost."""
    runner, store, _, _, engine = make_runner(queued())
    writes = 0

    def always_stale(record: ExportRecord, *, if_version: object) -> None:
        nonlocal writes
        writes += 1
        raise PreconditionFailed("changed since read")

    store.write_claim = always_stale  # type: ignore[method-assign]
    with pytest.raises(LeaseLost, match="too many concurrent updates"):
        runner.handle(QUERY_UUID)
    assert writes == 5
    assert store.exports[QUERY_UUID].status is ExportStatus.QUEUED
    assert engine.calls == 0


def test_a_query_the_engine_refuses_fails_at_once_with_its_code() -> None:
    """A QueryRejected from the engine fails the export on the first delivery and frees it."""
    engine = FakeEngine(fail_with=QueryRejected("the query engine refused the query: ..."))
    runner, store, storage, ready, _ = make_runner(queued(), engine)
    runner.handle(QUERY_UUID)  # returns: the message is acknowledged
    record = store.exports[QUERY_UUID]
    assert record.status is ExportStatus.FAILED
    assert record.error == {
        "code": "query_rejected",
        "message": "the query engine refused the query: ...",
    }
    assert (record.lease_owner, record.lease_expires_on) == (None, None)
    assert engine.calls == 1
    assert storage.objects == {}
    assert ready.published == []


def test_a_permanent_failure_is_recorded_and_acknowledged() -> None:
    """A permanent error marks the export failed with its reason; no file, no webhook."""
    engine = FakeEngine(fail_with=PermanentError("the dataset has no column 'sqft'"))
    runner, store, storage, ready, _ = make_runner(queued(), engine)
    runner.handle(QUERY_UUID)
    record = store.exports[QUERY_UUID]
    assert record.status is ExportStatus.FAILED
    assert record.error is not None
    assert "sqft" in record.error["message"]
    assert storage.objects == {}
    assert ready.published == []


def test_a_query_that_no_longer_fits_the_catalog_fails_permanently() -> None:
    """A stored dataset naming an unknown column fails without running the engine."""
    record = queued(
        dataset=SubmittedDataset(json.dumps({"scopes": [{"column": "no_such_column"}]}))
    )
    runner, store, _, _, engine = make_runner(record)
    runner.handle(QUERY_UUID)
    assert engine.calls == 0
    assert store.exports[QUERY_UUID].status is ExportStatus.FAILED
    assert "no_such_column" in (store.exports[QUERY_UUID].error or {}).get("message", "")


def test_a_dead_lettered_request_fails_the_export_once() -> None:
    """give_up marks a queued export failed; a finished export is left alone."""
    runner, store, _, _, _ = make_runner(queued())
    runner.give_up(QUERY_UUID, 10)
    assert store.exports[QUERY_UUID].status is ExportStatus.FAILED
    assert "after 10 delivery attempts" in (store.exports[QUERY_UUID].error or {})["message"]
    retried, store3, _, _, _ = make_runner(
        queued(last_error={"code": "internal_error", "message": "attempt 2 of 5 failed (x)"})
    )
    retried.give_up(QUERY_UUID, 10)
    assert (
        "(last error: attempt 2 of 5 failed (x))"
        in (store3.exports[QUERY_UUID].error or {})["message"]
    )
    done, store2, _, _, _ = make_runner(queued(status=ExportStatus.SUCCEEDED))
    done.give_up(QUERY_UUID, 10)
    assert store2.exports[QUERY_UUID].status is ExportStatus.SUCCEEDED


def pushed(query_uuid: str, **attributes: str) -> PubSubMessage:
    """A pushed message as the process function decodes it."""
    data = base64.b64encode(json.dumps({"queryUUID": query_uuid}).encode()).decode()
    return decode_message({"message": {"data": data, "attributes": attributes}})


def test_a_pushed_request_is_run() -> None:
    """A message on the requests subscription runs the export and announces it."""
    runner, store, _, ready, engine = make_runner(queued())
    runner.handle_message(pushed(QUERY_UUID, kind=REQUEST_KIND), dead_letter=False)
    assert store.exports[QUERY_UUID].status is ExportStatus.SUCCEEDED
    assert (engine.calls, ready.published) == (1, [QUERY_UUID])


def test_a_dead_lettered_request_is_given_up_with_its_delivery_count() -> None:
    """A dead-lettered request fails the export, naming Pub/Sub's delivery count; nothing runs."""
    runner, store, _, _, engine = make_runner(queued())
    message = pushed(QUERY_UUID, kind=REQUEST_KIND, CloudPubSubDeadLetterSourceDeliveryCount="10")
    runner.handle_message(message, dead_letter=True)
    record = store.exports[QUERY_UUID]
    assert record.status is ExportStatus.FAILED
    assert record.error is not None
    assert record.error["code"] == "dead_lettered"
    assert "after 10 delivery attempts" in record.error["message"]
    assert engine.calls == 0


def test_a_dead_lettered_ready_message_leaves_the_export_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A dead-lettered ready message is only logged: the record is not touched, nothing runs."""
    runner, store, _, ready, engine = make_runner(queued())
    message = pushed(QUERY_UUID, kind=READY_KIND, CloudPubSubDeadLetterSourceDeliveryCount="5")
    runner.handle_message(message, dead_letter=True)
    assert store.exports[QUERY_UUID] == queued()
    assert (engine.calls, ready.published) == (0, [])
    assert "ready message dead-lettered; the export stays downloadable" in caplog.messages
