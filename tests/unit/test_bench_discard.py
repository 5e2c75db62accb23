"""The bench's discard endpoint speaks the resumable upload the project's uploader sends."""

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
