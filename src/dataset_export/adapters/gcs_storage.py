"""Cloud Storage: the exports bucket (resumable uploads that never leave a partial object),
short-lived V4 signed download URLs, and fetching the Parquet dataset.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc

from ..service.process import ObjectAlreadyExists, ObjectInfo
from .errors import google_errors

log = logging.getLogger(__name__)

# The uploader holds one chunk in memory. Google's client defaults to 100 MiB; 64 MiB keeps the
# process under 500 MB at 10M rows. Small chunks are slow on fake-gcs-server, which re-assembles
# the whole upload on every chunk (time grows with size squared over chunk size; see bench/).
DEFAULT_UPLOAD_CHUNK_BYTES = 64 * 1024 * 1024
CONTENT_TYPE = "application/gzip"


def _is_precondition_failure(exc: BaseException) -> bool:
    if isinstance(exc, gexc.PreconditionFailed):
        return True
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) == 412


class GcsUpload:
    """One resumable upload; the object appears only when ``commit`` finalizes it."""

    def __init__(self, blob: Any, chunk_bytes: int = DEFAULT_UPLOAD_CHUNK_BYTES) -> None:
        self._blob = blob
        # if_generation_match=0: create only, so a retried export can never replace a file.
        self._writer = blob.open(
            "wb",
            chunk_size=chunk_bytes,
            content_type=CONTENT_TYPE,
            if_generation_match=0,
            ignore_flush=True,
        )

    def write(self, data: bytes, /) -> int:
        """Append bytes (uploaded a chunk at a time)."""
        with google_errors("uploading the export"):
            self._writer.write(data)
        return len(data)

    def commit(self) -> ObjectInfo:
        """Finalize; raise ``ObjectAlreadyExists`` when an earlier run already made the object."""
        try:
            with google_errors("finishing the upload"):
                self._writer.close()
                self._blob.reload()
        except Exception as exc:
            if _is_precondition_failure(exc) or _is_precondition_failure(exc.__cause__ or exc):
                raise ObjectAlreadyExists(self._blob.name) from exc
            raise
        return _info(self._blob)

    def abort(self) -> None:
        """Cancel the resumable session; nothing becomes visible."""
        # An unfinished session also expires on its own, so a failed cancel is only logged.
        try:
            self._writer.terminate()
        except Exception as exc:
            log.warning("could not cancel the resumable upload: %s", type(exc).__name__)


def _info(blob: Any) -> ObjectInfo:
    return ObjectInfo(name=blob.name, size=int(blob.size), crc32c=blob.crc32c, md5=blob.md5_hash)


class GcsExportStorage:
    """``ExportStorage`` on one bucket."""

    def __init__(
        self, client: Any, bucket: str, chunk_bytes: int = DEFAULT_UPLOAD_CHUNK_BYTES
    ) -> None:
        self._bucket = client.bucket(bucket)
        self._chunk_bytes = chunk_bytes

    def open_upload(self, name: str, *, metadata: dict[str, str]) -> GcsUpload:
        """Start a resumable upload of ``name``."""
        blob = self._bucket.blob(name)
        blob.metadata = metadata
        # Served as the .gz file itself: no Content-Encoding, so nothing transcodes it.
        blob.content_disposition = f'attachment; filename="{name.rsplit("/", 1)[-1]}"'
        return GcsUpload(blob, self._chunk_bytes)

    def stat(self, name: str) -> ObjectInfo | None:
        """The object's size and checksums, or None."""
        with google_errors("reading object metadata"):
            blob = self._bucket.get_blob(name)
        return None if blob is None else _info(blob)


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


def fetch_dataset(client: Any, uri: str, cache_dir: str | None = None) -> str:
    """A local path for the Parquet dataset at ``uri`` (a path, or ``gs://bucket/name``).

    DuckDB's httpfs extension cannot be installed offline, and a local file lets DuckDB prune
    row groups with random reads, so a ``gs://`` dataset is downloaded once per instance (per
    generation) and reused.
    """
    if not uri.startswith("gs://"):
        return uri
    bucket_name, _, name = uri[5:].partition("/")
    with google_errors("reading the dataset"):
        blob = client.bucket(bucket_name).get_blob(name)
        if blob is None:
            raise FileNotFoundError(f"dataset {uri} does not exist")
        folder = Path(cache_dir or tempfile.gettempdir()) / "dataset-export-cache"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{bucket_name}-{name.replace('/', '_')}-{blob.generation}"
        if not target.exists():
            partial = target.with_suffix(f".part{os.getpid()}")
            blob.download_to_filename(str(partial))
            partial.replace(target)
    return str(target)
