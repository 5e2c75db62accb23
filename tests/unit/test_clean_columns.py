"""What the runner learns of a dataset version (its clean columns) and hands the engine."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from dataset_export.adapters.datasets import FixedDataset
from dataset_export.core.errors import TransientError
from dataset_export.core.records import ExportStatus
from tests.fakes import VersionedDatasets
from tests.unit.test_parts_runner import QUERY_UUID, queued, rig

NOTHING: frozenset[str] = frozenset()
CITY = frozenset({"city"})


def test_the_first_export_of_a_version_scans_it_and_later_ones_use_what_it_found() -> None:
    """The export that meets a dataset version first renders every field checked, and its
    runner then scans the version (after telling notify) and keeps the answer under the
    version's identity; the next export of that version is handed the clean columns and
    scans nothing."""
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
    assert r.store.datasets == {"gs://d/l#1": CITY}

    second = "7b4f2c1e-0000-4000-8000-0000000000bb"
    r.store.create_export(dataclasses.replace(queued(), query_uuid=second))
    r.runner(datasets=datasets).handle(second)
    assert r.store.exports[second].status is ExportStatus.SUCCEEDED
    assert r.engine.cleans == [NOTHING, CITY]
    assert len(r.engine.scanned) == 1


def test_a_new_version_is_scanned_again() -> None:
    """What was learnt of one version is never used for another: a replaced dataset's first
    export renders checked and scans the new version."""
    r = rig(rows=1)
    datasets = VersionedDatasets(current="1")
    r.store.keep_clean_columns("gs://d/l#1", CITY, r.clock[0])
    datasets.current = "2"
    r.runner(datasets=datasets).handle(QUERY_UUID)
    assert r.engine.cleans == [NOTHING]
    assert r.engine.scanned == ["/data/listings-2.parquet"]
    assert set(r.store.datasets) == {"gs://d/l#1", "gs://d/l#2"}


def test_every_part_is_handed_the_clean_columns_the_plan_recorded() -> None:
    """A plan records the clean columns known when it was made; each part renders with those,
    whatever is learnt or kept meanwhile, so the parts of one file agree."""
    r = rig(rows=10)
    datasets = VersionedDatasets(current="1")
    r.store.keep_clean_columns("gs://d/l#1", CITY, r.clock[0])
    r.runner(datasets=datasets).handle(QUERY_UUID)
    assert r.record.clean_columns == CITY
    r.store.datasets.clear()  # forgotten (TTL) while the parts run
    r.run_parts(r.runner("w-parts", datasets=datasets))
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.engine.cleans == [CITY] * r.record.parts_total


def test_a_plan_made_before_the_version_was_scanned_has_its_parts_check_every_field() -> None:
    """The planner hands an unscanned version to the parts with no clean column, and scans it
    once the part messages are out."""
    r = rig(rows=10)
    datasets = VersionedDatasets(current="1")
    r.runner(datasets=datasets).handle(QUERY_UUID)
    assert r.record.clean_columns == NOTHING
    assert len(r.parts.published) == r.record.parts_total > 1
    assert r.engine.scanned == ["/data/listings-1.parquet"]
    r.run_parts(r.runner("w-parts", datasets=datasets))
    assert r.engine.cleans == [NOTHING] * r.record.parts_total
    assert len(r.engine.scanned) == 1


def test_a_failed_scan_is_logged_and_leaves_the_export_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The scan only makes later exports faster: when it fails, the export stays succeeded,
    the message is acknowledged, nothing is kept, and the next export scans again."""
    r = rig(rows=1, record=queued())
    r.engine.clean_found = TransientError("the disk went away")
    datasets = VersionedDatasets(current="1")
    with caplog.at_level(logging.WARNING):
        r.runner(datasets=datasets).handle(QUERY_UUID)
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.ready.published == [QUERY_UUID]
    assert r.store.datasets == {}
    assert "could not learn the dataset's clean columns: the disk went away" in caplog.text


def test_a_dataset_without_identity_is_never_scanned() -> None:
    """Nothing learnt of a dataset without an identity (a BigQuery table, an unreadable file)
    could be kept, so it is not scanned, and every field is checked."""
    r = rig(rows=1)
    r.runner(datasets=FixedDataset("bq://p.d.t")).handle(QUERY_UUID)
    assert r.record.status is ExportStatus.SUCCEEDED
    assert r.engine.cleans == [NOTHING]
    assert r.engine.scanned == []


def test_a_local_files_identity_changes_when_it_is_rewritten(tmp_path: Path) -> None:
    """A local file's identity names the file and its state: the same while untouched, another
    once rewritten; a missing file and a BigQuery table have none."""
    path = tmp_path / "d.parquet"
    path.write_bytes(b"one")
    first = FixedDataset(str(path)).open()
    assert first.identity is not None
    assert str(path) in first.identity
    assert first.version is None
    assert FixedDataset(str(path)).open() == first
    replacement = tmp_path / "new.parquet"
    replacement.write_bytes(b"one")
    replacement.replace(path)
    assert FixedDataset(str(path)).open().identity != first.identity
    assert FixedDataset(str(tmp_path / "missing.parquet")).open().identity is None
    assert FixedDataset("bq://p.d.t").open().identity is None
