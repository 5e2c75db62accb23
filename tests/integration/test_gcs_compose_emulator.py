"""Compose, list and delete against the stack's GCS emulator (fake-gcs-server v1.54).

The emulator differs from Cloud Storage in four ways these tests keep clear of (the unit tests in
tests/unit/test_gcs_compose.py check those paths against Cloud Storage's answers): it ignores
ifGenerationMatch on compose (so nothing here composes onto an existing object), returns an MD5
for a composite and no componentCount (so no MD5 is read from it), answers 500 where Cloud Storage
answers 404 for a missing source (so every source exists), and ignores ifGenerationMatch and
generation on delete, deleting the live object (so no stale-generation delete is sent).
"""

from __future__ import annotations

import gzip
import random
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import google_crc32c
import pytest
from google.api_core import exceptions as gexc
from google.cloud import storage

from dataset_export.adapters.gcs_storage import GcsExportStorage
from dataset_export.core.checksums import combined_crc32c, crc32c_to_gcs
from dataset_export.core.compose import compose_steps, intermediates
from dataset_export.service.ports import ObjectInfo

pytestmark = pytest.mark.integration


@pytest.fixture
def exports(stack_env: dict[str, str]) -> GcsExportStorage:
    """The adapter on the stack's exports bucket."""
    client = storage.Client(project=stack_env["GOOGLE_CLOUD_PROJECT"])
    return GcsExportStorage(client, stack_env["EXPORT_BUCKET"])


@pytest.fixture
def prefix(exports: GcsExportStorage) -> Iterator[str]:
    """A fresh temporary folder, emptied afterwards whatever the test left."""
    folder = f"tmp/{uuid.uuid4()}/"
    yield folder
    for info in exports.list(folder):
        exports.delete(info.name)


def upload(exports: GcsExportStorage, name: str, data: bytes) -> ObjectInfo:
    """One object through the project's own streamed upload."""
    target = exports.open_upload(name, metadata={})
    target.write(data)
    return target.commit()


def rows(index: int, rng: random.Random) -> bytes:
    """Part ``index``'s CSV rows: some parts hold none, the others up to a few thousand."""
    count = 0 if index % 17 == 5 else rng.randrange(1, 3000)
    return b"".join(f"{index},{i},{rng.random()!r}\n".encode() for i in range(count))


def test_seventy_gzip_members_compose_in_two_rounds_into_one_gzip_file(
    exports: GcsExportStorage, prefix: str, stack_env: dict[str, str]
) -> None:
    """70 parts compose, in order, into one gzip file whose crc32c the parts' crc32c predict."""
    rng = random.Random(70)
    plain = [rows(i, rng) for i in range(70)]
    names = [f"{prefix}part-{i:05d}" for i in range(70)]
    with ThreadPoolExecutor(8) as pool:
        parts = list(pool.map(lambda n, p: upload(exports, n, gzip.compress(p, 1)), names, plain))
    final = f"exports/{prefix.split('/')[1]}.csv.gz"
    plan = compose_steps(names, final, prefix)
    assert [len(steps) for steps in plan] == [2, 1]

    made: dict[str, ObjectInfo] = {p.name: p for p in parts}
    for steps in plan:  # the steps of one round run in parallel, as the composer runs them
        with ThreadPoolExecutor(len(steps)) as pool:
            results = pool.map(
                lambda s: exports.compose(s.sources, s.destination, metadata={"queryUUID": "q"}),
                steps,
            )
            for step, info in zip(steps, results, strict=True):
                expected = combined_crc32c(
                    [(made[s].crc32c or "", made[s].size) for s in step.sources]
                )
                assert info.crc32c == expected, step.destination
                assert info.size == sum(made[s].size for s in step.sources)
                assert info.md5 is None  # dropped: the emulator sends one, GCS does not
                assert info.generation
                made[step.destination] = info

    composite = made[final]
    assert composite.crc32c == combined_crc32c([(p.crc32c or "", p.size) for p in parts])
    blob = (
        storage.Client(project=stack_env["GOOGLE_CLOUD_PROJECT"])
        .bucket(stack_env["EXPORT_BUCKET"])
        .get_blob(final)
    )
    assert blob is not None
    assert (blob.content_type, blob.content_encoding) == ("application/gzip", None)
    assert blob.content_disposition == f'attachment; filename="{final.rsplit("/", 1)[1]}"'
    assert blob.metadata == {"queryUUID": "q"}
    data = blob.download_as_bytes()
    assert crc32c_to_gcs(google_crc32c.value(data)) == composite.crc32c
    assert gzip.decompress(data) == b"".join(plain)  # every member, in order
    # What the README warns customers of: one zlib decompressobj stops after the first member.
    assert zlib.decompressobj(wbits=31).decompress(data) == plain[0]

    scratch = intermediates(plan)
    listed = exports.list(prefix)
    assert [i.name for i in listed] == sorted(names + scratch)
    assert {i.name: i.generation for i in listed} == {
        n: made[n].generation for n in names + scratch
    }

    for info in listed:
        assert exports.delete(info.name, if_generation=info.generation) is True
    assert exports.delete(names[0]) is False  # gone already: the emulator's 404
    assert exports.list(prefix) == []
    assert exports.delete(final, if_generation=composite.generation) is True
    assert exports.stat(final) is None


def test_the_emulator_refuses_a_compose_of_33_sources(
    exports: GcsExportStorage, prefix: str
) -> None:
    """33 sources in one call are refused (GCS's 32-source limit), and nothing is created."""
    names = [f"{prefix}part-{i:05d}" for i in range(33)]
    for name in names:
        upload(exports, name, gzip.compress(name.encode()))
    destination = f"{prefix}too-many"
    with pytest.raises(gexc.BadRequest, match="32"):
        exports.compose(names, destination, metadata={})
    assert exports.stat(destination) is None
    sizes = [info.size for info in exports.list(prefix)]
    assert exports.compose(names[:32], destination, metadata={}).size == sum(sizes[:32])
