"""One contract for the store: every test runs on the in-memory fake and on Firestore.

The services see the store only through their ports (``ExportStore`` for submit and the key
commands, ``LifecycleStore`` for process, ``DeliveryStore`` for notify and redelivery). The unit
tests run the services on ``tests.fakes.InMemoryStore``; the functions run them on
``FirestoreStore``. Each test below states one behaviour a service relies on and is run against
both, so the fake cannot drift from the real thing. The Firestore side uses the local stack's
emulator (the ``stack_env`` fixture) with a project of its own per test, so it starts empty and
the stack's own functions never see its documents.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from dataset_export.adapters.datasets import FixedDataset
from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.dataset import SubmittedDataset
from dataset_export.core.delivery import AttemptOutcome, DeliveryRecord, DeliveryState
from dataset_export.core.errors import AlreadyExists, LeaseLost, PreconditionFailed
from dataset_export.core.lifecycle import ClaimVerdict, claimed, claimed_part
from dataset_export.core.records import ExportRecord, ExportStatus, PartRecord
from dataset_export.service.ports import (
    Account,
    ApiKeyRecord,
    DeliveryStore,
    ExportReader,
    ExportResult,
    ExportStore,
    IdempotencyRecord,
    KeyReader,
    LifecycleStore,
    ObjectInfo,
    PartReader,
)
from dataset_export.service.process import Claim, ExportRunner
from tests.fakes import FakeQueue, InMemoryExportStorage, InMemoryStore

T0 = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(minutes=2)
MINUTE = dt.timedelta(minutes=1)


class Store(ExportStore, LifecycleStore, DeliveryStore, Protocol):
    """Everything the services ask of one store."""


@pytest.fixture(
    params=["in-memory", pytest.param("firestore", marks=pytest.mark.integration)],
)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """The fake, or the Firestore store on the emulator in a project no one else uses."""
    if request.param == "in-memory":
        yield InMemoryStore()
        return
    request.getfixturevalue("stack_env")  # points FIRESTORE_EMULATOR_HOST at the emulator
    from google.cloud import firestore

    from dataset_export.adapters.firestore_store import FirestoreStore

    client = firestore.Client(project=f"contract-{uuid.uuid4().hex[:12]}")
    try:
        yield FirestoreStore(client)
    finally:
        client.close()


def test_the_contract_calls_every_method_of_the_store_ports() -> None:
    """Each method of the store ports (and the reads they share) is tested here."""
    ports = (ExportReader, PartReader, KeyReader, ExportStore, LifecycleStore, DeliveryStore)
    methods = {name for port in ports for name in vars(port) if not name.startswith("_")}
    assert {"create_export", "write_claim", "save_delivery"} <= methods
    source = Path(__file__).read_text("utf-8")
    assert sorted(m for m in methods if f"store.{m}(" not in source) == []


def new_export(store: Store, **changes: Any) -> ExportRecord:
    """Create an export (queued unless ``status`` says otherwise) and return what was stored."""
    record = ExportRecord(
        query_uuid=str(uuid.uuid4()),
        account_id="acme",
        key_hash="hash-of-key-1",
        key_id="key_1",
        name="Seattle Rental Data Export",
        format="csv",
        webhook_url="https://hooks.example/export",
        dataset=SubmittedDataset('{"scopes":[{"column":"msa"}]}'),
        status=ExportStatus.QUEUED,
        requested_on=T0,
    )
    record = dataclasses.replace(record, **changes)
    store.create_export(record)
    return record


def stored(store: Store, query_uuid: str) -> ExportRecord:
    """The export as the store has it now (it must exist)."""
    record = store.get_export(query_uuid)
    assert record is not None
    return record


def result(query_uuid: str) -> ExportResult:
    """A finished export's outcome."""
    return ExportResult(
        object_name=f"exports/{query_uuid}.csv.gz",
        rows=1234,
        size_bytes=56789,
        crc32c="AAAAAA==",
        md5="1B2M2Y8AsgTpgAmY7PhCfg==",
        started_on=T0,
        completed_on=T0 + MINUTE,
    )


class _NoEngine:
    """A claim never runs the export."""

    def export(self, *args: Any, **kwargs: Any) -> int:
        raise AssertionError("the claim ran the export")

    def row_groups(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the claim planned the export")

    def header(self, *args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("the claim composed the export")


def run_claim(store: Store, query_uuid: str, worker: str, now: dt.datetime) -> Claim:
    """Claim as the process function does: ``ExportRunner.claim`` (decide, then a guarded
    ``write_claim`` over ``read_for_claim``'s version) on this store."""
    runner = ExportRunner(
        store=store,
        storage=InMemoryExportStorage(),
        ready=FakeQueue(),
        engine=_NoEngine(),
        datasets=FixedDataset("unused.parquet"),
        catalog=RENTAL_LISTINGS,
        clock=lambda: now,
        lease=LEASE,
        worker=worker,
    )
    return runner.claim(query_uuid)


# --- accounts and API keys (submit, exportctl keys) ----------------------------------------


def test_an_account_is_absent_until_put_and_a_put_replaces_it(store: Store) -> None:
    """``get_account`` is None for an unknown id and returns the latest ``put_account``."""
    assert store.get_account("acme") is None
    store.put_account(Account("acme", query_builder=True, created_on=T0))
    assert store.get_account("acme") == Account("acme", True, T0)
    store.put_account(Account("acme", query_builder=False, created_on=T0))
    assert store.get_account("acme") == Account("acme", False, T0)


def test_an_api_key_is_found_by_hash_and_its_hash_is_taken_once(store: Store) -> None:
    """A key reads back by its hash; a second key with that hash is ``AlreadyExists``."""
    key = ApiKeyRecord("hash-of-key-1", "key_1", "acme", "ciphertext", T0)
    assert store.get_api_key(key.key_hash) is None
    store.create_api_key(key)
    assert store.get_api_key(key.key_hash) == key
    with pytest.raises(AlreadyExists):
        store.create_api_key(dataclasses.replace(key, key_id="key_2", account_id="other"))
    assert store.get_api_key(key.key_hash) == key


def test_revoking_marks_the_key_with_that_id_only(store: Store) -> None:
    """``revoke_api_key`` sets ``revoked_on`` on the key with the id, and is False for none."""
    first = ApiKeyRecord("hash-of-key-a", "key_1", "acme", "c1", T0)
    second = ApiKeyRecord("hash-of-key-b", "key_2", "acme", "c2", T0)
    store.create_api_key(first)
    store.create_api_key(second)
    assert store.revoke_api_key("key_1", T0 + MINUTE) is True
    assert store.get_api_key(first.key_hash) == dataclasses.replace(first, revoked_on=T0 + MINUTE)
    assert store.get_api_key(second.key_hash) == second
    assert store.revoke_api_key("key_unknown", T0) is False


# --- exports, idempotency and the rate limit (submit) --------------------------------------


def test_an_export_reads_back_as_created_and_is_created_once(store: Store) -> None:
    """Every field reads back; a second create with the queryUUID is ``AlreadyExists``."""
    record = new_export(store, idempotency_key="seattle-1", extra={"note": "kept"})
    assert store.get_export(record.query_uuid) == record
    with pytest.raises(AlreadyExists):
        store.create_export(dataclasses.replace(record, name="another"))
    assert store.get_export(record.query_uuid) == record


def test_a_record_read_is_a_copy(store: Store) -> None:
    """A record the store returned cannot be changed, so nothing stored changes through it."""
    record = new_export(store)
    read = stored(store, record.query_uuid)
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.status = ExportStatus.FAILED  # type: ignore[misc]
    assert store.get_export(record.query_uuid) == record


def test_an_unknown_export_is_none_and_deleting_one_is_harmless(store: Store) -> None:
    """``get_export`` is None for an unknown id; ``delete_export`` removes one, or nothing."""
    assert store.get_export(str(uuid.uuid4())) is None
    store.delete_export(str(uuid.uuid4()))
    record = new_export(store, status=ExportStatus.SUBMITTING)
    store.delete_export(record.query_uuid)
    assert store.get_export(record.query_uuid) is None


def test_mark_queued_moves_only_a_submitting_export_to_queued(store: Store) -> None:
    """The message id is always recorded; only ``submitting`` becomes ``queued``."""
    submitting = new_export(store, status=ExportStatus.SUBMITTING)
    store.mark_queued(submitting.query_uuid, "m-1")
    after = stored(store, submitting.query_uuid)
    assert (after.status, after.queued_message_id) == (ExportStatus.QUEUED, "m-1")
    # process may claim the export before submit records the publish: it stays running.
    running = new_export(store, status=ExportStatus.SUBMITTING)
    run_claim(store, running.query_uuid, "w1", T0)
    store.mark_queued(running.query_uuid, "m-2")
    after = stored(store, running.query_uuid)
    assert (after.status, after.queued_message_id) == (ExportStatus.RUNNING, "m-2")
    store.mark_queued(str(uuid.uuid4()), "m-3")  # an export that is gone: nothing to do


def test_an_idempotency_key_is_recorded_once_and_can_be_forgotten(store: Store) -> None:
    """Create, get, ``AlreadyExists`` on a second create (first kept), delete."""
    record = IdempotencyRecord("scope-1", "uuid-1", "body-hash", T0)
    assert store.get_idempotency("scope-1") is None
    store.create_idempotency(record)
    assert store.get_idempotency("scope-1") == record
    with pytest.raises(AlreadyExists):
        store.create_idempotency(dataclasses.replace(record, query_uuid="uuid-2"))
    assert store.get_idempotency("scope-1") == record
    store.delete_idempotency("scope-1")
    assert store.get_idempotency("scope-1") is None
    store.delete_idempotency("scope-1")


SECOND = int(T0.timestamp())


def test_requests_are_counted_per_key_and_second_with_their_position(store: Store) -> None:
    """Each ``count_request`` returns its position in its (key, second) and that key's counts
    for the window's seconds, across a minute boundary and not for other keys or old seconds."""
    positions = [store.count_request("key-a", SECOND + 59).position for _ in range(3)]
    assert positions == [1, 2, 3]
    assert store.count_request("key-b", SECOND + 59).position == 1
    store.count_request("key-a", SECOND - 1)  # outside the window of SECOND + 60
    count = store.count_request("key-a", SECOND + 60)
    assert (count.second, count.position) == (SECOND + 60, 1)
    assert {s: n for s, n in count.counts.items() if n} == {SECOND + 59: 3, SECOND + 60: 1}


def test_an_uncounted_request_leaves_its_second(store: Store) -> None:
    """``uncount_request`` takes one request back, so the next one takes its position."""
    store.count_request("key-a", SECOND)
    store.count_request("key-a", SECOND)
    store.uncount_request("key-a", SECOND)
    count = store.count_request("key-a", SECOND)
    assert count.position == 2
    assert count.counts[SECOND] == 2


# --- the export's lifecycle (process) -------------------------------------------------------


def test_a_claim_is_read_with_a_version_and_written_only_over_that_version(store: Store) -> None:
    """``write_claim`` over ``read_for_claim``'s version stores the claim; over a stale one it
    raises ``PreconditionFailed`` and changes nothing."""
    record = new_export(store)
    first = store.read_for_claim(record.query_uuid)
    assert first is not None
    assert first.record == stored(store, record.query_uuid)
    store.write_claim(claimed(first.record, "w1", T0, LEASE), if_version=first.version)
    after = stored(store, record.query_uuid)
    assert (after.status, after.lease_owner, after.run_attempts) == (ExportStatus.RUNNING, "w1", 1)
    with pytest.raises(PreconditionFailed):
        store.write_claim(claimed(first.record, "w2", T0, LEASE), if_version=first.version)
    assert stored(store, record.query_uuid) == after
    assert store.read_for_claim(str(uuid.uuid4())) is None


def test_any_change_to_the_export_makes_a_read_for_claim_stale(store: Store) -> None:
    """A write between the read and the claim (here submit's ``mark_queued``) moves the version."""
    record = new_export(store, status=ExportStatus.SUBMITTING)
    read = store.read_for_claim(record.query_uuid)
    assert read is not None
    store.mark_queued(record.query_uuid, "m-1")
    with pytest.raises(PreconditionFailed):
        store.write_claim(claimed(read.record, "w1", T0, LEASE), if_version=read.version)
    assert stored(store, record.query_uuid).status is ExportStatus.QUEUED
    again = store.read_for_claim(record.query_uuid)
    assert again is not None
    store.write_claim(claimed(again.record, "w1", T0, LEASE), if_version=again.version)
    assert stored(store, record.query_uuid).status is ExportStatus.RUNNING


def test_claiming_a_queued_export_runs_it_under_the_workers_lease(store: Store) -> None:
    """A queued export is claimed: running, leased to the worker, attempt 1, no rows yet."""
    record = new_export(store)
    claim = run_claim(store, record.query_uuid, "w1", T0)
    assert claim.decision.verdict is ClaimVerdict.RUN
    assert not claim.decision.takeover
    for after in (claim.record, stored(store, record.query_uuid)):
        assert after is not None
        assert after.status is ExportStatus.RUNNING
        assert (after.lease_owner, after.lease_expires_on) == ("w1", T0 + LEASE)
        assert (after.run_attempts, after.rows_written, after.started_on) == (1, 0, T0)


def test_a_submitting_export_can_be_claimed(store: Store) -> None:
    """The request may arrive before submit marks the export queued: it runs all the same."""
    record = new_export(store, status=ExportStatus.SUBMITTING)
    claim = run_claim(store, record.query_uuid, "w1", T0)
    assert claim.decision.verdict is ClaimVerdict.RUN
    assert stored(store, record.query_uuid).status is ExportStatus.RUNNING


def test_a_live_lease_makes_a_second_claim_busy_and_changes_nothing(store: Store) -> None:
    """While the lease lives another worker's claim is BUSY and the record stays the first's."""
    record = new_export(store)
    run_claim(store, record.query_uuid, "w1", T0)
    before = stored(store, record.query_uuid)
    claim = run_claim(store, record.query_uuid, "w2", T0 + LEASE - MINUTE)
    assert claim.decision.verdict is ClaimVerdict.BUSY
    assert claim.record == before
    assert stored(store, record.query_uuid) == before


def test_an_expired_lease_is_taken_over_and_the_old_worker_loses_it(store: Store) -> None:
    """At the lease's expiry another worker takes over; the first one's writes are LeaseLost."""
    record = new_export(store)
    run_claim(store, record.query_uuid, "w1", T0)
    claim = run_claim(store, record.query_uuid, "w2", T0 + LEASE)
    assert claim.decision.verdict is ClaimVerdict.RUN
    assert claim.decision.takeover
    after = stored(store, record.query_uuid)
    assert (after.lease_owner, after.lease_expires_on) == ("w2", T0 + 2 * LEASE)
    assert (after.run_attempts, after.started_on) == (2, T0)
    with pytest.raises(LeaseLost):
        store.record_progress(record.query_uuid, "w1", 10, T0 + 3 * LEASE)
    with pytest.raises(LeaseLost):
        store.complete_export(record.query_uuid, "w1", result(record.query_uuid))
    with pytest.raises(LeaseLost):
        store.release_export(record.query_uuid, "w1", {"code": "x", "message": "y", "at": "z"})
    assert stored(store, record.query_uuid) == after


def test_progress_shows_rows_and_renews_the_lease(store: Store) -> None:
    """``record_progress`` stores the rows and the new expiry, which keeps others out."""
    record = new_export(store)
    run_claim(store, record.query_uuid, "w1", T0)
    store.record_progress(record.query_uuid, "w1", 5000, T0 + MINUTE + LEASE)
    after = stored(store, record.query_uuid)
    assert (after.rows_written, after.lease_expires_on) == (5000, T0 + MINUTE + LEASE)
    busy = run_claim(store, record.query_uuid, "w2", T0 + LEASE)
    assert busy.decision.verdict is ClaimVerdict.BUSY


def test_completing_records_the_result_frees_the_lease_and_ends_the_claims(store: Store) -> None:
    """The result's fields are stored, the lease is gone, and any later claim is DONE."""
    record = new_export(store)
    run_claim(store, record.query_uuid, "w1", T0)
    store.complete_export(record.query_uuid, "w1", result(record.query_uuid))
    after = stored(store, record.query_uuid)
    assert after.status is ExportStatus.SUCCEEDED
    assert (after.rows_written, after.number_rows, after.size_bytes) == (1234, 1234, 56789)
    assert after.object_name == f"exports/{record.query_uuid}.csv.gz"
    assert (after.crc32c, after.md5) == ("AAAAAA==", "1B2M2Y8AsgTpgAmY7PhCfg==")
    assert after.completed_on == T0 + MINUTE
    assert (after.lease_owner, after.lease_expires_on) == (None, None)
    claim = run_claim(store, record.query_uuid, "w2", T0 + 10 * LEASE)
    assert claim.decision.verdict is ClaimVerdict.DONE
    assert claim.record == after
    with pytest.raises(LeaseLost):
        store.record_progress(record.query_uuid, "w1", 1, T0 + LEASE)


def test_a_released_attempt_shows_its_error_and_is_claimed_again_at_once(store: Store) -> None:
    """``release_export`` keeps it running with ``last_error`` and no lease; a retry takes it."""
    record = new_export(store)
    run_claim(store, record.query_uuid, "w1", T0)
    error = {"code": "transient_error", "message": "attempt 1 of 5 failed", "at": "t"}
    store.release_export(record.query_uuid, "w1", error)
    after = stored(store, record.query_uuid)
    assert (after.status, after.last_error) == (ExportStatus.RUNNING, error)
    assert (after.lease_owner, after.lease_expires_on) == (None, None)
    claim = run_claim(store, record.query_uuid, "w2", T0 + dt.timedelta(seconds=1))
    assert claim.decision.verdict is ClaimVerdict.RUN
    assert claim.decision.takeover
    assert stored(store, record.query_uuid).run_attempts == 2
    with pytest.raises(LeaseLost):
        store.complete_export(record.query_uuid, "w1", result(record.query_uuid))


def test_failing_an_unfinished_export_records_it_once(store: Store) -> None:
    """``fail_export`` fails a queued or running export (True), never a finished one (False)."""
    record = new_export(store)
    assert store.fail_export(record.query_uuid, "dead_lettered", "moved away", T0) is True
    after = stored(store, record.query_uuid)
    assert after.status is ExportStatus.FAILED
    assert after.error == {"code": "dead_lettered", "message": "moved away"}
    assert after.completed_on == T0
    assert store.fail_export(record.query_uuid, "other", "again", T0 + MINUTE) is False
    assert stored(store, record.query_uuid) == after
    assert run_claim(store, record.query_uuid, "w1", T0).decision.verdict is (ClaimVerdict.DONE)
    done = new_export(store)
    run_claim(store, done.query_uuid, "w1", T0)
    store.complete_export(done.query_uuid, "w1", result(done.query_uuid))
    assert store.fail_export(done.query_uuid, "late", "too late", T0) is False
    assert stored(store, done.query_uuid).status is ExportStatus.SUCCEEDED
    assert store.fail_export(str(uuid.uuid4()), "gone", "no such export", T0) is False


def test_failing_a_running_export_takes_its_lease_away(store: Store) -> None:
    """A failed export has no lease; its worker can no longer complete it."""
    record = new_export(store)
    run_claim(store, record.query_uuid, "w1", T0)
    assert store.fail_export(record.query_uuid, "too_many_attempts", "gave up", T0) is True
    after = stored(store, record.query_uuid)
    assert (after.status, after.lease_owner, after.lease_expires_on) == (
        ExportStatus.FAILED,
        None,
        None,
    )
    with pytest.raises(LeaseLost):
        store.complete_export(record.query_uuid, "w1", result(record.query_uuid))


def test_an_unknown_export_cannot_be_claimed_or_written(store: Store) -> None:
    """A claim of an export that is gone is DONE without a record; writes are LeaseLost."""
    gone = str(uuid.uuid4())
    claim = run_claim(store, gone, "w1", T0)
    assert (claim.decision.verdict, claim.record) == (ClaimVerdict.DONE, None)
    with pytest.raises(LeaseLost):
        store.record_progress(gone, "w1", 1, T0 + LEASE)


def test_the_ready_message_is_remembered(store: Store) -> None:
    """``mark_ready_published`` stores when notify was told."""
    record = new_export(store)
    assert stored(store, record.query_uuid).ready_published_on is None
    store.mark_ready_published(record.query_uuid, T0 + MINUTE)
    assert stored(store, record.query_uuid).ready_published_on == T0 + MINUTE


# --- webhook delivery (notify, redelivery) --------------------------------------------------


def succeeded_export(store: Store) -> ExportRecord:
    """An export that finished, as notify finds it."""
    record = new_export(store)
    run_claim(store, record.query_uuid, "w1", T0)
    store.complete_export(record.query_uuid, "w1", result(record.query_uuid))
    return stored(store, record.query_uuid)


def load(store: Store, query_uuid: str) -> tuple[ExportRecord, DeliveryRecord | None, object]:
    """``load_delivery`` of an export that exists."""
    loaded = store.load_delivery(query_uuid)
    assert loaded is not None
    return loaded


def save(store: Store, query_uuid: str, delivery: DeliveryRecord) -> None:
    """Save ``delivery`` over whatever is stored now."""
    assert store.save_delivery(query_uuid, delivery, load(store, query_uuid)[2]) is True


def test_a_delivery_is_none_until_saved_and_then_reads_back(store: Store) -> None:
    """Before the first save there is no delivery; a saved one reads back, on the export too."""
    record = succeeded_export(store)
    loaded = load(store, record.query_uuid)
    assert (loaded[0], loaded[1]) == (record, None)
    started = DeliveryRecord.new(T0).start_attempt(T0)
    assert store.save_delivery(record.query_uuid, started, loaded[2]) is True
    again = load(store, record.query_uuid)
    assert again[1] == started
    assert again[0].delivery == started
    assert stored(store, record.query_uuid).delivery == started
    assert store.load_delivery(str(uuid.uuid4())) is None


def test_a_redelivery_round_reads_back_with_the_request_that_started_it(store: Store) -> None:
    """A redelivered round keeps its ``round_id``, so the request can take back its own round."""
    record = succeeded_export(store)
    first = DeliveryRecord.new(T0)
    save(store, record.query_uuid, first)
    again = first.redeliver(T0 + MINUTE, "request-1")
    save(store, record.query_uuid, again)
    loaded = load(store, record.query_uuid)[1]
    assert loaded == again
    assert loaded is not None
    assert loaded.is_unstarted_round("request-1")


def test_a_save_from_a_stale_read_loses(store: Store) -> None:
    """Two workers read the same version: the first save wins, the second is refused."""
    record = succeeded_export(store)
    first, second = load(store, record.query_uuid), load(store, record.query_uuid)
    mine = DeliveryRecord.new(T0).start_attempt(T0)
    theirs = DeliveryRecord.new(T0).start_attempt(T0 + dt.timedelta(seconds=1))
    assert store.save_delivery(record.query_uuid, mine, first[2]) is True
    assert store.save_delivery(record.query_uuid, theirs, second[2]) is False
    assert load(store, record.query_uuid)[1] == mine


def test_any_change_to_the_export_makes_a_read_version_stale(store: Store) -> None:
    """The version is the export document's: another write to it refuses a save."""
    record = succeeded_export(store)
    loaded = load(store, record.query_uuid)
    store.mark_ready_published(record.query_uuid, T0 + MINUTE)
    fresh = DeliveryRecord.new(T0)
    assert store.save_delivery(record.query_uuid, fresh, loaded[2]) is False
    again = load(store, record.query_uuid)
    assert again[1] is None
    assert store.save_delivery(record.query_uuid, fresh, again[2]) is True


def test_a_write_that_changes_nothing_keeps_a_read_version(store: Store) -> None:
    """Writing what is already stored leaves the version, so a save from that read still wins."""
    record = succeeded_export(store)
    store.mark_ready_published(record.query_uuid, T0 + MINUTE)
    loaded = load(store, record.query_uuid)
    store.mark_ready_published(record.query_uuid, T0 + MINUTE)
    assert store.save_delivery(record.query_uuid, DeliveryRecord.new(T0), loaded[2]) is True


def test_due_deliveries_are_the_due_and_abandoned_ones_most_overdue_first(store: Store) -> None:
    """Pending or retrying ones whose time came and expired attempts, by due time, up to limit."""
    rng = random.Random(7)
    failure = AttemptOutcome(503, None, 5, host="hooks.example")
    success = AttemptOutcome(200, None, 5, host="hooks.example")
    made: dict[str, str] = {}

    def delivery(name: str, value: DeliveryRecord) -> None:
        record = succeeded_export(store)
        save(store, record.query_uuid, value)
        made[name] = record.query_uuid

    # Created in an order unlike their due times, so only ordering by due time passes.
    delivery("retrying, due in a minute", _retrying(T0 + MINUTE, failure, rng))
    delivery("retrying, due a minute ago", _retrying(T0 - MINUTE, failure, rng))
    delivery("pending, due three minutes ago", DeliveryRecord.new(T0 - 3 * MINUTE))
    delivery("delivering, lease ran out", _delivering(T0 - 2 * LEASE))
    delivery("delivering, lease live", _delivering(T0 - MINUTE))
    delivery("pending, due exactly now", DeliveryRecord.new(T0))
    done = _delivering(T0 - LEASE)
    delivery("delivered", done.record_outcome(success, T0 - LEASE, rng))
    gone = AttemptOutcome(410, None, 5, host="hooks.example")
    delivery("failed", done.record_outcome(gone, T0 - LEASE, rng))
    expected = [
        made["pending, due three minutes ago"],
        made["delivering, lease ran out"],  # lease until T0 - LEASE = T0 - 2 min
        made["retrying, due a minute ago"],
        made["pending, due exactly now"],
    ]
    assert store.due_deliveries(T0, 10) == expected
    assert store.due_deliveries(T0, 2) == expected[:2]
    assert store.due_deliveries(T0 - 10 * MINUTE, 10) == []


def _retrying(due: dt.datetime, failure: AttemptOutcome, rng: random.Random) -> DeliveryRecord:
    """A delivery whose first attempt failed, with its retry due at ``due`` (whole ms)."""
    started = DeliveryRecord.new(due - MINUTE).start_attempt(due - MINUTE)
    after = started.record_outcome(failure, due - MINUTE, rng)
    assert after.state is DeliveryState.RETRYING
    return dataclasses.replace(after, next_attempt_on=due)


def _delivering(started: dt.datetime) -> DeliveryRecord:
    """A delivery whose attempt started at ``started`` and is leased for the default lease."""
    return DeliveryRecord.new(started).start_attempt(started)


# --- the parts of an export planned as parts (process) ---------------------------------------


def planned(store: Store, parts: int = 3, worker: str = "w1") -> str:
    """A running export of ``worker``'s, planned as ``parts`` parts of 100 file rows each."""
    record = new_export(store)
    run_claim(store, record.query_uuid, worker, T0)
    store.write_plan(
        record.query_uuid,
        worker,
        [PartRecord(record.query_uuid, i, 100 * i, 100 * (i + 1), 90) for i in range(parts)],
        planned_rows=90 * parts,
        engine="duckdb",
        dataset_version="1764547200123456",
        clean_columns=frozenset({"city", "state"}),
        clean_rules="rules-digest",
    )
    return record.query_uuid


def claim_part(store: Store, query_uuid: str, index: int, worker: str) -> PartRecord:
    """Claim a part over the version read, as ``PartRunner`` does."""
    read = store.read_part(query_uuid, index)
    assert read is not None
    part = claimed_part(read.part, worker, T0, LEASE)
    store.write_part_claim(part, if_version=read.version)
    return part


def test_a_plan_stores_its_parts_queued_in_order_and_their_number(store: Store) -> None:
    """``write_plan`` keeps each part's range; the export counts them and has no parts before."""
    assert store.list_parts(str(uuid.uuid4())) == []
    query_uuid = planned(store, parts=12)
    parts = store.list_parts(query_uuid)
    assert [(p.index, p.start, p.stop) for p in parts] == [
        (i, 100 * i, 100 * (i + 1)) for i in range(12)
    ]
    assert all(p.status is ExportStatus.QUEUED and p.expected_rows == 90 for p in parts)
    after = stored(store, query_uuid)
    assert (after.parts_total, after.planned_rows, after.engine, after.dataset_version) == (
        12, 1080, "duckdb", "1764547200123456"
    )  # fmt: skip
    assert (after.clean_columns, after.clean_rules) == ({"city", "state"}, "rules-digest")
    assert store.read_part(query_uuid, 12) is None


def test_a_shorter_plan_replaces_every_part_of_a_longer_one(store: Store) -> None:
    """A planner that died before its plan counted leaves no part behind the next plan's."""
    query_uuid = planned(store, parts=5)
    store.write_plan(
        query_uuid,
        "w1",
        [PartRecord(query_uuid, i, 200 * i, None, None, stream=f"s{i}") for i in range(2)],
        planned_rows=None,
        engine="bigquery",
    )
    assert [(p.index, p.stop, p.stream) for p in store.list_parts(query_uuid)] == [
        (0, None, "s0"), (1, None, "s1")
    ]  # fmt: skip
    after = stored(store, query_uuid)
    assert (after.parts_total, after.planned_rows, after.engine, after.dataset_version) == (
        2, None, "bigquery", None
    )  # fmt: skip
    assert (after.clean_columns, after.clean_rules) == (frozenset(), None)


def test_clean_columns_are_kept_per_dataset_identity_and_a_later_answer_replaces_them(
    store: Store,
) -> None:
    """Unknown until kept; kept under the exact identity (a URI with '/' and '#'), none other;
    the empty answer is an answer (scanned: nothing clean), not "unknown"."""
    first = f"gs://bucket/data/listings.parquet#{uuid.uuid4().int}"
    assert store.clean_columns(first) is None
    store.keep_clean_columns(first, frozenset({"city", "zip_code"}), T0)
    assert store.clean_columns(first) == {"city", "zip_code"}
    assert store.clean_columns(first + "0") is None
    assert store.clean_columns(first.replace("gs://bucket", "gs://other")) is None
    store.keep_clean_columns(first, frozenset(), T0 + MINUTE)
    assert store.clean_columns(first) == frozenset()


def test_only_the_lease_holder_plans_and_publishing_frees_the_lease(store: Store) -> None:
    """A plan or a hand-over from a worker without the lease is LeaseLost; the hand-over ends
    the lease and makes any further request claim DONE."""
    query_uuid = planned(store)
    with pytest.raises(LeaseLost):
        store.write_plan(
            query_uuid, "w2", [PartRecord(query_uuid, 0, 0, 1, 1)], planned_rows=1, engine="duckdb"
        )
    with pytest.raises(LeaseLost):
        store.mark_parts_published(query_uuid, "w2", T0)
    store.mark_parts_published(query_uuid, "w1", T0 + MINUTE)
    after = stored(store, query_uuid)
    assert (after.parts_published_on, after.lease_owner, after.lease_expires_on) == (
        T0 + MINUTE, None, None
    )  # fmt: skip
    again = run_claim(store, query_uuid, "w2", T0 + MINUTE)
    assert again.decision.verdict is ClaimVerdict.DONE


def test_a_part_claim_is_written_only_over_the_version_read(store: Store) -> None:
    """Two workers claiming a part from the same read: the second's write fails."""
    query_uuid = planned(store)
    read = store.read_part(query_uuid, 1)
    assert read is not None
    store.write_part_claim(claimed_part(read.part, "w1", T0, LEASE), if_version=read.version)
    with pytest.raises(PreconditionFailed):
        store.write_part_claim(claimed_part(read.part, "w2", T0, LEASE), if_version=read.version)
    part = store.list_parts(query_uuid)[1]
    assert (part.status, part.lease_owner, part.attempts) == (ExportStatus.RUNNING, "w1", 1)


def test_part_progress_completion_and_release_need_the_parts_lease(store: Store) -> None:
    """Each part write is the lease holder's; completion records the object and frees it."""
    query_uuid = planned(store)
    claim_part(store, query_uuid, 0, "w1")
    claim_part(store, query_uuid, 2, "w1")
    info = ObjectInfo(f"tmp/{query_uuid}/part-00000", 321, "AAAAAA==", None, 7)
    with pytest.raises(LeaseLost):
        store.record_part_progress(query_uuid, 0, "w2", 5, T0 + LEASE)
    with pytest.raises(LeaseLost):
        store.complete_part(query_uuid, 0, "w2", 90, info, T0)
    with pytest.raises(LeaseLost):
        store.release_part(query_uuid, 0, "w2", {"code": "x", "message": "y", "at": "z"})
    store.record_part_progress(query_uuid, 0, "w1", 40, T0 + MINUTE + LEASE)
    part = store.list_parts(query_uuid)[0]
    assert (part.rows_written, part.lease_expires_on) == (40, T0 + MINUTE + LEASE)
    store.complete_part(query_uuid, 0, "w1", 90, info, T0 + MINUTE)
    store.release_part(query_uuid, 2, "w1", {"code": "transient_error", "message": "m", "at": "t"})
    done, queued, released = store.list_parts(query_uuid)
    assert done.status is ExportStatus.SUCCEEDED
    assert (done.rows_written, done.object_name, done.size_bytes, done.crc32c) == (
        90, info.name, 321, "AAAAAA=="
    )  # fmt: skip
    assert (done.lease_owner, done.completed_on) == (None, T0 + MINUTE)
    assert queued.status is ExportStatus.QUEUED
    assert released.status is ExportStatus.RUNNING
    assert (released.lease_owner, released.last_error) == (
        None, {"code": "transient_error", "message": "m", "at": "t"}
    )  # fmt: skip
    with pytest.raises(LeaseLost):
        store.record_part_progress(query_uuid, 0, "w1", 5, T0 + LEASE)


def test_the_compose_lease_is_taken_once_from_a_read_and_lets_its_holder_finish(
    store: Store,
) -> None:
    """Of two workers composing from the same read one wins; the winner completes the export."""
    query_uuid = planned(store)
    store.mark_parts_published(query_uuid, "w1", T0)
    read = store.read_for_claim(query_uuid)
    assert read is not None
    store.claim_compose(query_uuid, "w2", T0 + LEASE, if_version=read.version)
    with pytest.raises(PreconditionFailed):
        store.claim_compose(query_uuid, "w3", T0 + LEASE, if_version=read.version)
    after = stored(store, query_uuid)
    assert (after.lease_owner, after.lease_expires_on) == ("w2", T0 + LEASE)
    with pytest.raises(LeaseLost):
        store.complete_export(query_uuid, "w3", result(query_uuid))
    store.complete_export(query_uuid, "w2", result(query_uuid))
    assert stored(store, query_uuid).status is ExportStatus.SUCCEEDED
