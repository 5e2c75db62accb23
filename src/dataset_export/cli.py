"""``exportctl``: the operator's and customer's command line.

Commands that talk to the stack read ``EXPORT_API_URL``, ``EXPORT_API_KEY`` and, for key
administration, ``GOOGLE_CLOUD_PROJECT``, ``FIRESTORE_EMULATOR_HOST`` (local) and
``EXPORT_KEY_ENCRYPTION_KEY``. Any of them missing from the environment is taken from the local
stack's ``.local/stack.env`` when there is one. Results go to stdout; chatter goes to stderr.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

HTTP_TIMEOUT_S = 30.0


class CliError(Exception):
    """A problem worth one line on stderr and exit code 1."""


def _find_stack_env() -> Path | None:
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder / ".local" / "stack.env"
        if candidate.is_file():
            return candidate
    return None


def stack_defaults() -> dict[str, str]:
    """Settings from the local stack's .local/stack.env (empty when there is none)."""
    path = _find_stack_env()
    if path is None:
        return {}
    values: dict[str, str] = {}
    for line in path.read_text("utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, raw = line.partition("=")
            parts = shlex.split(raw) if raw.strip() else [""]
            values[key.strip()] = parts[0] if parts else ""
    return values


def _env(name: str) -> str:
    value = os.environ.get(name) or stack_defaults().get(name, "")
    if not value:
        raise CliError(f"{name} is not set (export it, or run 'make up' to write .local/stack.env)")
    return value


def _apply_stack_env(*names: str) -> None:
    # The Google clients read their emulator hosts from the process environment. A project set
    # in the environment means "talk to that real project": no emulator hosts are borrowed.
    if os.environ.get("GOOGLE_CLOUD_PROJECT"):
        return
    defaults = stack_defaults()
    for name in names:
        if name not in os.environ and defaults.get(name):
            os.environ[name] = defaults[name]


def _store() -> Any:
    _apply_stack_env("FIRESTORE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")
    from .adapters.firestore_store import FirestoreStore

    return FirestoreStore.for_project(_env("GOOGLE_CLOUD_PROJECT"))


def _kek() -> bytes:
    kek = base64.b64decode(_env("EXPORT_KEY_ENCRYPTION_KEY"))
    if len(kek) != 32:
        raise CliError("EXPORT_KEY_ENCRYPTION_KEY must decode to 32 bytes")
    return kek


def cmd_dataset_generate(args: argparse.Namespace) -> int:
    """Write the demo rental-listings dataset."""
    from .dataset.generate import generate_dataset

    result = generate_dataset(args.rows, Path(args.out), seed=args.seed)
    rate = result.rows / result.seconds if result.seconds else float("inf")
    print(
        f"wrote {result.rows:,} rows to {result.path} ({result.bytes / 1e6:.1f} MB) "
        f"in {result.seconds:.2f} s ({rate:,.0f} rows/s)",
        file=sys.stderr,
    )
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Create an account's API key; the key alone goes to stdout, once."""
    from .service.keys import create_api_key

    plaintext, record = create_api_key(
        _store(), args.account, kek=_kek(), query_builder=not args.no_subscription
    )
    print(
        f"created key id {record.key_id} for account '{args.account}' "
        f"(Query Builder {'off' if args.no_subscription else 'on'}); it is shown only once",
        file=sys.stderr,
    )
    print(plaintext)
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    """Revoke a key by its id."""
    from .service.keys import revoke_api_key

    if not revoke_api_key(_store(), args.key_id):
        raise CliError(f"no API key with id '{args.key_id}'")
    print(f"revoked key id {args.key_id}", file=sys.stderr)
    return 0


def _client() -> httpx.Client:
    return httpx.Client(
        base_url=_env("EXPORT_API_URL"),
        headers={"x-api-key": _env("EXPORT_API_KEY")},
        timeout=HTTP_TIMEOUT_S,
    )


def _api_error(response: httpx.Response) -> CliError:
    try:
        error = response.json()["error"]
        where = f" ({error['field']})" if error.get("field") else ""
        return CliError(f"HTTP {response.status_code}: {error['message']}{where}")
    except (ValueError, KeyError, TypeError):
        return CliError(f"HTTP {response.status_code}: {response.text[:500]}")


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit an export; print its queryUUID."""
    dataset_text = Path(args.dataset).read_text("utf-8")
    # Keep the customer's own JSON text (key order, number spelling) for the payload echo.
    body = (
        '{"dataset":'
        + dataset_text.strip()
        + ',"webhookURL":'
        + json.dumps(args.webhook)
        + ',"name":'
        + json.dumps(args.name)
        + ',"format":'
        + json.dumps(args.format)
        + "}"
    )
    headers = {"Content-Type": "application/json"}
    if args.idempotency_key:
        headers["Idempotency-Key"] = args.idempotency_key
    with _client() as client:
        response = client.post("/dataset/export", content=body.encode("utf-8"), headers=headers)
    if response.status_code != 201:
        raise _api_error(response)
    query_uuid = response.json()["queryUUID"]
    print(f"export queued: {query_uuid}", file=sys.stderr)
    print(query_uuid)
    return 0


def _describe_status(doc: dict[str, Any]) -> str:
    lines = [
        f"export    {doc['queryUUID']}  ({doc['name']}, {doc['format']})",
        f"status    {doc['status']}",
        f"requested {doc['requestedOn']}",
    ]
    for key, label in (("startedOn", "started"), ("completedOn", "completed")):
        if doc.get(key):
            lines.append(f"{label:<9} {doc[key]}")
    if doc.get("progress"):
        lines.append(f"progress  {doc['progress'].get('rowsWritten', 0):,} rows written")
    if doc.get("numberRows") is not None:
        lines.append(f"rows      {doc['numberRows']:,}")
    if doc.get("sizeBytes") is not None:
        lines.append(f"size      {doc['sizeBytes']:,} bytes")
    if doc.get("download"):
        lines.append(f"download  {doc['download']['url']}")
        lines.append(f"          (link works until {doc['download']['expires']})")
    if doc.get("error"):
        lines.append(f"error     {doc['error'].get('code')}: {doc['error'].get('message')}")
    delivery = doc.get("delivery")
    if delivery:
        lines.append(f"delivery  {delivery.get('state')}")
        for attempt in delivery.get("attempts") or []:
            outcome = attempt.get("statusCode") or attempt.get("error")
            lines.append(
                f"  attempt {attempt.get('at')}: {outcome} in {attempt.get('latencyMs')} ms"
            )
        if delivery.get("nextAttemptOn"):
            lines.append(f"  next attempt {delivery['nextAttemptOn']}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    """Show an export's status."""
    with _client() as client:
        response = client.get(f"/dataset/export/{args.query_uuid}")
    if response.status_code != 200:
        raise _api_error(response)
    doc = response.json()
    print(json.dumps(doc, indent=2) if args.json else _describe_status(doc))
    return 0


def _get_status(client: httpx.Client, query_uuid: str) -> dict[str, Any]:
    response = client.get(f"/dataset/export/{query_uuid}")
    if response.status_code != 200:
        raise _api_error(response)
    doc: dict[str, Any] = response.json()
    return doc


def cmd_wait(args: argparse.Namespace) -> int:
    """Follow an export until it finishes: a live line on a terminal, plain lines otherwise."""
    live = sys.stderr.isatty()
    started = time.monotonic()
    last_line, last_print = "", 0.0
    rate_base: tuple[float, int] | None = None
    with _client() as client:
        while True:
            doc = _get_status(client, args.query_uuid)
            rows = (doc.get("progress") or {}).get("rowsWritten") or 0
            now = time.monotonic()
            if doc["status"] == "running" and rows:
                rate_base = rate_base or (now, rows)
            rate = ""
            if rate_base and now > rate_base[0] and rows > rate_base[1]:
                rate = f"  {(rows - rate_base[1]) / (now - rate_base[0]):,.0f} rows/s"
            line = f"{doc['status']:<9} {rows:>12,} rows{rate}  {now - started:6.1f} s"
            if live:
                print(f"\r{line}", end="", file=sys.stderr, flush=True)
            elif doc["status"] != last_line or now - last_print >= 10:
                print(line, file=sys.stderr, flush=True)
                last_line, last_print = doc["status"], now
            if doc["status"] in ("succeeded", "failed"):
                break
            if now - started > args.timeout:
                if live:
                    print(file=sys.stderr)
                raise CliError(f"export still {doc['status']} after {args.timeout:.0f} s")
            time.sleep(args.interval)
    if live:
        print(file=sys.stderr)
    if doc["status"] == "failed":
        error = doc.get("error") or {}
        raise CliError(f"export failed: {error.get('code')}: {error.get('message')}")
    print(
        f"succeeded: {doc.get('numberRows', 0):,} rows, {doc.get('sizeBytes', 0):,} bytes gzip",
        file=sys.stderr,
    )
    print(doc["queryUUID"])
    return 0


def _checksums_match(path: Path, expected: dict[str, str]) -> list[str]:
    import google_crc32c

    md5 = hashlib.md5()  # noqa: S324 - GCS's checksum, not a security use
    crc: Any = google_crc32c.Checksum()  # type: ignore[no-untyped-call]
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            md5.update(chunk)
            crc.update(chunk)
    got = {
        "md5": base64.b64encode(md5.digest()).decode(),
        "crc32c": base64.b64encode(crc.digest()).decode(),
    }
    return [k for k, v in expected.items() if got.get(k) != v]


def cmd_download(args: argparse.Namespace) -> int:
    """Download a finished export's file, checking its size and checksums."""
    with _client() as client:
        doc = _get_status(client, args.query_uuid)
        if doc["status"] != "succeeded" or "download" not in doc:
            raise CliError(f"export is {doc['status']}; nothing to download yet")
        target = Path(args.output or f"{doc['queryUUID']}.{doc['format']}.gz")
        partial = target.with_name(target.name + ".part")
        # The link is its own credential: no API key goes to the storage host.
        with httpx.stream(
            "GET", doc["download"]["url"], follow_redirects=True, timeout=HTTP_TIMEOUT_S
        ) as response:
            if response.status_code != 200:
                response.read()
                raise _api_error(response)
            with partial.open("wb") as handle:
                for chunk in response.iter_bytes(1 << 20):
                    handle.write(chunk)
    size = partial.stat().st_size
    if size != doc.get("sizeBytes"):
        partial.unlink()
        raise CliError(f"downloaded {size} bytes, expected {doc.get('sizeBytes')}")
    bad = _checksums_match(partial, doc.get("checksum") or {})
    if bad:
        partial.unlink()
        raise CliError(f"checksum mismatch ({', '.join(bad)}); the download is corrupt")
    partial.replace(target)
    print(f"downloaded {size:,} bytes, size and checksums verified", file=sys.stderr)
    print(target)
    return 0


def cmd_redeliver(args: argparse.Namespace) -> int:
    """Send a finished export's webhook again (a new delivery round)."""
    with _client() as client:
        response = client.post(f"/dataset/export/{args.query_uuid}/redeliver")
    if response.status_code != 202:
        raise _api_error(response)
    print("redelivery started; follow it with 'exportctl status'", file=sys.stderr)
    print(_describe_status(response.json()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``exportctl``."""
    parser = argparse.ArgumentParser(prog="exportctl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    dataset = commands.add_parser("dataset", help="the demo dataset").add_subparsers(
        dest="action", required=True
    )
    generate = dataset.add_parser("generate", help="write the rental-listings Parquet file")
    generate.add_argument("--rows", type=int, default=1_000_000)
    generate.add_argument("--out", required=True, help="Parquet file to write")
    generate.add_argument("--seed", type=int, default=20261127)
    generate.set_defaults(run=cmd_dataset_generate)

    keys = commands.add_parser("keys", help="accounts and API keys").add_subparsers(
        dest="action", required=True
    )
    create = keys.add_parser("create", help="create a key (printed once, alone on stdout)")
    create.add_argument("--account", required=True)
    create.add_argument(
        "--no-subscription", action="store_true", help="account without Query Builder"
    )
    create.set_defaults(run=cmd_keys_create)
    revoke = keys.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=cmd_keys_revoke)

    submit = commands.add_parser("submit", help="submit an export")
    submit.add_argument("--dataset", required=True, help="JSON file with the dataset query")
    submit.add_argument("--webhook", required=True, help="webhook URL")
    submit.add_argument("--name", required=True)
    submit.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    submit.add_argument("--idempotency-key")
    submit.set_defaults(run=cmd_submit)

    status = commands.add_parser("status", help="show an export's status")
    status.add_argument("query_uuid")
    status.add_argument("--json", action="store_true", help="print the raw status document")
    status.set_defaults(run=cmd_status)

    wait = commands.add_parser("wait", help="follow an export until it finishes")
    wait.add_argument("query_uuid")
    wait.add_argument("--timeout", type=float, default=3600.0, help="seconds (default 3600)")
    wait.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    wait.set_defaults(run=cmd_wait)

    download = commands.add_parser("download", help="download a finished export's file")
    download.add_argument("query_uuid")
    download.add_argument("-o", "--output", help="file to write (default <queryUUID>.<fmt>.gz)")
    download.set_defaults(run=cmd_download)

    redeliver = commands.add_parser("redeliver", help="send a finished export's webhook again")
    redeliver.add_argument("query_uuid")
    redeliver.set_defaults(run=cmd_redeliver)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``exportctl``."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except CliError as exc:
        print(f"exportctl: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"exportctl: cannot reach the API: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
