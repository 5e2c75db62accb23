"""What the end-to-end tests on stacks of their own share: the stack for a module, and the wait
for an export's end and its webhook."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import httpx

from dataset_export_tools.localstack.stack import StackInfo, down, up
from dataset_export_tools.localstack.state import StackConfig


@contextlib.contextmanager
def running(config: StackConfig) -> Iterator[StackInfo]:
    """The stack of ``config``, up for the block and stopped (by PID) after it."""
    info = up(config)
    try:
        yield info
    finally:
        down(config)


def wait(client: httpx.Client, query_uuid: str, timeout: float = 300) -> dict[str, Any]:
    """The status once the export finished and its webhook was delivered (or failed)."""
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = client.get(f"/dataset/export/{query_uuid}").json()
        delivered = (doc.get("delivery") or {}).get("state") in ("delivered", "failed")
        if doc["status"] == "failed" or (doc["status"] == "succeeded" and delivered):
            return doc
        time.sleep(0.5)
    raise AssertionError(f"export {query_uuid} did not finish: {doc}")
