"""After every other test has driven the stack (this file sorts last), no log it wrote holds an
API key, a webhook signature, a download token, a signed URL, an upload session, or a secret
a customer put in a webhook URL; and no line names an export it is not about."""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from dataset_export_tools.localstack.stack import StackInfo
from tests.conftest import SessionLogs

pytestmark = pytest.mark.integration

SECRETS = {
    "API key": re.compile(r"dwe_[a-z2-7]{10}_[A-Za-z0-9_-]{43}"),
    "signed URL": re.compile(r"X-Goog-Signature=[0-9a-f]{16}", re.IGNORECASE),
    "download token": re.compile(r"token=[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}"),
    "Standard Webhooks signature": re.compile(r"v1,[A-Za-z0-9+/]{40,}={0,2}"),
    "hex HMAC": re.compile(r"\b[0-9a-f]{64}\b"),
    "upload session": re.compile(r"upload_id=[A-Za-z0-9_-]{8,}"),
}
# The demo receiver stands in for the customer's own server: what it logs about the requests
# it receives (its own URL included) is the customer's log, not ours.
CUSTOMER_SIDE = {"receiver.log"}


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def test_secrets_in_a_webhook_urls_query_and_path_reach_no_log(
    stack: StackInfo, stack_logs: SessionLogs, client: httpx.Client
) -> None:
    """A webhook URL with secrets in its query and path is delivered; no stack log holds them."""
    query_secret = f"q{secrets.token_hex(12)}"
    path_secret = f"P4{secrets.token_hex(12)}"
    base = stack.env["EXPORT_WEBHOOK_URL"].rsplit("/", 1)[0]
    body = {
        "dataset": {"scopes": [{"column": "city"}], "limit": 5},
        "webhookURL": f"{base}/hooks/{path_secret}?key={query_secret}&tag=itest",
        "name": "log scan",
        "format": "csv",
    }
    response = client.post("/dataset/export", json=body)
    assert response.status_code == 201, response.text
    query_uuid = response.json()["queryUUID"]

    def delivered_line() -> dict[str, Any] | None:
        for entry in _json_lines(stack_logs.text("notify.log")):
            if entry.get("queryUUID") == query_uuid and entry["message"].startswith(
                "webhook delivered"
            ):
                return entry
        return None

    deadline = time.monotonic() + 60
    while (entry := delivered_line()) is None:
        assert time.monotonic() < deadline, "the export's webhook was not delivered in 60 s"
        time.sleep(0.5)
    received = [
        json.loads(p.read_text("utf-8"))
        for p in Path(stack.env["EXPORT_WEBHOOK_DIR"]).glob("*.json")
    ]
    assert any(path_secret in r["path"] and query_secret in r["path"] for r in received)
    logs = stack_logs.paths()
    assert {p.name for p in logs} > CUSTOMER_SIDE
    for path in logs:
        if path.name in CUSTOMER_SIDE:
            continue
        text = stack_logs.text(path.name)
        assert query_secret not in text, f"the webhook URL's query secret is in {path.name}"
        assert path_secret not in text, f"the webhook URL's path secret is in {path.name}"
    # Our own line names the endpoint: scheme, host, port and path, the opaque segment and
    # every query value redacted.
    assert entry["webhook"] == f"{base}/hooks/[redacted]?key=[redacted]&tag=[redacted]"


def test_retry_tick_lines_name_no_export(
    stack: StackInfo, stack_logs: SessionLogs, client: httpx.Client
) -> None:
    """A retry tick is about no single export: its summary line carries no queryUUID."""

    def ticks() -> list[dict[str, Any]]:
        lines = _json_lines(stack_logs.text("notify.log"))
        return [e for e in lines if e["message"].startswith("retry tick sent")]

    if not ticks():  # run on its own: make the tick retry something
        base = stack.env["EXPORT_WEBHOOK_URL"].rsplit("/", 1)[0]
        body = {
            "dataset": {"scopes": [{"column": "city"}], "limit": 5},
            "webhookURL": f"{base}/status/503",
            "name": "tick check",
            "format": "csv",
        }
        assert client.post("/dataset/export", json=body).status_code == 201
        deadline = time.monotonic() + 60
        while not ticks():
            assert time.monotonic() < deadline, "no retry tick sent anything in 60 s"
            time.sleep(0.5)
    stale = [e for e in ticks() if "queryUUID" in e]
    assert not stale, stale[:3]


def test_stack_logs_hold_no_secrets(stack: StackInfo, stack_logs: SessionLogs) -> None:
    """Every log file of the test stack is free of keys, signatures, tokens and signed URLs."""
    logs = stack_logs.paths()
    assert {p.stem for p in logs} >= {"submit", "process", "notify"}
    text = {p.name: stack_logs.text(p.name) for p in logs}
    assert any("webhook delivered" in t for t in text.values()), "the stack delivered nothing"
    for name, content in text.items():
        for what, pattern in SECRETS.items():
            match = pattern.search(content)
            assert match is None, f"{what} in {name}: {match.group(0)[:12] if match else ''}..."
    assert stack.env["EXPORT_API_KEY"] not in "".join(text.values())
