"""A worker process that dies mid-upload, for the emulator tests that kill one.

``dying_export`` wraps an engine's ``export`` so that, once more than ``limit`` bytes were
written, it waits until those bytes went down the upload's connection (so the kill really lands
in the middle of the request body), says so on stderr and SIGKILLs its own process. The tests
run it in a child process (``python -c``) started in the repository's root.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def dying_export(export: Callable[..., int], limit: int) -> Callable[..., int]:
    """``export`` whose output kills the process after ``limit`` bytes are on the wire."""

    def killing_export(path: str, query: Any, fmt: str, out: Any, **options: Any) -> int:
        class Dying:
            written = 0

            def write(self, data: bytes) -> int:
                out.write(data)
                self.written += len(data)
                if self.written > limit:
                    deadline = time.monotonic() + 10
                    while out.sent_bytes < limit and time.monotonic() < deadline:
                        time.sleep(0.01)
                    sys.stderr.write(f"killed after sending {out.sent_bytes} bytes\n")
                    sys.stderr.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                return len(data)

        return export(path, query, fmt, Dying(), **options)

    return killing_export
