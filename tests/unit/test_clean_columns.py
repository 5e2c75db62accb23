"""What the runner learns of a dataset version (its clean columns) and hands the engine."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

import pytest

from dataset_export.adapters.datasets import FixedDataset
from dataset_export.core.errors import QueryRejected, TransientError
from dataset_export.core.records import ExportStatus
from dataset_export.service.process import LEARN_WITHIN
from tests.fakes import VersionedDatasets
from tests.unit.test_parts_runner import QUERY_UUID, queued, rig

NOTHING: frozenset[str] = frozenset()
CITY = frozenset({"city"})
SECOND = "7b4f2c1e-0000-4000-8000-0000000000bb"


def key(version: str, rules: str = "rules-1") -> str:
    """Where the runner keeps what it learnt of ``VersionedDatasets`` version ``version``."""
    return f"gs://d/l#{version}|{rules}"


def test_the_first_export_of_a_version_scans_it_and_later_ones_use_what_it_found() -> None:
    """The export that meets a dataset version first renders every field checked, and its
    runner then scans the version (after telling notify) and keeps the answer under the
    version's identity and the engine's rules; the next export of that version is handed the
    clean columns and scans nothing."""
    r = rig(rows=1)
    datasets = VersionedDatasets(current="1")
    published_at_scan: list[list[str]] = []
    scan = r.engine.clean_columns

    def clean_columns(source: str) -> frozenset[str]:
        published_at_scan.append(list(r.ready.published))
        return scan(source)

    r.engine.clean_columns = clean_columns  # type: ignore[method-assign]
    r.runner(datasets=datasets).handle(QUERY_UUID)
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.engine.cleans == [NOTHING]
    assert published_at_scan == [[QUERY_UUID]]
    assert r.engine.scanned == ["/data/listings-1.parquet"]
    assert r.store.datasets == {key("1"): CITY}

    r.store.create_export(dataclasses.replace(queued(), query_uuid=SECOND))
    r.runner(datasets=datasets).handle(SECOND)
    assert r.store.exports[SECOND].status is ExportStatus.SUCCEEDED
    assert r.engine.cleans == [NOTHING, CITY]
    assert len(r.engine.scanned) == 1


def test_a_new_version_is_scanned_again() -> None:
    """What was learnt of one version is never used for another: a replaced dataset's first
    export renders checked and scans the new version."""
    r = rig(rows=1)
    datasets = VersionedDatasets(current="1")
    r.store.keep_clean_columns(key("1"), CITY, r.clock[0])
    datasets.current = "2"
    r.runner(datasets=datasets).handle(QUERY_UUID)
    assert r.engine.cleans == [NOTHING]
    assert r.engine.scanned == ["/data/listings-2.parquet"]
    assert set(r.store.datasets) == {key("1"), key("2")}


def test_an_answer_found_under_other_rules_is_not_used() -> None:
    """After an engine upgrade (other checks, another DuckDB) the answer kept under the old
    rules is ignored: the export checks every value and the version is scanned again."""
    r = rig(rows=1)
    datasets = VersionedDatasets(current="1")
    r.store.keep_clean_columns(key("1", "rules-0"), CITY, r.clock[0])
    r.runner(datasets=datasets).handle(QUERY_UUID)
    assert r.engine.cleans == [NOTHING]
    assert r.engine.scanned == ["/data/listings-1.parquet"]
    assert r.store.datasets[key("1")] == CITY


def test_every_part_is_handed_the_clean_columns_the_plan_recorded() -> None:
    """A plan records the clean columns known when it was made, and their rules; each part
    renders with those, whatever is learnt or kept meanwhile, so the parts of one file agree."""
    r = rig(rows=10)
    datasets = VersionedDatasets(current="1")
    r.store.keep_clean_columns(key("1"), CITY, r.clock[0])
    r.runner(datasets=datasets).handle(QUERY_UUID)
    assert (r.record.clean_columns, r.record.clean_rules) == (CITY, "rules-1")
    r.store.datasets.clear()  # forgotten (TTL) while the parts run
    r.run_parts(r.runner("w-parts", datasets=datasets))
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.engine.cleans == [CITY] * r.record.parts_total


def test_a_part_under_other_rules_than_its_plan_checks_every_value() -> None:
    """A part run by an instance of other rules (a deploy between the plan and the part)
    does not use the plan's clean columns: the part's bytes follow its own checks."""
    r = rig(rows=10)
    datasets = VersionedDatasets(current="1")
    r.store.keep_clean_columns(key("1"), CITY, r.clock[0])
    r.runner(datasets=datasets).handle(QUERY_UUID)
    r.engine.rules = "rules-2"
    r.run_parts(r.runner("w-parts", datasets=datasets))
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.engine.cleans == [NOTHING] * r.record.parts_total


def test_a_plan_made_before_the_version_was_scanned_has_its_parts_check_every_field() -> None:
    """The planner hands an unscanned version to the parts with no clean column, and scans it
    once the part messages are out."""
    r = rig(rows=10)
    datasets = VersionedDatasets(current="1")
    r.runner(datasets=datasets).handle(QUERY_UUID)
    assert (r.record.clean_columns, r.record.clean_rules) == (NOTHING, None)
    assert len(r.parts.published) == r.record.parts_total > 1
    assert r.engine.scanned == ["/data/listings-1.parquet"]
    r.run_parts(r.runner("w-parts", datasets=datasets))
    assert r.engine.cleans == [NOTHING] * r.record.parts_total
    assert len(r.engine.scanned) == 1


def test_a_failed_scan_is_logged_and_leaves_the_export_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scan only makes later exports faster: when it fails transiently, the export stays
    succeeded, the message is acknowledged, nothing is kept, and the next export scans again."""
    r = rig(rows=1, record=queued())
    r.engine.clean_found = TransientError("the disk went away")
    datasets = VersionedDatasets(current="1")
    with caplog.at_level(logging.WARNING):
        r.runner(datasets=datasets).handle(QUERY_UUID)
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.ready.published == [QUERY_UUID]
    assert r.store.datasets == {}
    assert "could not learn the dataset's clean columns: the disk went away" in caplog.text


def test_a_scan_the_engine_refuses_is_kept_as_no_clean_column(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A file the engine refuses to scan would be refused again: it is kept as having no
    clean column, so later exports neither scan it again nor skip a check."""
    r = rig(rows=1)
    r.engine.clean_found = QueryRejected("the file is not what DuckDB reads")
    datasets = VersionedDatasets(current="1")
    with caplog.at_level(logging.WARNING):
        r.runner(datasets=datasets).handle(QUERY_UUID)
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.store.datasets == {key("1"): NOTHING}
    assert "the scan was refused" in caplog.text


def test_a_store_that_cannot_say_what_is_known_leaves_every_value_checked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Reading the clean columns failing does not fail the export: it checks every value,
    nothing is scanned (the store is what failed), and the failure is logged."""
    r = rig(rows=1)
    r.store.clean_read_error = TransientError("Firestore is away")
    with caplog.at_level(logging.WARNING):
        r.runner(datasets=VersionedDatasets(current="1")).handle(QUERY_UUID)
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.record.run_attempts == 1
    assert r.engine.cleans == [NOTHING]
    assert r.engine.scanned == []
    assert "could not read the dataset's clean columns; every value is checked" in caplog.text


def test_after_a_long_export_the_scan_is_left_for_a_shorter_one() -> None:
    """An export that ran longer than ``LEARN_WITHIN`` does not scan (it could run out the
    function's time); the next, shorter export of the version does."""
    r = rig(rows=1)
    datasets = VersionedDatasets(current="1")
    export = r.engine.export

    def slow_export(*args: Any, **kwargs: Any) -> int:
        r.clock[0] += LEARN_WITHIN + dt.timedelta(seconds=1)  # the export took that long
        return export(*args, **kwargs)

    r.engine.export = slow_export  # type: ignore[method-assign]
    r.runner(datasets=datasets).handle(QUERY_UUID)
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.engine.scanned == []
    r.engine.export = export  # type: ignore[method-assign]
    r.store.create_export(dataclasses.replace(queued(), query_uuid=SECOND))
    r.runner(datasets=datasets).handle(SECOND)
    assert r.engine.scanned == ["/data/listings-1.parquet"]


def test_a_dataset_without_identity_is_never_scanned() -> None:
    """Nothing learnt of a dataset without an identity (a local file, a BigQuery table) could
    be kept, so it is not scanned, and every value is checked."""
    for source in ("bq://p.d.t", "/data/listings.parquet"):
        r = rig(rows=1)
        assert FixedDataset(source).open().identity is None
        r.runner(datasets=FixedDataset(source)).handle(QUERY_UUID)
        assert r.record.status is ExportStatus.SUCCEEDED
        assert r.engine.cleans == [NOTHING]
        assert r.engine.scanned == []
