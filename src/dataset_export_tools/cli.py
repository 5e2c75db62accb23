"""``exportctl``: the operator's and customer's command line.

Commands that talk to the stack read ``EXPORT_API_URL``, ``EXPORT_API_KEY`` and, for key
administration, ``GOOGLE_CLOUD_PROJECT``, ``EXPORT_FIRESTORE_DATABASE`` (default
``(default)``), ``FIRESTORE_EMULATOR_HOST`` (local) and ``EXPORT_KEY_ENCRYPTION_KEY``. Any of
them missing from the environment is taken from the local stack's ``.local/stack.env`` when
there is one. Results go to stdout; chatter goes to stderr.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
    from .localstack.envfile import read_env_file

    path = _find_stack_env()
    return {} if path is None else read_env_file(path)


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
    _apply_stack_env("FIRESTORE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT", "EXPORT_FIRESTORE_DATABASE")
    from dataset_export.adapters.firestore_store import FirestoreStore
    from dataset_export.config import DEFAULT_FIRESTORE_DATABASE, firestore_database_problem

    database = os.environ.get("EXPORT_FIRESTORE_DATABASE", "").strip() or DEFAULT_FIRESTORE_DATABASE
    problem = firestore_database_problem(database)
    if problem:
        raise CliError(problem)
    return FirestoreStore.for_project(_env("GOOGLE_CLOUD_PROJECT"), database)


def _kek() -> bytes:
    try:
        kek = base64.b64decode(_env("EXPORT_KEY_ENCRYPTION_KEY"), validate=True)
    except binascii.Error as exc:
        raise CliError(f"EXPORT_KEY_ENCRYPTION_KEY is not base64 ({exc})") from None
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
    from dataset_export.service.keys import create_api_key

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
    from dataset_export.service.keys import revoke_api_key

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


def _one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines too) folded into one space."""
    return " ".join(str(text).split())


def _where(url: httpx.URL | str) -> str:
    """scheme://host:port/path of a URL: its query may hold a token or a signature."""
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _api_error(response: httpx.Response) -> CliError:
    """One line for an error answer: the API's message and field, else the start of the body."""
    where = f"{response.request.method} {_where(response.request.url)}"
    try:
        error = response.json()["error"]
        field = f" ({error['field']})" if error.get("field") else ""
        return CliError(f"HTTP {response.status_code} from {where}: {error['message']}{field}")
    except (ValueError, KeyError, TypeError):
        text = _one_line(response.text)
        text = text if len(text) <= 200 else text[:197] + "..."
        return CliError(f"HTTP {response.status_code} from {where}: {text or 'no body'}")


def _read_dataset(name: str) -> str:
    """The text of the dataset file, checked to be a JSON object (sent as written)."""
    path = Path(name)
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise CliError(f"dataset file {path} does not exist") from None
    except IsADirectoryError:
        raise CliError(f"dataset file {path} is a directory") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"dataset file {path} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise CliError(f"cannot read dataset file {path}: {exc.strerror or exc}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"dataset file {path} is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}"
        ) from None
    if not isinstance(value, dict):
        raise CliError(
            f"dataset file {path} must hold a JSON object (the dataset query), "
            f"not {type(value).__name__}"
        )
    return text


def cmd_submit(args: argparse.Namespace) -> int:
    """Submit an export; print its queryUUID."""
    dataset_text = _read_dataset(args.dataset)
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


TERMINAL = ("succeeded", "failed")
DELIVERY_FINAL = ("delivered", "failed")


def _delivery_line(doc: dict[str, Any]) -> str:
    """One line on where the webhook stands: state, attempts, the last outcome, what is next."""
    delivery = doc.get("delivery")
    if not delivery:
        return "delivery  not started yet"
    state = delivery.get("state")
    attempts = delivery.get("attempts") or []
    parts = [f"delivery  {state}"]
    if attempts:
        last = attempts[-1]
        outcome = last.get("statusCode") or _one_line(last.get("error") or "?")
        parts.append(f"{len(attempts)} attempt{'s' if len(attempts) != 1 else ''}, last: {outcome}")
    if state == "retrying" and delivery.get("nextAttemptOn"):
        parts.append(f"next attempt {delivery['nextAttemptOn']}")
    if state == "failed" and delivery.get("reason"):
        parts.append(_one_line(delivery["reason"]))
    return "; ".join(parts)


class _Follower:
    """Polls an export's status, showing a live line on a terminal and plain lines otherwise."""

    def __init__(self, client: httpx.Client, args: argparse.Namespace) -> None:
        self.client = client
        self.query_uuid: str = args.query_uuid
        self.interval: float = args.interval
        self.timeout: float = args.timeout
        self.started = time.monotonic()
        self.live = sys.stderr.isatty()
        self.open_line = False

    def until(
        self,
        done: Callable[[dict[str, Any]], bool],
        line: Callable[[dict[str, Any]], str],
        key: Callable[[dict[str, Any]], object],
    ) -> dict[str, Any]:
        """Poll until ``done(doc)``, showing ``line(doc)``: live on a terminal, else a plain
        line when ``key(doc)`` changes and every 10 s."""
        last_key: object = None
        last_print = 0.0
        while True:
            doc = _get_status(self.client, self.query_uuid)
            now = time.monotonic()
            if done(doc):
                # What it ended as is the caller's summary line; the live line makes way.
                if self.open_line:
                    print("\r\033[K", end="", file=sys.stderr, flush=True)
                    self.open_line = False
                return doc
            text = line(doc)
            shown = f"{text}  {now - self.started:6.1f} s"
            if self.live:
                print(f"\r\033[K{shown}", end="", file=sys.stderr, flush=True)
                self.open_line = True
            elif key(doc) != last_key or now - last_print >= 10:
                print(shown, file=sys.stderr, flush=True)
                last_key, last_print = key(doc), now
            if now - self.started > self.timeout:
                self.end_line()
                raise CliError(f"gave up after {self.timeout:.0f} s: {_one_line(text)}")
            time.sleep(self.interval)

    def end_line(self) -> None:
        if self.open_line:
            print(file=sys.stderr)
            self.open_line = False


def cmd_wait(args: argparse.Namespace) -> int:
    """Follow an export until it finishes (with --delivered, until its webhook is delivered)."""
    rate_base: tuple[float, int] | None = None

    def progress(doc: dict[str, Any]) -> str:
        nonlocal rate_base
        rows = (doc.get("progress") or {}).get("rowsWritten") or 0
        now = time.monotonic()
        if doc["status"] == "running" and rows:
            rate_base = rate_base or (now, rows)
        rate = ""
        if rate_base and now > rate_base[0] and rows > rate_base[1]:
            rate = f"  {(rows - rate_base[1]) / (now - rate_base[0]):,.0f} rows/s"
        return f"{doc['status']:<9} {rows:>12,} rows{rate}"

    with _client() as client:
        follower = _Follower(client, args)
        doc = follower.until(lambda d: d["status"] in TERMINAL, progress, lambda d: d["status"])
        if doc["status"] == "failed":
            error = doc.get("error") or {}
            raise CliError(f"export failed: {error.get('code')}: {error.get('message')}")
        print(
            f"succeeded: {doc.get('numberRows', 0):,} rows, {doc.get('sizeBytes', 0):,} bytes gzip",
            file=sys.stderr,
        )
        if args.delivered:
            doc = follower.until(
                lambda d: (d.get("delivery") or {}).get("state") in DELIVERY_FINAL,
                _delivery_line,
                _delivery_line,
            )
    state = (doc.get("delivery") or {}).get("state")
    if args.delivered and state == "failed":
        raise CliError(
            f"webhook delivery failed for good ({_delivery_line(doc).removeprefix('delivery  ')}); "
            f"'exportctl redeliver {doc['queryUUID']}' sends it again"
        )
    hint = "" if args.delivered or state in DELIVERY_FINAL else " (--delivered waits for it)"
    print(_delivery_line(doc) + hint, file=sys.stderr)
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

    wait = commands.add_parser(
        "wait",
        help="follow an export until it finishes, then show where its webhook stands",
        description="Exit 0 when the export succeeded (with --delivered: and its webhook was "
        "delivered), 1 when it failed (with --delivered: or its delivery failed for good).",
    )
    wait.add_argument("query_uuid")
    wait.add_argument(
        "--delivered",
        action="store_true",
        help="also wait until the webhook is delivered (non-zero exit if delivery fails for good)",
    )
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


def _request_failed(exc: httpx.HTTPError) -> str:
    """One line for a request that got no answer (refused, timed out, bad URL ...)."""
    try:
        where = f" {_where(exc.request.url)}"
    except RuntimeError:  # an error raised before any request was made
        where = ""
    return f"cannot reach{where}: {_one_line(exc) or type(exc).__name__}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``exportctl``: every failure is one line on stderr and exit code 1, no traceback."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except CliError as exc:
        return _fail(str(exc))
    except httpx.HTTPError as exc:
        return _fail(_request_failed(exc))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(f"{where}{exc.strerror or exc}")
    except KeyboardInterrupt:
        print("exportctl: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a dependency's own error (Google clients): still one line
        return _fail(f"{type(exc).__name__}: {exc}")
    return code


def _fail(message: str) -> int:
    print(f"exportctl: {_one_line(message)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
