"""The process use case (ExportRunner) over the in-memory fakes: every branch of a delivery."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.errors import PermanentError, TransientError
from dataset_export.core.records import ExportRecord, ExportStatus
from dataset_export.service.process import MAX_RUN_ATTEMPTS, ExportRunner, object_name
from dataset_export.testing import FakeQueue, InMemoryExportStorage, InMemoryStore

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
QUERY_UUID = "7b4f2c1e-0000-4000-8000-000000000001"
OBJECT = object_name(QUERY_UUID, "csv")


class FakeEngine:
    """Writes a fixed body in a few pieces, reporting progress; can fail part-way."""

    def __init__(self, rows: int = 3, fail_with: BaseException | None = None) -> None:
        self.rows = rows
        self.fail_with = fail_with
        self.calls = 0

    def __call__(self, path: str, query: Any, fmt: str, out: Any, on_progress: Any = None) -> int:
        self.calls += 1
        out.write(b"city\r\n")
        if on_progress is not None:
            on_progress(1)
        if self.fail_with is not None:
            raise self.fail_with
        for i in range(self.rows):
            out.write(f"city-{i}\r\n".encode())
        return self.rows


def queued(**changes: Any) -> ExportRecord:
    record = ExportRecord(
        query_uuid=QUERY_UUID,
        account_id="acct",
        key_hash="h",
        key_id="k",
        name="test",
        format="csv",
        webhook_url="https://hooks.example/x",
        dataset_json=json.dumps({"scopes": [{"column": "city"}]}),
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
        dataset_path=lambda: "/data/listings.parquet",
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
        "message": f"the export did not finish in {MAX_RUN_ATTEMPTS} attempts; please retry it",
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
    record = queued(dataset_json=json.dumps({"scopes": [{"column": "no_such_column"}]}))
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
    done, store2, _, _, _ = make_runner(queued(status=ExportStatus.SUCCEEDED))
    done.give_up(QUERY_UUID, 10)
    assert store2.exports[QUERY_UUID].status is ExportStatus.SUCCEEDED
