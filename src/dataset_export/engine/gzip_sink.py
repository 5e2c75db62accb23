"""A gzip sink: chunks of bytes compressed into one gzip stream, written as they come.

``GzipSink`` compresses a stream of chunks into a gzip file-like object. With python-isal it
uses ISA-L at level 2 (about 6x zlib level 1's speed for files about 25% larger than zlib level
6); without it, zlib at level 1. Compression runs in the caller's thread; by default a
background thread writes the compressed chunks, so a slow destination overlaps the work, and a
bounded queue keeps memory flat.
"""

from __future__ import annotations

import queue
import threading
import types
import zlib
from typing import Any, BinaryIO, Literal

_isal_zlib: types.ModuleType | None
try:  # ISA-L is optional: several times faster than zlib at similar ratios.
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - exercised only where python-isal is missing
    _isal_zlib = None

#: What the sink takes: bytes, or a memoryview over an Arrow buffer (no copy).
Chunk = bytes | memoryview
GzipBackend = Literal["isal", "zlib"]


def default_gzip_backend() -> GzipBackend:
    """``isal`` when python-isal is installed, else ``zlib``."""
    return "zlib" if _isal_zlib is None else "isal"


def _compressor(backend: GzipBackend, level: int | None) -> Any:
    # wbits=31: a gzip member (header with mtime 0, deflate data, CRC32 and size trailer).
    if backend == "isal":
        if _isal_zlib is None:
            raise RuntimeError("python-isal is not installed")
        return _isal_zlib.compressobj(2 if level is None else level, _isal_zlib.DEFLATED, 31)
    return zlib.compressobj(1 if level is None else level, zlib.DEFLATED, 31)


class GzipSink:
    """Write chunks of bytes as one gzip stream into a binary file-like object.

    ``close()`` finishes the stream (trailer) and returns only after everything reached ``out``;
    ``abort()`` stops without a trailer, so a failed export never looks like a complete gzip
    file. Used as a context manager it closes on success and aborts on an exception.

    Compression runs in the caller's thread. With ``threaded=True`` a worker thread does the
    writes to ``out``, so a slow destination (a resumable upload) overlaps compression and the
    query; at most ``max_pending`` compressed chunks wait for it, and an error there is raised
    by the next ``write`` or by ``close``. (Compressing in the worker instead was measured
    slower: ISA-L holds the GIL part of the time, and DuckDB already computes ahead in its own
    threads.) ``out`` is never closed here.
    """

    def __init__(
        self,
        out: BinaryIO,
        *,
        backend: GzipBackend | None = None,
        level: int | None = None,
        threaded: bool = True,
        max_pending: int = 4,
    ) -> None:
        self._out = out
        self._compressor = _compressor(backend or default_gzip_backend(), level)
        self.uncompressed_bytes = 0
        self.compressed_bytes = 0
        self._error: BaseException | None = None
        self._closed = False
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=max(1, max_pending))
            self._thread = threading.Thread(target=self._work, name="gzip-sink", daemon=True)
            self._thread.start()

    def __enter__(self) -> GzipSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, chunk: Chunk) -> None:
        """Compress one chunk and hand the output to ``out`` (or its writer thread)."""
        if self._closed:
            raise ValueError("write to a closed GzipSink")
        size = chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
        if size == 0:
            return
        self.uncompressed_bytes += size
        data = self._compressor.compress(chunk)
        if not data:
            return
        self.compressed_bytes += len(data)
        if self._queue is None:
            self._out.write(data)
        else:
            self._put(data)

    def close(self) -> None:
        """Finish the gzip stream and wait until it is all written to ``out``."""
        if self._closed:
            return
        self._closed = True
        tail = self._compressor.flush()
        self.compressed_bytes += len(tail)
        if self._queue is None:
            self._out.write(tail)
            return
        try:
            self._put(tail)
        finally:
            self._stop_worker()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop without finishing the stream; compressed chunks not yet written are dropped."""
        if self._closed:
            return
        self._closed = True
        if self._queue is not None:
            self._error = self._error or RuntimeError("gzip sink aborted")
            self._stop_worker()

    def _stop_worker(self) -> None:
        # The worker always drains the queue (it discards chunks once _error is set), so this
        # put cannot block for longer than the chunks ahead of it take.
        assert self._queue is not None
        assert self._thread is not None
        self._queue.put(None)
        self._thread.join()

    def _put(self, item: bytes) -> None:
        assert self._queue is not None
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _work(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:  # the stop marker
                return
            if self._error is not None:
                continue  # keep draining so a blocked producer wakes up and sees the error
            try:
                self._out.write(item)
            except BaseException as exc:  # handed to the producer thread
                self._error = exc
