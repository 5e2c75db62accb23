"""The streamed resumable upload, over a fake HTTP transport (the emulator tests cover GCS)."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterable
from typing import Any

import google_crc32c
import pytest
import requests
from google.api_core import exceptions as gexc

from dataset_export.adapters.gcs_storage import BytePipe, GcsUpload
from dataset_export.core.errors import ObjectAlreadyExists, TransientError, UploadAborted

SESSION = "https://storage.example/upload/storage/v1/b/exports/o?upload_id=abc"


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


class FakeResponse:
    def __init__(self, status_code: int, resource: dict[str, Any] | None = None) -> None:
        self.status_code = status_code
        self._resource = resource or {}
        self.headers: dict[str, str] = {}
        self.text = ""
        self.request = None

    def json(self) -> dict[str, Any]:
        return self._resource


class FakeTransport:
    """Reads the streamed body like a server would; can drop the connection or answer badly."""

    def __init__(
        self,
        *,
        status: int = 200,
        drop_after_chunks: int | None = None,
        corrupt: bool = False,
    ) -> None:
        self.status = status
        self.drop_after_chunks = drop_after_chunks
        self.corrupt = corrupt
        self.received = bytearray()
        self.chunks = 0
        self.body_error: BaseException | None = None
        self.headers: dict[str, str] = {}
        self.deleted: list[str] = []

    def put(self, url: str, *, data: Iterable[bytes], headers: dict[str, str], timeout: Any) -> Any:
        assert url == SESSION
        self.headers = headers
        try:
            for chunk in data:
                self.received += chunk
                self.chunks += 1
                if self.drop_after_chunks is not None and self.chunks >= self.drop_after_chunks:
                    raise requests.ConnectionError("connection reset by peer")
        except UploadAborted as exc:
            self.body_error = exc
            raise
        body = bytes(self.received) + (b"x" if self.corrupt else b"")
        return FakeResponse(
            self.status,
            {
                "name": "exports/q.csv.gz",
                "size": str(len(body)),
                "crc32c": crc32c_b64(body),
                "md5Hash": "bWQ1",
                "generation": "17",
            },
        )

    def delete(self, url: str, *, timeout: Any) -> Any:
        self.deleted.append(url)
        return FakeResponse(499)


class FakeBlob:
    name = "exports/q.csv.gz"

    def __init__(self, *, exists: bool = False) -> None:
        self.exists = exists
        self.sessions: list[dict[str, Any]] = []
        self.bucket = self
        self.deleted_generations: list[int | None] = []

    def create_resumable_upload_session(self, **kwargs: Any) -> str:
        self.sessions.append(kwargs)
        if self.exists:
            raise gexc.PreconditionFailed("At least one of the pre-conditions did not hold.")
        return SESSION

    def blob(self, name: str) -> FakeBlob:
        assert name == self.name
        return self

    def delete(self, *, if_generation_match: int | None) -> None:
        self.deleted_generations.append(if_generation_match)


def test_writes_go_out_as_one_streamed_body_and_commit_reports_the_object() -> None:
    """Every write reaches one PUT of unknown length; commit returns the object's metadata."""
    blob, transport = FakeBlob(), FakeTransport()
    upload = GcsUpload(blob, transport, buffer_bytes=64)
    parts = [bytes([i]) * (10 + i) for i in range(50)]
    for part in parts:
        upload.write(part)
    info = upload.commit()
    assert bytes(transport.received) == b"".join(parts)
    assert transport.headers["Content-Range"] == "bytes 0-*/*"
    assert transport.headers["Content-Type"] == "application/gzip"
    assert blob.sessions == [{"content_type": "application/gzip", "if_generation_match": 0}]
    assert info.size == sum(map(len, parts))
    assert info.crc32c == crc32c_b64(b"".join(parts))
    assert info.md5 == "bWQ1"
    assert info.generation == 17
    assert upload.sent_bytes == info.size


def test_no_session_is_opened_before_the_first_write() -> None:
    """An export that fails before writing anything costs no upload session."""
    blob, transport = FakeBlob(), FakeTransport()
    upload = GcsUpload(blob, transport)
    upload.abort()
    assert blob.sessions == []
    assert transport.deleted == []


def test_an_existing_object_at_session_start_is_reported_at_commit() -> None:
    """A precondition failure when the session opens becomes ObjectAlreadyExists at commit."""
    blob, transport = FakeBlob(exists=True), FakeTransport()
    upload = GcsUpload(blob, transport)
    upload.write(b"abc")
    upload.write(b"def")
    with pytest.raises(ObjectAlreadyExists):
        upload.commit()
    assert transport.received == b""


def test_an_existing_object_at_finalize_is_reported_at_commit() -> None:
    """A 412 on the final response becomes ObjectAlreadyExists."""
    upload = GcsUpload(FakeBlob(), FakeTransport(status=412))
    upload.write(b"abc")
    with pytest.raises(ObjectAlreadyExists):
        upload.commit()


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_retryable_final_status_is_transient(status: int) -> None:
    """A 5xx or 429 when the object is finalized raises TransientError (Pub/Sub redelivers)."""
    upload = GcsUpload(FakeBlob(), FakeTransport(status=status))
    upload.write(b"abc")
    with pytest.raises(TransientError, match="finishing the upload"):
        upload.commit()


def test_a_client_error_at_finalize_is_not_retried() -> None:
    """A 403 on the final response is raised as Google's own error, not as a transient one."""
    upload = GcsUpload(FakeBlob(), FakeTransport(status=403))
    upload.write(b"abc")
    with pytest.raises(gexc.Forbidden):
        upload.commit()


def write_many(upload: GcsUpload, count: int) -> None:
    for _ in range(count):
        upload.write(b"abcd")


def test_a_dropped_connection_fails_the_next_write() -> None:
    """Once the request has died, the writer gets TransientError instead of blocking."""
    upload = GcsUpload(FakeBlob(), FakeTransport(drop_after_chunks=2), buffer_bytes=4)
    with pytest.raises(TransientError, match="connection ended"):
        write_many(upload, 1000)


def test_a_connection_dropped_at_the_end_fails_the_commit() -> None:
    """A request that dies with the last chunk fails the commit; abort cancels the session."""
    transport = FakeTransport(drop_after_chunks=1)
    upload = GcsUpload(FakeBlob(), transport)
    upload.write(b"abcd")
    with pytest.raises(TransientError, match="ConnectionError"):
        upload.commit()
    upload.abort()
    assert transport.deleted == [SESSION]


def test_abort_breaks_the_body_instead_of_ending_it_and_cancels_the_session() -> None:
    """Abort makes the body raise, so the server never sees a complete upload."""
    blob, transport = FakeBlob(), FakeTransport()
    upload = GcsUpload(blob, transport)
    upload.write(b"partial export")
    upload.abort()
    assert isinstance(transport.body_error, UploadAborted)
    assert transport.deleted == [SESSION]


def test_abort_after_a_successful_commit_changes_nothing() -> None:
    """A finished object is never cancelled."""
    transport = FakeTransport()
    upload = GcsUpload(FakeBlob(), transport)
    upload.write(b"abc")
    upload.commit()
    upload.abort()
    assert transport.deleted == []


def test_an_object_that_differs_from_what_was_sent_is_deleted_and_retried() -> None:
    """A size or crc32c mismatch deletes that generation and raises TransientError."""
    blob = FakeBlob()
    upload = GcsUpload(blob, FakeTransport(corrupt=True))
    upload.write(b"abc")
    with pytest.raises(TransientError, match="does not match what was sent"):
        upload.commit()
    assert blob.deleted_generations == [17]


def test_pipe_blocks_the_writer_while_its_buffer_is_full() -> None:
    """A slow reader holds the writer back once ``limit`` bytes wait."""
    pipe = BytePipe(limit=8)
    pipe.put(b"12345678")
    done = threading.Event()

    def writer() -> None:
        pipe.put(b"9")
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.05)
    assert not done.is_set()
    chunks = iter(pipe)
    assert next(chunks) == b"12345678"
    thread.join(timeout=5)
    assert done.is_set()
    pipe.close()
    assert list(chunks) == [b"9"]


def test_pipe_lets_one_oversized_chunk_through() -> None:
    """A chunk larger than the limit is accepted when nothing else waits (no deadlock)."""
    pipe = BytePipe(limit=4)
    pipe.put(b"0123456789")
    pipe.close()
    assert list(pipe) == [b"0123456789"]


def test_pipe_refuses_writes_once_the_reader_has_finished() -> None:
    """After the request ended, ``put`` raises instead of blocking for ever."""
    pipe = BytePipe(limit=4)
    pipe.put(b"1234")
    pipe.reader_finished(requests.ConnectionError("reset"))
    with pytest.raises(TransientError, match="connection ended"):
        pipe.put(b"5")
