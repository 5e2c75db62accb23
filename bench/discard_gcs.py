"""A discard endpoint for ``make bench``: the GCS resumable upload the exporter uses, bytes dropped.

It speaks just what ``adapters/gcs_storage.GcsUpload`` sends, so the process path can be timed
without fake-gcs-server's finalize (which appends, hashes, writes and re-reads the whole object
after the last byte):

- ``POST /upload/storage/v1/b/<bucket>/o?uploadType=resumable`` (JSON metadata in the body, the
  name there or in ``name=``; ``ifGenerationMatch=0`` answered with 412 for a name this server
  already finalized) → 200 with the session URL in ``Location``;
- ``PUT <session URL>`` with ``Content-Range: bytes 0-*/*`` (or ``bytes 0-<last>/<size>``) and a
  chunked (or ``Content-Length``) body: the bytes are counted and their CRC32C computed as they
  arrive, then dropped; the answer is the object resource GCS returns (``name``, ``bucket``,
  ``generation``, ``size``, ``crc32c``, ``metadata`` ...), so the uploader's integrity check
  (size and crc32c of what it sent) still runs. No ``md5Hash``: the uploader does not check it,
  and hashing MD5 here would take CPU from the export on the same cores;
- ``DELETE <session URL>`` cancels the session (GCS answers 499).

For exports planned as parts (``bench/parts_bench.py``) it also keeps each finalized object's
resource (never its bytes) and answers, from those alone, what ``GcsExportStorage`` asks of the
JSON API: ``GET .../o/<name>`` (the resource, or 404), ``POST .../o/<name>/compose`` (create-only
with ``ifGenerationMatch=0``: 412 when the name exists, 404 when a source does not; the
composite's size is the sources' sum and its crc32c is combined from theirs with
``core.checksums``, so nothing is read, as Cloud Storage composes without moving data),
``DELETE .../o/<name>`` (``ifGenerationMatch`` honoured: 412 for another generation) and
``GET .../o?prefix=`` (one page, in name order). So a part's and the composer's own time is
measured with the storage server's cost close to nothing.

Bounded: it listens on 127.0.0.1 only, holds at most ``MAX_SESSIONS`` open sessions and
``MAX_FINALIZED`` finalized objects (the oldest forgotten first), reads metadata bodies up to
1 MiB and upload bodies up to ``MAX_OBJECT_BYTES``, in reads of at most 1 MiB, and drops a
connection idle for 60 s. Nothing is written to disk. Not a test double of Cloud Storage: a
bench instrument.

``python bench/discard_gcs.py --port 0`` serves until interrupted; ``DiscardGcs`` runs it on a
thread (``with DiscardGcs() as server: server.url``).
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import re
import secrets
import threading
import time
import types
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import google_crc32c

from dataset_export.core.checksums import combined_crc32c

MAX_SESSIONS = 64
MAX_FINALIZED = 10_000
MAX_METADATA_BYTES = 1 << 20
MAX_OBJECT_BYTES = 64 << 30
READ_BYTES = 1 << 20
IDLE_TIMEOUT = 60.0

_UPLOAD_PATH = re.compile(r"^/upload/storage/v1/b/([^/]+)/o$")
_OBJECT_PATH = re.compile(r"^/storage/v1/b/([^/]+)/o/([^/]+)$")
_COMPOSE_PATH = re.compile(r"^/storage/v1/b/([^/]+)/o/([^/]+)/compose$")
_LIST_PATH = re.compile(r"^/storage/v1/b/([^/]+)/o$")
MAX_COMPOSE_SOURCES = 32  # Cloud Storage's limit per compose request


class _Stats:
    """What the server received, for the bench's report."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects = 0
        self.bytes = 0
        self.receive_seconds = 0.0  # from the first body byte to the answer, summed
        self.composes = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as the client's session expects
    timeout = IDLE_TIMEOUT
    # The headers and the body of an answer go out in two writes: with Nagle's algorithm on,
    # the second waits for the client's delayed ACK (40 ms a request on Linux).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the bench prints its own table

    def do_POST(self) -> None:
        path, query = self._split()
        compose = _COMPOSE_PATH.match(path)
        if compose is not None:
            self._compose(compose, query)
            return
        match = _UPLOAD_PATH.match(path)
        if match is None or query.get("uploadType") != "resumable":
            self._drain_small()
            self._json(HTTPStatus.NOT_FOUND, _error(404, "only resumable uploads"))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_METADATA_BYTES:
            self.close_connection = True
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _error(413, "metadata"))
            return
        try:
            resource = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._json(HTTPStatus.BAD_REQUEST, _error(400, "metadata is not JSON"))
            return
        name = query.get("name") or resource.get("name")
        if not name:
            self._json(HTTPStatus.BAD_REQUEST, _error(400, "no object name"))
            return
        bucket = urllib.parse.unquote(match.group(1))
        server = self.server
        with server.lock:
            if query.get("ifGenerationMatch") == "0" and name in server.finalized:
                self._json(HTTPStatus.PRECONDITION_FAILED, _error(412, "exists"))
                return
            if len(server.sessions) >= MAX_SESSIONS:
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, _error(503, "too many"))
                return
            upload_id = secrets.token_urlsafe(16)
            server.sessions[upload_id] = {**resource, "name": name, "bucket": bucket}
        host, port = server.server_address[:2]
        location = (
            f"http://{host}:{port}/upload/storage/v1/b/{match.group(1)}/o"
            f"?uploadType=resumable&upload_id={upload_id}"
        )
        self._json(HTTPStatus.OK, {}, extra={"Location": location})

    def do_PUT(self) -> None:
        _, query = self._split()
        server = self.server
        with server.lock:
            session = server.sessions.get(query.get("upload_id", ""))
        if session is None:
            self.close_connection = True
            self._json(HTTPStatus.NOT_FOUND, _error(404, "no such upload session"))
            return
        started = time.perf_counter()
        checksum = google_crc32c.Checksum()  # type: ignore[no-untyped-call]
        try:
            size = self._receive(checksum)
        except (ValueError, OSError):
            # A body that breaks off (the uploader aborting) leaves no object, as on GCS.
            self.close_connection = True
            return
        with server.lock:
            if server.sessions.pop(query["upload_id"], None) is None:
                self._json(HTTPStatus.NOT_FOUND, _error(404, "session cancelled"))
                return
            resource = _resource(
                session,
                size=size,
                crc32c=base64.b64encode(checksum.digest()).decode("ascii"),  # type: ignore[no-untyped-call]
            )
            server.keep(resource)
            server.stats.objects += 1
            server.stats.bytes += size
            server.stats.receive_seconds += time.perf_counter() - started
        self._json(HTTPStatus.OK, resource)

    def do_DELETE(self) -> None:
        path, query = self._split()
        match = _OBJECT_PATH.match(path)
        if match is None:
            with self.server.lock:
                self.server.sessions.pop(query.get("upload_id", ""), None)
            self._json(499, {})  # what GCS answers a cancelled session
            return
        name = urllib.parse.unquote(match.group(2))
        with self.server.lock:
            found = self.server.finalized.get(name)
            if found is None:
                self._json(HTTPStatus.NOT_FOUND, _error(404, "no such object"))
                return
            wanted = query.get("ifGenerationMatch")
            if wanted is not None and wanted != found["generation"]:
                self._json(HTTPStatus.PRECONDITION_FAILED, _error(412, "generation"))
                return
            del self.server.finalized[name]
        self.send_response(HTTPStatus.NO_CONTENT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        path, query = self._split()
        listing = _LIST_PATH.match(path)
        if listing is not None:
            prefix = query.get("prefix", "")
            with self.server.lock:
                items = [r for n, r in self.server.finalized.items() if n.startswith(prefix)]
            items.sort(key=lambda r: str(r["name"]))
            self._json(HTTPStatus.OK, {"kind": "storage#objects", "items": items})
            return
        match = _OBJECT_PATH.match(path)
        found = None
        if match is not None and query.get("alt", "json") == "json":
            with self.server.lock:
                found = self.server.finalized.get(urllib.parse.unquote(match.group(2)))
        if found is None:  # the bytes are never kept, so media reads find nothing either
            self._json(HTTPStatus.NOT_FOUND, _error(404, "no such object"))
            return
        self._json(HTTPStatus.OK, found)

    def _compose(self, match: re.Match[str], query: dict[str, str]) -> None:
        """A composite from the sources' resources alone: sizes summed, crc32c combined."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_METADATA_BYTES:
            self.close_connection = True
            self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, _error(413, "compose request"))
            return
        try:
            request = json.loads(self.rfile.read(length) or b"{}")
            names = [str(source["name"]) for source in request.get("sourceObjects", [])]
        except (ValueError, KeyError, TypeError):
            self._json(HTTPStatus.BAD_REQUEST, _error(400, "compose request is not valid"))
            return
        if not 1 <= len(names) <= MAX_COMPOSE_SOURCES:
            self._json(HTTPStatus.BAD_REQUEST, _error(400, f"{len(names)} source objects"))
            return
        bucket = urllib.parse.unquote(match.group(1))
        name = urllib.parse.unquote(match.group(2))
        destination = request.get("destination") or {}
        server = self.server
        with server.lock:
            if query.get("ifGenerationMatch") == "0" and name in server.finalized:
                self._json(HTTPStatus.PRECONDITION_FAILED, _error(412, "exists"))
                return
            sources = [server.finalized.get(source) for source in names]
            if any(source is None for source in sources):
                self._json(HTTPStatus.NOT_FOUND, _error(404, "a source object is missing"))
                return
            pieces = [(str(s["crc32c"]), int(s["size"])) for s in sources if s is not None]
            components = sum(int(s.get("componentCount", 1)) for s in sources if s is not None)
            resource = _resource(
                {**destination, "name": name, "bucket": bucket},
                size=sum(size for _, size in pieces),
                crc32c=combined_crc32c(pieces),
            )
            resource["componentCount"] = components  # and no md5Hash, as on Cloud Storage
            server.keep(resource)
            server.stats.composes += 1
        self._json(HTTPStatus.OK, resource)

    def _receive(self, checksum: Any) -> int:
        """Read the PUT body (chunked or sized), CRC32C it and drop it; its size."""
        content_range = self.headers.get("Content-Range", "")
        if not content_range.startswith("bytes 0-"):
            raise ValueError(f"unsupported Content-Range {content_range!r}")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            size = 0
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise ValueError("chunk size line broken off")
                chunk = int(line.split(b";", 1)[0], 16)
                if chunk == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return size
                size += chunk
                if size > MAX_OBJECT_BYTES:
                    raise ValueError("object too large")
                self._read_exactly(chunk, checksum)
                if self.rfile.readline(4) not in (b"\r\n", b"\n"):
                    raise ValueError("chunk not followed by CRLF")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_OBJECT_BYTES:
            raise ValueError("object too large")
        self._read_exactly(length, checksum)
        return length

    def _read_exactly(self, count: int, checksum: Any) -> None:
        while count:
            data = self.rfile.read(min(count, READ_BYTES))
            if not data:
                raise ValueError("body broken off")
            checksum.update(data)
            count -= len(data)

    def _drain_small(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_METADATA_BYTES:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _split(self) -> tuple[str, dict[str, str]]:
        parts = urllib.parse.urlsplit(self.path)
        return parts.path, dict(urllib.parse.parse_qsl(parts.query))

    def _json(
        self, status: int, body: dict[str, Any], *, extra: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


def _error(code: int, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def _resource(properties: dict[str, Any], *, size: int, crc32c: str) -> dict[str, Any]:
    """The object resource GCS answers for a finalized object (no md5Hash: never computed)."""
    return {
        "kind": "storage#object",
        "id": f"{properties['bucket']}/{properties['name']}",
        "name": properties["name"],
        "bucket": properties["bucket"],
        "generation": str(time.time_ns()),
        "metageneration": "1",
        "contentType": properties.get("contentType", "application/octet-stream"),
        "size": str(size),
        "crc32c": crc32c,
        **{k: properties[k] for k in ("metadata", "contentDisposition") if k in properties},
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 16

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.lock = threading.Lock()
        self.sessions: dict[str, dict[str, Any]] = {}
        # Name -> resource of each finalized object (its bytes are never kept), oldest first.
        self.finalized: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.stats = _Stats()

    def keep(self, resource: dict[str, Any]) -> None:
        """Remember a finalized object's resource (the caller holds ``lock``)."""
        self.finalized[str(resource["name"])] = resource
        self.finalized.move_to_end(str(resource["name"]))
        while len(self.finalized) > MAX_FINALIZED:
            self.finalized.popitem(last=False)


class DiscardGcs:
    """The discard endpoint on a background thread; ``url`` is its STORAGE_EMULATOR_HOST."""

    def __init__(self, port: int = 0) -> None:
        self._server = _Server(port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="discard-gcs", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def stats(self) -> _Stats:
        return self._server.stats

    def __enter__(self) -> DiscardGcs:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with DiscardGcs(args.port) as server:
        print(f"STORAGE_EMULATOR_HOST={server.url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
