"""Integration tests of the rate limit on the Firestore emulator: two function instances (two
clients) share one sliding window, a boundary burst is refused, a concurrent burst admits
exactly the limit."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
from google.cloud import firestore

from dataset_export.adapters.dns import resolve
from dataset_export.adapters.firestore_store import RATE_LIMITS, FirestoreStore
from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.errors import RateLimited
from dataset_export.service.submit import Caller, ExportService
from tests.fakes import FakeQueue

pytestmark = pytest.mark.integration

T = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)


class Clock:
    """A settable clock shared by both instances."""

    def __init__(self) -> None:
        self.now = T

    def __call__(self) -> dt.datetime:
        return self.now


def instance(project: str, clock: Clock, limit: int) -> ExportService:
    """One function instance: its own Firestore client, the shared database."""
    return ExportService(
        store=FirestoreStore(firestore.Client(project=project)),
        queue=FakeQueue(),
        resolver=resolve,
        catalog=RENTAL_LISTINGS,
        max_rows=1000,
        rate_limit_per_minute=limit,
        clock=clock,
    )


def admitted(service: ExportService, caller: Caller) -> bool:
    try:
        service.check_rate(caller)
    except RateLimited:
        return False
    return True


def test_two_instances_share_one_window_across_a_minute_boundary(
    stack_env: dict[str, str],
) -> None:
    """Five requests at 10:00:59.5 over two instances leave none for 10:01:00.2 on either."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    clock = Clock()
    a, b = instance(project, clock, 5), instance(project, clock, 5)
    caller = Caller(key_hash=uuid.uuid4().hex, key_id="k", account_id="acct")
    clock.now = T + dt.timedelta(seconds=59.5)
    assert [admitted(s, caller) for s in (a, b, a, b, a)] == [True] * 5
    assert not admitted(b, caller)
    clock.now = T + dt.timedelta(seconds=60.2)
    assert not admitted(a, caller)
    assert not admitted(b, caller)
    clock.now = T + dt.timedelta(seconds=120)
    assert [admitted(s, caller) for s in (b, a, b, a, b, a)] == [True] * 5 + [False]


def test_a_concurrent_burst_admits_exactly_the_limit(stack_env: dict[str, str]) -> None:
    """Twenty requests at once over two instances: exactly ten pass, the refused are taken back."""
    project = stack_env["GOOGLE_CLOUD_PROJECT"]
    clock = Clock()
    clock.now = T + dt.timedelta(seconds=30.25)
    services = [instance(project, clock, 10), instance(project, clock, 10)]
    caller = Caller(key_hash=uuid.uuid4().hex, key_id="k", account_id="acct")
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(20)

    def one(n: int) -> None:
        start.wait()
        ok = admitted(services[n % 2], caller)
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 10 + [True] * 10
    doc = (
        firestore.Client(project=project)
        .collection(RATE_LIMITS)
        .document(f"{caller.key_hash}-202611271000")
        .get()
        .to_dict()
    )
    assert doc is not None
    assert doc["counts"] == {"30": 10}
    assert doc["expiresOn"] == T + dt.timedelta(minutes=3)
