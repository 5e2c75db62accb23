"""The dataset's generations as local files (``GcsDataset``) against the stack's GCS emulator.

The bucket has no object versioning (as the deployed datasets bucket), so replacing the dataset
deletes its older generation: a part planned on it must learn that the dataset changed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import storage

from dataset_export.adapters.gcs_storage import GcsDataset
from dataset_export.core.errors import DatasetChanged

pytestmark = pytest.mark.integration


@pytest.fixture
def dataset_blob(stack_env: dict[str, str]) -> Iterator[storage.Blob]:
    """A dataset object of the test's own, deleted afterwards."""
    client = storage.Client(project=stack_env["GOOGLE_CLOUD_PROJECT"])
    blob = client.bucket(stack_env["EXPORT_BUCKET"]).blob(f"datasets-itest/{uuid.uuid4()}.parquet")
    yield blob
    if blob.exists():
        blob.delete()


def uri_of(blob: storage.Blob) -> str:
    return f"gs://{blob.bucket.name}/{blob.name}"


def test_each_export_reads_the_current_generation_and_a_replaced_one_is_fetched(
    stack_env: dict[str, str], dataset_blob: storage.Blob, tmp_path: Path
) -> None:
    """``open()`` gives the generation there now as a local file; after the object is replaced
    the next ``open()`` downloads the new one (a warm instance never serves a stale copy) and the
    older file is deleted. Each generation's identity is the URI and that generation."""
    dataset_blob.upload_from_string(b"first version")
    datasets = GcsDataset(dataset_blob.client, uri_of(dataset_blob), cache_dir=str(tmp_path))
    first = datasets.open()
    assert first.version == str(dataset_blob.bucket.get_blob(dataset_blob.name).generation)
    assert first.identity == f"{uri_of(dataset_blob)}#{first.version}"
    assert Path(first.source).read_bytes() == b"first version"
    assert datasets.open() == first  # the same generation: the file this instance has
    dataset_blob.upload_from_string(b"second version")
    second = datasets.open()
    assert second.version != first.version
    assert second.identity == f"{uri_of(dataset_blob)}#{second.version}"
    assert Path(second.source).read_bytes() == b"second version"
    assert not Path(first.source).exists()


def test_a_planned_generation_is_read_while_it_exists_and_is_dataset_changed_once_gone(
    stack_env: dict[str, str], dataset_blob: storage.Blob, tmp_path: Path
) -> None:
    """An instance without the planned generation downloads it; once the object was replaced
    (the old generation deleted) asking for it raises ``DatasetChanged``, never the new bytes."""
    dataset_blob.upload_from_string(b"planned version")
    planner = GcsDataset(dataset_blob.client, uri_of(dataset_blob), cache_dir=str(tmp_path / "a"))
    planned = planner.open()
    other = GcsDataset(dataset_blob.client, uri_of(dataset_blob), cache_dir=str(tmp_path / "b"))
    fetched = other.open(planned.version)
    assert (fetched.version, fetched.identity) == (planned.version, planned.identity)
    assert Path(fetched.source).read_bytes() == b"planned version"
    dataset_blob.upload_from_string(b"replacement")
    late = GcsDataset(dataset_blob.client, uri_of(dataset_blob), cache_dir=str(tmp_path / "c"))
    with pytest.raises(DatasetChanged, match=f"generation {planned.version}") as changed:
        late.open(planned.version)
    assert dataset_blob.bucket.name not in str(changed.value)
    assert Path(other.open(planned.version).source).read_bytes() == b"planned version"


def test_a_missing_dataset_is_named(
    stack_env: dict[str, str], dataset_blob: storage.Blob, tmp_path: Path
) -> None:
    """No object at the URI: the error names it."""
    datasets = GcsDataset(dataset_blob.client, uri_of(dataset_blob), cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=dataset_blob.name):
        datasets.open()


def test_the_local_stack_uploads_a_regenerated_dataset_of_the_same_size(
    stack_env: dict[str, str], dataset_blob: storage.Blob, tmp_path: Path
) -> None:
    """The stack's process function exports the bucket's copy, so ``up`` uploads the file
    unless the object holds the same bytes: a file rewritten at the same size is uploaded."""
    from dataset_export_tools.localstack.provision import upload_if_changed

    path = tmp_path / "d.parquet"
    path.write_bytes(b"first bytes")
    project, bucket = stack_env["GOOGLE_CLOUD_PROJECT"], dataset_blob.bucket.name
    assert upload_if_changed(project, bucket, dataset_blob.name, path)
    assert not upload_if_changed(project, bucket, dataset_blob.name, path)
    path.write_bytes(b"other bytes")  # the same size
    assert upload_if_changed(project, bucket, dataset_blob.name, path)
    assert dataset_blob.bucket.get_blob(dataset_blob.name).download_as_bytes() == b"other bytes"
