"""``make run``: a real export of the seed's example through the local stack, shown plainly.

It submits the seed's Seattle query (``examples/seattle.json``) through the HTTP API, follows
the export's status, shows the webhook the local receiver got and the first rows of the file
when those stages exist, and ends with the commands to try your own export. The stack keeps
running (``make down`` stops it).
"""

from __future__ import annotations

import gzip
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from .cli import stack_defaults
from .localstack.state import find_repo_root

#: The seed's example query, shipped for newcomers (`exportctl submit --dataset ...`); the demo
#: and the tests read it from there.
SEED_DATASET_FILE = find_repo_root(Path(__file__).parent) / "examples" / "seattle.json"
SEED_DATASET: dict[str, Any] = json.loads(SEED_DATASET_FILE.read_text("utf-8"))
TERMINAL = ("succeeded", "failed")
# How long an export may sit in 'queued' before the demo says nothing is picking it up.
QUEUED_PATIENCE_S = 15.0
OVERALL_TIMEOUT_S = 180.0


def _say(text: str = "") -> None:
    print(text, flush=True)


def _curl(url: str, key_var: str, body: dict[str, Any]) -> str:
    return (
        f"curl -sS -X POST {url}/dataset/export \\\n"
        f'  -H "x-api-key: ${key_var}" -H "Content-Type: application/json" \\\n'
        f"  --data {shlex.quote(json.dumps(body))}"
    )


def _find_webhook(folder: Path, query_uuid: str) -> dict[str, Any] | None:
    for path in sorted(folder.glob("*.json")):
        entry: dict[str, Any] = json.loads(path.read_text("utf-8"))
        if query_uuid in entry.get("body", ""):
            return entry
    return None


def _show_file(client: httpx.Client, url: str, rows: int = 6) -> None:
    response = client.get(url, follow_redirects=True)
    response.raise_for_status()
    lines = gzip.decompress(response.content).decode("utf-8").splitlines()
    _say(
        f"{response.headers.get('content-type')}, {len(response.content):,} bytes, "
        f"{len(lines) - 1:,} data rows; the first {min(rows, len(lines))} lines:"
    )
    for line in lines[:rows]:
        _say(f"    {line}")


def _settled_delivery(client: httpx.Client, query_uuid: str) -> dict[str, Any]:
    # The receiver has the webhook a moment before notify records the attempt's outcome.
    deadline = time.monotonic() + 15
    while True:
        doc: dict[str, Any] = client.get(f"/dataset/export/{query_uuid}").json()
        state = (doc.get("delivery") or {}).get("state")
        if state in ("delivered", "failed", "retrying") or time.monotonic() > deadline:
            return doc
        time.sleep(0.3)


def _show_webhook(webhook: dict[str, Any], api_key: str) -> None:
    from dataset_export.core.jsontext import parse_preserving
    from dataset_export.core.signing import (
        body_signature,
        payload_signature,
        standard_webhook_headers,
    )

    headers = webhook["headers"]
    raw = webhook["body"].encode("utf-8")
    body = json.loads(raw)
    _say(f"POST {webhook['path']}")
    for name in (
        "content-type",
        "sha256-hmac-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    ):
        _say(f"{name}: {headers.get(name)}")
    shown = {**body, "payload": "<the dataset object exactly as submitted>"}
    _say(json.dumps(shown, indent=2))
    payload = parse_preserving(webhook["body"])["payload"]
    checks = {
        "hmacSignature (JSON.stringify(payload))": payload_signature(api_key, payload)
        == body["hmacSignature"],
        "SHA256-HMAC-Signature (raw body)": body_signature(api_key, raw)
        == headers.get("sha256-hmac-signature"),
        "webhook-signature (Standard Webhooks)": standard_webhook_headers(
            api_key, headers.get("webhook-id", ""), int(headers.get("webhook-timestamp", 0)), raw
        )["webhook-signature"]
        == headers.get("webhook-signature"),
    }
    for name, ok in checks.items():
        _say(f"   {'verified' if ok else 'MISMATCH'}: {name}")


def main(argv: list[str] | None = None) -> int:
    """Run the demo against the stack described by ``.local/stack.env`` (or ``--stack-env``)."""
    import argparse

    from .localstack.envfile import read_env_file

    parser = argparse.ArgumentParser(description="a real export through the local stack")
    parser.add_argument("--stack-env", type=Path, help="stack.env to use (default: .local/)")
    args = parser.parse_args(argv)
    env = read_env_file(args.stack_env) if args.stack_env else stack_defaults()
    if not env.get("EXPORT_API_URL"):
        _say("no local stack found: run 'make up' first (make run does it for you)")
        return 1
    api, key = env["EXPORT_API_URL"], env["EXPORT_API_KEY"]
    body = {
        "dataset": SEED_DATASET,
        "webhookURL": env["EXPORT_WEBHOOK_URL"],
        "name": "Seattle Rental Data Export",
        "format": "csv",
    }
    _say("\n== 1. Submit the seed's example through the HTTP API")
    _say(_curl(api, "EXPORT_API_KEY", body))
    with httpx.Client(base_url=api, headers={"x-api-key": key}, timeout=30.0) as client:
        response = client.post("/dataset/export", json=body)
        _say(f"-> HTTP {response.status_code} {response.text}")
        if response.status_code != 201:
            return 1
        query_uuid = response.json()["queryUUID"]

        _say(f"\n== 2. Follow GET /dataset/export/{query_uuid}")
        started = time.monotonic()
        last = ""
        doc: dict[str, Any] = {}
        while time.monotonic() - started < OVERALL_TIMEOUT_S:
            doc = client.get(f"/dataset/export/{query_uuid}").json()
            progress = doc.get("progress", {}).get("rowsWritten")
            line = doc["status"] + (f" ({progress:,} rows written)" if progress else "")
            if line != last:
                _say(f"   {time.monotonic() - started:5.1f} s  {line}")
                last = line
            if doc["status"] in TERMINAL:
                break
            if doc["status"] == "queued" and time.monotonic() - started > QUEUED_PATIENCE_S:
                break
            time.sleep(0.5)
        _say(json.dumps(doc, indent=2))

        if doc.get("status") == "queued":
            _say(
                "\nThe export is recorded and queued but no worker has started it: is the process\n"
                "function running? See .local/logs/process.log and 'make status'."
            )
        elif doc.get("status") == "failed":
            _say(f"\nThe export failed: {doc.get('error')}")
        else:
            over = (
                "verified HTTPS"
                if env.get("EXPORT_WEBHOOK_URL", "").startswith("https:")
                else "HTTP"
            )
            _say(f"\n== 3. The webhook the local receiver got (over {over})")
            webhook_dir = Path(env.get("EXPORT_WEBHOOK_DIR", ".local/webhooks"))
            deadline = time.monotonic() + 60
            webhook = _find_webhook(webhook_dir, query_uuid)
            while webhook is None and time.monotonic() < deadline:
                time.sleep(0.5)
                webhook = _find_webhook(webhook_dir, query_uuid)
            if webhook is None:
                _say("   no webhook yet (see .local/logs/notify.log)")
            else:
                _show_webhook(webhook, key)
                payload = json.loads(webhook["body"])
                _say("\n== 4. The file, through the link in gcsBlob.url")
                _show_file(client, payload["gcsBlob"]["url"])
                doc = _settled_delivery(client, query_uuid)
                _say("\n== 5. Delivery as the status API reports it")
                _say(json.dumps(doc.get("delivery"), indent=2))

    _say("\n== Your turn. The stack keeps running; its settings are in .local/stack.env")
    _say("source .local/stack.env")
    _say(_curl("$EXPORT_API_URL", "EXPORT_API_KEY", body))
    _say("# or with the CLI and the same query from a file:")
    _say(
        "Q=$(.venv/bin/exportctl submit --dataset examples/seattle.json "
        '--webhook "$EXPORT_WEBHOOK_URL" --name mine)'
    )
    _say('.venv/bin/exportctl wait --delivered "$Q"   # progress, then the webhook')
    _say(".venv/bin/exportctl status <queryUUID>      # follow it")
    _say("make down                                   # stop the stack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
