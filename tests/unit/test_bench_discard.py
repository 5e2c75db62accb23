"""The bench's discard endpoint speaks the resumable upload the project's uploader sends, and
answers stat, compose, list and delete from the objects' resources alone."""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from dataset_export.adapters.gcs_storage import GcsExportStorage
from dataset_export.core.errors import ObjectMissing
from dataset_export.service.process import ObjectAlreadyExists

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from discard_gcs import DiscardGcs


@pytest.fixture
def discard() -> Iterator[DiscardGcs]:
    """A discard endpoint on a free loopback port."""
    with DiscardGcs() as server:
        yield server


def exports(server: DiscardGcs) -> GcsExportStorage:
    client = storage.Client(
        project="bench",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": server.url},
    )
    return GcsExportStorage(client, "exports")


def test_a_streamed_upload_is_answered_with_the_size_and_crc32c_of_what_arrived(
    discard: DiscardGcs,
) -> None:
    """The uploader's integrity check passes: the answer carries the sent bytes' size and CRC32C."""
    chunks = [os.urandom(300_000) for _ in range(7)]
    upload = exports(discard).open_upload("exports/a.csv.gz", metadata={"queryUUID": "a"})
    for chunk in chunks:
        upload.write(chunk)
    info = upload.commit()
    data = b"".join(chunks)
    assert info.name == "exports/a.csv.gz"
    assert info.size == len(data) == discard.stats.bytes
    assert info.crc32c == base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
    assert info.md5 is None  # not computed: the uploader does not check it
    assert discard.stats.objects == 1


def test_create_only_refuses_a_name_already_finalized(discard: DiscardGcs) -> None:
    """A second create-only upload of the same name meets the precondition, as on GCS."""
    storage_ = exports(discard)
    first = storage_.open_upload("exports/b.csv.gz", metadata={})
    first.write(b"rows")
    first.commit()
    second = storage_.open_upload("exports/b.csv.gz", metadata={})
    second.write(b"rows")
    with pytest.raises(ObjectAlreadyExists):
        second.commit()


def test_an_aborted_upload_finalizes_nothing(discard: DiscardGcs) -> None:
    """Breaking the body off and cancelling leaves no object and no open session."""
    upload = exports(discard).open_upload("exports/c.csv.gz", metadata={})
    upload.write(b"x" * 100_000)
    upload.abort()
    assert discard.stats.objects == 0
    assert discard._server.sessions == {}
    again = exports(discard).open_upload("exports/c.csv.gz", metadata={})
    again.write(b"y")
    assert again.commit().size == 1  # the name was never taken


def _crc(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def _put(storage_: GcsExportStorage, name: str, data: bytes) -> None:
    upload = storage_.open_upload(name, metadata={"queryUUID": "p"})
    upload.write(data)
    upload.commit()


def test_compose_answers_the_concatenations_size_and_crc32c_without_the_bytes(
    discard: DiscardGcs,
) -> None:
    """A composite of kept resources has the sources' total size and the crc32c of their bytes."""
    storage_ = exports(discard)
    pieces = [os.urandom(1000 + 37 * i) for i in range(5)]
    for i, piece in enumerate(pieces):
        _put(storage_, f"tmp/p/part-{i:05d}-a1", piece)
    names = [f"tmp/p/part-{i:05d}-a1" for i in range(5)]
    first = storage_.compose(names[:3], "tmp/p/c0", metadata={"queryUUID": "p"})
    info = storage_.compose(["tmp/p/c0", *names[3:]], "exports/p.csv.gz", metadata={})
    assert first.size == sum(len(p) for p in pieces[:3])
    assert info.size == sum(len(p) for p in pieces)
    assert info.crc32c == _crc(b"".join(pieces))
    assert info.md5 is None
    assert storage_.stat("exports/p.csv.gz") == info
    assert discard.stats.composes == 2


def test_compose_is_create_only_and_refuses_a_missing_source(discard: DiscardGcs) -> None:
    """A composite's name already taken answers 412, a source not there 404, as on GCS."""
    storage_ = exports(discard)
    _put(storage_, "tmp/q/a", b"aaa")
    storage_.compose(["tmp/q/a"], "tmp/q/out", metadata={})
    with pytest.raises(ObjectAlreadyExists):
        storage_.compose(["tmp/q/a"], "tmp/q/out", metadata={})
    with pytest.raises(ObjectMissing):
        storage_.compose(["tmp/q/a", "tmp/q/gone"], "tmp/q/other", metadata={})


def test_list_and_conditional_delete_see_the_kept_objects(discard: DiscardGcs) -> None:
    """Listing a prefix names its objects in order; delete honours the generation it is given."""
    storage_ = exports(discard)
    for name in ("tmp/r/b", "tmp/r/a", "tmp/s/a"):
        _put(storage_, name, name.encode())
    listed = storage_.list("tmp/r/")
    assert [i.name for i in listed] == ["tmp/r/a", "tmp/r/b"]
    assert listed[0].generation is not None
    assert storage_.delete("tmp/r/a", if_generation=listed[0].generation + 1) is False
    assert storage_.delete("tmp/r/a", if_generation=listed[0].generation) is True
    assert storage_.delete("tmp/r/a") is False
    assert storage_.stat("tmp/r/a") is None
    assert [i.name for i in storage_.list("tmp/")] == ["tmp/r/b", "tmp/s/a"]
