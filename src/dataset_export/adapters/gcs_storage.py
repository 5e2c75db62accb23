"""Cloud Storage: the exports bucket (one streamed resumable upload that never leaves a partial
object; create-only compose, conditional delete and listing for exports written as parts),
short-lived V4 signed download URLs, and the Parquet dataset's generations as local files.
"""

from __future__ import annotations

import base64
import builtins
import datetime as dt
import json
import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import google_crc32c
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.cloud.storage.retry import DEFAULT_RETRY

from ..core.errors import (
    DatasetChanged,
    ObjectAlreadyExists,
    ObjectMissing,
    TransientError,
    UploadAborted,
    public_detail,
)
from ..service.ports import DatasetFile, ObjectInfo
from .errors import google_errors

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/gzip"
# Compressed bytes waiting for the connection; a slower connection slows the export instead of
# growing memory.
DEFAULT_BUFFER_BYTES = 8 * 1024 * 1024
# (connect, read): read also bounds how long the server may take to finalize after the last byte.
_PUT_TIMEOUT = (30.0, 300.0)


def _is_precondition_failure(exc: BaseException) -> bool:
    if isinstance(exc, gexc.PreconditionFailed):
        return True
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) == 412


class BytePipe:
    """Bytes handed from the export's writer thread to the request that streams them.

    ``put`` blocks while ``limit`` bytes wait (one oversized chunk is let through so nothing
    deadlocks). Iterating yields the chunks until ``close``; after ``fail`` the iterator raises
    that exception instead of ending, and after ``reader_finished`` ``put`` raises.
    """

    def __init__(self, limit: int = DEFAULT_BUFFER_BYTES) -> None:
        self._chunks: deque[bytes] = deque()
        self._waiting = 0
        self._limit = limit
        self._cond = threading.Condition()
        self._closed = False
        self._failure: BaseException | None = None
        self._reader_error: BaseException | None = None
        self._reader_done = False
        self.sent_bytes = 0
        self.crc32c = google_crc32c.Checksum()  # type: ignore[no-untyped-call]

    def put(self, data: bytes) -> None:
        """Queue ``data`` for the request; raise if the request has already ended."""
        with self._cond:
            while (
                self._waiting and self._waiting + len(data) > self._limit and not self._reader_done
            ):
                self._cond.wait()
            if self._reader_done:
                raise TransientError(
                    "the upload connection ended before the export did"
                ) from self._reader_error
            self._chunks.append(data)
            self._waiting += len(data)
            self._cond.notify_all()

    def close(self) -> None:
        """No more data: the request body ends once the queue is drained."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def fail(self, exc: BaseException) -> None:
        """Make the request body raise ``exc`` instead of ending."""
        with self._cond:
            self._failure = exc
            self._cond.notify_all()

    def reader_finished(self, error: BaseException | None) -> None:
        """The request is over (with ``error`` if it failed); wake and refuse producers."""
        with self._cond:
            self._reader_done = True
            self._reader_error = error
            self._cond.notify_all()

    def __iter__(self) -> Iterator[bytes]:
        while True:
            with self._cond:
                while not self._chunks and not self._closed and self._failure is None:
                    self._cond.wait()
                if self._failure is not None:
                    raise self._failure
                if not self._chunks:
                    return
                data = self._chunks.popleft()
                self._waiting -= len(data)
                self._cond.notify_all()
            self.crc32c.update(data)  # type: ignore[no-untyped-call]
            self.sent_bytes += len(data)
            yield data


class GcsUpload:
    """One resumable upload sent as a single streamed PUT while the export is being written.

    The session is opened at the first write and the body is fed through a bounded ``BytePipe``,
    so memory stays flat and each byte crosses the network once. (Chunked uploads must hold a
    whole chunk in memory, and fake-gcs-server re-hashes the entire object on every chunk.) The
    PUT says ``Content-Range: bytes 0-*/*``: size unknown, the object is final when the body ends
    (Google's Node.js client streams the same way). ``abort`` makes the body raise, which drops
    the connection before the body's end, and cancels the session: no partial object can appear.
    A connection lost mid-way fails the export with a ``TransientError``; Pub/Sub's redelivery
    runs it again from the start.
    """

    def __init__(self, blob: Any, transport: Any, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES):
        self._blob = blob
        self._transport = transport
        self._pipe = BytePipe(buffer_bytes)
        self._session_url: str | None = None
        self._exists = False
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self._error: BaseException | None = None
        self._finished = False

    @property
    def sent_bytes(self) -> int:
        """Bytes handed to the connection so far."""
        return self._pipe.sent_bytes

    def write(self, data: bytes, /) -> int:
        """Append bytes to the request body (blocks while the buffer is full)."""
        if self._thread is None and not self._exists:
            self._start()
        if not self._exists:  # an earlier run's object is there: nothing to send
            self._pipe.put(bytes(data))
        return len(data)

    def commit(self) -> ObjectInfo:
        """End the body and return the object's metadata.

        Raises ``ObjectAlreadyExists`` when an earlier run already made the object.
        """
        if self._thread is None and not self._exists:
            self._start()
        if self._exists:
            raise ObjectAlreadyExists(self._blob.name)
        assert self._thread is not None
        self._pipe.close()
        self._thread.join()
        if isinstance(self._error, (requests.RequestException, OSError)):
            # Only the type: the message of a connection error holds the session URL, which
            # lets anyone holding it write the object.
            raise TransientError(f"uploading the export failed: {type(self._error).__name__}")
        if self._error is not None:
            raise self._error
        response = self._response
        if response.status_code == 412:
            raise ObjectAlreadyExists(self._blob.name)
        if response.status_code not in (200, 201):
            with google_errors("finishing the upload"):
                raise _status_error(response)
        self._finished = True
        resource = response.json()
        info = _info_from_resource(resource)
        self._check_integrity(info)
        return info

    def abort(self) -> None:
        """Give the upload up: break the request mid-body and cancel the session."""
        if self._finished:
            return
        self._pipe.fail(UploadAborted("export aborted"))
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._session_url is None:
            return
        # An unfinished session also expires on its own (a week), so a failed cancel is logged.
        try:
            self._transport.delete(self._session_url, timeout=_PUT_TIMEOUT)
        except Exception as exc:
            log.warning("could not cancel the resumable upload: %s", type(exc).__name__)

    def _start(self) -> None:
        try:
            with google_errors("starting the upload"):
                # ifGenerationMatch=0: create only, so a retried export never replaces a file.
                self._session_url = self._blob.create_resumable_upload_session(
                    content_type=CONTENT_TYPE, if_generation_match=0
                )
        except Exception as exc:
            if _is_precondition_failure(exc) or _is_precondition_failure(exc.__cause__ or exc):
                self._exists = True
                return
            raise
        self._thread = threading.Thread(target=self._send, name="gcs-upload", daemon=True)
        self._thread.start()

    def _send(self) -> None:
        error: BaseException | None = None
        try:
            self._response = self._transport.put(
                self._session_url,
                data=iter(self._pipe),
                headers={"Content-Range": "bytes 0-*/*", "Content-Type": CONTENT_TYPE},
                timeout=_PUT_TIMEOUT,
            )
        except BaseException as exc:  # handed to the writer through the pipe and commit
            error = exc
            self._error = exc
        finally:
            self._pipe.reader_finished(error)

    def _check_integrity(self, info: ObjectInfo) -> None:
        # The body was streamed, so no hash could go with it; compare what arrived instead.
        sent = base64.b64encode(self._pipe.crc32c.digest()).decode("ascii")  # type: ignore[no-untyped-call]
        if info.size == self._pipe.sent_bytes and info.crc32c in (None, sent):
            return
        try:
            self._blob.bucket.blob(info.name).delete(if_generation_match=info.generation)
        except Exception as exc:
            log.warning("could not delete a corrupted upload: %s", type(exc).__name__)
        raise TransientError(
            f"the uploaded object does not match what was sent ({info.size} bytes, crc32c "
            f"{info.crc32c}; sent {self._pipe.sent_bytes} bytes, crc32c {sent})"
        )


def _status_error(response: Any) -> gexc.GoogleAPICallError:
    """Google's exception for an upload response, without the session URL in its message."""
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = "no error message"
    error: gexc.GoogleAPICallError = gexc.from_http_status(  # type: ignore[no-untyped-call]
        response.status_code, f"upload of the export answered: {message[:300]}"
    )
    return error


def _content_disposition(name: str) -> str:
    """Served as the .gz file itself, under the object's last path segment."""
    return f'attachment; filename="{name.rsplit("/", 1)[-1]}"'


# Composite objects have no MD5 on Cloud Storage (they carry componentCount instead), so a
# composite's md5 is None here even where an emulator reports one (fake-gcs-server v1.54 does,
# and sets no componentCount: on it only ``compose`` itself can tell).
def _info(blob: Any, *, composite: bool = False) -> ObjectInfo:
    return ObjectInfo(
        name=blob.name,
        size=int(blob.size),
        crc32c=blob.crc32c,
        md5=None if composite or blob.component_count else blob.md5_hash,
        generation=blob.generation,
    )


def _info_from_resource(resource: dict[str, Any]) -> ObjectInfo:
    """``ObjectInfo`` from the object resource the final upload response carries."""
    generation = resource.get("generation")
    return ObjectInfo(
        name=str(resource["name"]),
        size=int(resource["size"]),
        crc32c=resource.get("crc32c"),
        md5=None if resource.get("componentCount") else resource.get("md5Hash"),
        generation=int(generation) if generation else None,
    )


class GcsExportStorage:
    """``ExportStorage`` on one bucket.

    ``retry`` is the client library's policy for compose, delete and list (its default: 429, 5xx
    and dropped connections, with backoff, for up to 120 s). A compose is safe to retry because
    it is create-only: if a first attempt did land, the retry meets the precondition.
    """

    def __init__(self, client: Any, bucket: str, *, retry: Retry | None = DEFAULT_RETRY) -> None:
        self._bucket = client.bucket(bucket)
        # The client's own authorized session (what Blob methods send through) carries the PUT.
        self._transport = client._http
        self._retry = retry

    def open_upload(self, name: str, *, metadata: dict[str, str]) -> GcsUpload:
        """An upload of ``name``; its session opens at the first write."""
        blob = self._bucket.blob(name)
        blob.metadata = metadata
        # Served as the .gz file itself: no Content-Encoding, so nothing transcodes it.
        blob.content_disposition = _content_disposition(name)
        return GcsUpload(blob, self._transport)

    def stat(self, name: str) -> ObjectInfo | None:
        """The object's size, checksums and generation, or None."""
        with google_errors("reading object metadata"):
            blob = self._bucket.get_blob(name)
        return None if blob is None else _info(blob)

    def compose(
        self, sources: Sequence[str], destination: str, *, metadata: dict[str, str]
    ) -> ObjectInfo:
        """Compose ``sources``, in order, into ``destination``, create-only.

        The composite is stored like an upload (``application/gzip``, no Content-Encoding, the
        same Content-Disposition) with ``metadata``. Raises ``ObjectAlreadyExists`` when
        ``destination`` is already there (412) and ``ObjectMissing`` when a source is not (404).
        Cloud Storage refuses more than 32 sources (``core.compose`` plans the rounds).
        """
        blob = self._bucket.blob(destination)
        blob.content_type = CONTENT_TYPE
        blob.content_disposition = _content_disposition(destination)
        blob.metadata = metadata
        try:
            with google_errors(f"composing {destination}"):
                blob.compose(
                    [self._bucket.blob(name) for name in sources],
                    if_generation_match=0,
                    retry=self._retry,
                )
        except gexc.PreconditionFailed as exc:
            raise ObjectAlreadyExists(destination) from exc
        except gexc.NotFound as exc:
            raise ObjectMissing(
                f"composing {destination}: one of its {len(sources)} sources is not in the "
                f"bucket ({public_detail(str(exc.message))})"
            ) from exc
        return _info(blob, composite=True)

    def delete(self, name: str, *, if_generation: int | None = None) -> bool:
        """Delete ``name`` (only while it is generation ``if_generation``, when given).

        False when it was not there: a 404, or a 412 (that generation is gone, replaced or
        deleted). A retried delete whose first attempt landed also answers False.
        """
        try:
            with google_errors(f"deleting {name}"):
                self._bucket.delete_blob(name, if_generation_match=if_generation, retry=self._retry)
        except (gexc.NotFound, gexc.PreconditionFailed):
            return False
        return True

    def list(self, prefix: str) -> builtins.list[ObjectInfo]:
        """Every object whose name starts with ``prefix``, in name order (all pages)."""
        with google_errors(f"listing {prefix}"):
            return [
                _info(blob) for blob in self._bucket.list_blobs(prefix=prefix, retry=self._retry)
            ]


class UrlSigner:
    """Short-lived V4 signed GET URLs for export objects.

    Locally (and wherever a key file is given) it signs with that service-account key; on Google
    Cloud it signs through IAM signBlob with the function's own identity, so no key file exists.
    """

    def __init__(
        self, client: Any, bucket: str, *, key_file: str | None = None, endpoint: str | None = None
    ) -> None:
        self._bucket = client.bucket(bucket)
        self._key_file = key_file
        self._endpoint = endpoint
        self._credentials: Any = None

    def _signing_kwargs(self) -> dict[str, Any]:
        if self._key_file:
            if self._credentials is None:
                from google.oauth2 import service_account

                info = json.loads(Path(self._key_file).read_text("utf-8"))
                self._credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    info
                )
            return {"credentials": self._credentials}
        import google.auth
        import google.auth.transport.requests

        if self._credentials is None:
            self._credentials, _ = google.auth.default()
        if not self._credentials.valid:
            self._credentials.refresh(google.auth.transport.requests.Request())
        return {
            "service_account_email": self._credentials.service_account_email,
            "access_token": self._credentials.token,
        }

    def sign(self, name: str, lifetime: dt.timedelta) -> str:
        """A V4 signed URL for GET of ``name``, valid for ``lifetime``."""
        kwargs = self._signing_kwargs()
        if self._endpoint:
            kwargs["api_access_endpoint"] = self._endpoint
        with google_errors("signing the download URL"):
            url: str = self._bucket.blob(name).generate_signed_url(
                version="v4", expiration=lifetime, method="GET", **kwargs
            )
        return url


class GcsDataset:
    """``Datasets`` for the Parquet dataset at ``gs://bucket/name``, as local files.

    DuckDB's httpfs extension cannot be installed offline, and a local file lets DuckDB prune
    row groups with random reads, so each generation is downloaded once per instance and reused.
    ``open()`` asks for the current generation on every export (one metadata read), so a
    replaced dataset is what the next export reads; ``open(version)`` is the generation a plan
    counted, for its parts: that file when this instance has it, else that generation
    downloaded, and ``DatasetChanged`` once it is gone (replaced, without object versioning).
    Older generations' files are deleted when a newer one arrives: the instance's disk is its
    memory.
    """

    def __init__(self, client: Any, uri: str, cache_dir: str | None = None) -> None:
        if not uri.startswith("gs://"):
            raise ValueError(f"not a gs:// URI: {uri!r}")
        self._uri = uri
        self._bucket_name, _, self._name = uri[5:].partition("/")
        self._bucket = client.bucket(self._bucket_name)
        self._folder = Path(cache_dir or tempfile.gettempdir()) / "dataset-export-cache"
        self._stem = f"{self._bucket_name}-{self._name.replace('/', '_')}-"
        self._lock = threading.Lock()

    def open(self, version: str | None = None) -> DatasetFile:
        """The dataset's current generation, or generation ``version``, as a local file."""
        if version is not None and self._path(version).exists():
            return DatasetFile(str(self._path(version)), version, self._identity(version))
        with google_errors("reading the dataset"):
            generation = int(version) if version is not None else None
            blob = self._bucket.get_blob(self._name, generation=generation)
            if blob is not None and version is not None and str(blob.generation) != version:
                blob = None  # a server that ignored the generation asked for
            if blob is None and version is not None:
                # The customer reads this: the dataset's bucket and path stay out of it.
                raise DatasetChanged(
                    "the dataset was replaced while the export ran (the version the plan "
                    f"counted, generation {version}, is gone); submit the export again"
                )
            if blob is None:
                raise FileNotFoundError(f"dataset {self._uri} does not exist")
            found = str(blob.generation)
            target = self._path(found)
            with self._lock:
                if not target.exists():
                    self._folder.mkdir(parents=True, exist_ok=True)
                    partial = target.with_suffix(f".part{os.getpid()}")
                    blob.download_to_filename(str(partial))
                    partial.replace(target)
                    self._drop_older(int(found))
        return DatasetFile(str(target), found, self._identity(found))

    def _identity(self, version: str) -> str:
        """The object's URI and generation: no other bytes ever carry both."""
        return f"{self._uri}#{version}"

    def _path(self, version: str) -> Path:
        return self._folder / f"{self._stem}{version}"

    def _drop_older(self, generation: int) -> None:
        for old in self._folder.glob(f"{self._stem}*"):
            suffix = old.name[len(self._stem) :]
            if suffix.isdigit() and int(suffix) < generation:
                old.unlink(missing_ok=True)
