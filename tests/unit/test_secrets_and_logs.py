"""Unit tests of API-key handling, number-preserving JSON, settings, log redaction and log
context (which export a line is about)."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import io
import json
import logging
import os
import random
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import flask
import pytest
from cloudevents.http import CloudEvent

from dataset_export import logs
from dataset_export.adapters.webhook_sender import WebhookSender
from dataset_export.config import Settings
from dataset_export.core.apikeys import key_hash, looks_like_key, new_api_key
from dataset_export.core.dataset import SubmittedDataset
from dataset_export.core.delivery import AttemptOutcome
from dataset_export.core.errors import ConfigError, KeyDecryptionError
from dataset_export.core.jsontext import dump_preserving, parse_preserving
from dataset_export.core.records import ExportRecord, ExportStatus
from dataset_export.http_api import ExportApi, HttpRequest
from dataset_export.key_encryption import decrypt_key, encrypt_key
from dataset_export.service.keys import create_api_key
from dataset_export.service.notify import Notifier
from tests.fakes import FakeSender, InMemoryStore

from .conftest import SEED_BODY, World

REPO = Path(__file__).resolve().parents[2]
# Planted in customers' webhook URLs: neither may reach a log line.
QUERY_SECRET = "CUSTSECRET7f3a9c"
PATH_SECRET = "Zk4pQ9wT2mB7xR1vL8nC"


def test_new_keys_are_unique_well_formed_and_hashed() -> None:
    """Keys carry their id, match the shape check, and hash to their lookup id."""
    keys = [new_api_key() for _ in range(50)]
    assert len({k.plaintext for k in keys}) == 50
    for key in keys:
        assert looks_like_key(key.plaintext)
        assert key.plaintext.startswith(f"dwe_{key.key_id}_")
        assert key.key_hash == key_hash(key.plaintext)
        assert key.plaintext not in key.key_hash


def test_key_encryption_round_trips_and_binds_to_the_hash() -> None:
    """A stored ciphertext decrypts only with the right KEK and only as its own key."""
    kek, other_kek = os.urandom(32), os.urandom(32)
    a, b = new_api_key(), new_api_key()
    sealed = encrypt_key(a.plaintext, kek)
    assert a.plaintext not in sealed
    assert decrypt_key(sealed, kek, a.key_hash) == a.plaintext
    with pytest.raises(KeyDecryptionError):
        decrypt_key(sealed, other_kek, a.key_hash)
    with pytest.raises(KeyDecryptionError):
        decrypt_key(sealed, kek, b.key_hash)
    with pytest.raises(KeyDecryptionError):
        decrypt_key("not base64!", kek, a.key_hash)


@pytest.mark.parametrize(
    "text",
    [
        '{"b":1,"a":[1.0,2.50,-0,1e400,12345678901234567890,1E-7]}',
        '{"text":"caf\\u00e9 \\"q\\" \\n 東京","nested":{"z":null,"y":true,"x":false}}',
        '{"lone":"x\\ud800y","\\udc00":[]}',
    ],
)
def test_preserving_json_keeps_literals_and_order(text: str) -> None:
    """Numbers come back exactly as written and keys in their order."""
    out = dump_preserving(parse_preserving(text))
    assert out.replace("\\u00e9", "é") == text.replace("\\u00e9", "é")
    assert json.loads(out) == json.loads(text)


def test_settings_report_every_problem_at_once() -> None:
    """A broken environment is named in one message, variable by variable."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {"EXPORT_ENV": "staging", "EXPORT_MAX_ROWS": "lots", "EXPORT_LINK_SIGNING_KEY": "abc"}
        )
    message = str(caught.value)
    for name in (
        "GOOGLE_CLOUD_PROJECT",
        "EXPORT_ENV",
        "EXPORT_LINK_SIGNING_KEY",
        "EXPORT_BUCKET",
        "EXPORT_MAX_ROWS",
    ):
        assert name in message


def test_settings_from_a_complete_environment() -> None:
    """A complete environment gives typed settings; production is the default mode."""
    import base64

    settings = Settings.from_env(
        {
            "GOOGLE_CLOUD_PROJECT": "p",
            "EXPORT_BUCKET": "b",
            "EXPORT_KEY_ENCRYPTION_KEY": base64.b64encode(b"k" * 32).decode(),
        }
    )
    assert settings.env == "production"
    assert not settings.is_local
    assert settings.requests_topic == "export-requests"
    assert settings.key_encryption_key == b"k" * 32
    settings.require("key_encryption_key")
    with pytest.raises(ConfigError, match="EXPORT_LINK_SIGNING_KEY is not set"):
        settings.require("key_encryption_key", "link_signing_key")


def test_settings_name_the_firestore_database() -> None:
    """EXPORT_FIRESTORE_DATABASE chooses the database (unset: ``(default)``); a bad ID is named."""
    base = {"GOOGLE_CLOUD_PROJECT": "p", "EXPORT_BUCKET": "b"}
    assert Settings.from_env(base).firestore_database == "(default)"
    named = {**base, "EXPORT_FIRESTORE_DATABASE": " staging-db "}
    assert Settings.from_env(named).firestore_database == "staging-db"
    for bad in ("Staging", "db", "staging-", "staging_db", "a" * 64, "default)"):
        named_wrong = f"EXPORT_FIRESTORE_DATABASE .*got {re.escape(repr(bad))}"
        with pytest.raises(ConfigError, match=named_wrong):
            Settings.from_env({**base, "EXPORT_FIRESTORE_DATABASE": bad})


def test_settings_set_the_retry_ticks_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    """EXPORT_RETRY_CONCURRENCY (unset: the Notifier's own default) reaches the notifier."""
    import base64

    # A Firestore client for the emulator needs no credentials; building one sends nothing.
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:9")

    from dataset_export.service.notify import RETRY_CONCURRENCY
    from dataset_export.wiring import build_notifier

    key = base64.b64encode(b"k" * 32).decode()
    base = {
        "GOOGLE_CLOUD_PROJECT": "p",
        "EXPORT_BUCKET": "b",
        "EXPORT_KEY_ENCRYPTION_KEY": key,
        "EXPORT_LINK_SIGNING_KEY": key,
        "EXPORT_PUBLIC_URL": "https://api.example",
    }
    assert Settings.from_env(base).retry_concurrency == RETRY_CONCURRENCY
    settings = Settings.from_env({**base, "EXPORT_RETRY_CONCURRENCY": "4"})
    assert build_notifier(settings).retry_concurrency == 4
    with pytest.raises(ConfigError, match="EXPORT_RETRY_CONCURRENCY must be positive"):
        Settings.from_env({**base, "EXPORT_RETRY_CONCURRENCY": "0"})


def test_settings_size_the_parts_of_an_export() -> None:
    """EXPORT_PART_ROWS, EXPORT_MAX_PARTS (at most MAX_PARTS_LIMIT) and the parts topic."""
    from dataset_export.core.parts import DEFAULT_MAX_PARTS, DEFAULT_PART_ROWS, MAX_PARTS_LIMIT

    base = {"GOOGLE_CLOUD_PROJECT": "p", "EXPORT_BUCKET": "b"}
    defaults = Settings.from_env(base)
    assert (defaults.part_rows, defaults.max_parts) == (DEFAULT_PART_ROWS, DEFAULT_MAX_PARTS)
    assert defaults.parts_topic == "export-parts"
    chosen = Settings.from_env(
        {
            **base,
            "EXPORT_PART_ROWS": "200000",
            "EXPORT_MAX_PARTS": str(MAX_PARTS_LIMIT),
            "EXPORT_PARTS_TOPIC": "staging-parts",
        }
    )
    assert (chosen.part_rows, chosen.max_parts) == (200_000, MAX_PARTS_LIMIT)
    assert chosen.parts_topic == "staging-parts"
    too_many = f"EXPORT_MAX_PARTS must be at most {MAX_PARTS_LIMIT}, got {MAX_PARTS_LIMIT + 1}"
    with pytest.raises(ConfigError, match=too_many):
        Settings.from_env({**base, "EXPORT_MAX_PARTS": str(MAX_PARTS_LIMIT + 1)})
    for name, bad in (("EXPORT_PART_ROWS", "0"), ("EXPORT_MAX_PARTS", "many")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({**base, name: bad})


def test_settings_choose_the_engine_from_the_dataset_uri() -> None:
    """A bq:// table is the BigQuery engine and needs a temporary dataset; a path is DuckDB."""
    from dataset_export.core.source import (
        DEFAULT_BIGQUERY_LOCATION,
        DEFAULT_BIGQUERY_MAX_BYTES_BILLED,
        BigQueryDataset,
        BigQueryTable,
        ParquetSource,
    )

    base = {"GOOGLE_CLOUD_PROJECT": "p", "EXPORT_BUCKET": "b"}
    nothing = Settings.from_env(base)
    assert (nothing.dataset_source, nothing.engine) == (None, "duckdb")
    assert nothing.bigquery_max_bytes_billed == DEFAULT_BIGQUERY_MAX_BYTES_BILLED
    assert nothing.bigquery_location == DEFAULT_BIGQUERY_LOCATION == "US"
    parquet = Settings.from_env({**base, "EXPORT_DATASET_URI": "gs://d/rental_listings.parquet"})
    assert parquet.dataset_source == ParquetSource("gs://d/rental_listings.parquet")
    assert parquet.engine == "duckdb"
    bigquery = Settings.from_env(
        {
            **base,
            "EXPORT_DATASET_URI": " bq://warehouse-prod.listings.rental_listings ",
            "EXPORT_BIGQUERY_TEMP_DATASET": "my-project.export_tmp",
            "EXPORT_BIGQUERY_MAX_BYTES_BILLED": "50000000000",
            "EXPORT_BIGQUERY_LOCATION": "europe-west4",
        }
    )
    assert bigquery.dataset_source == BigQueryTable("warehouse-prod", "listings", "rental_listings")
    assert bigquery.engine == "bigquery"
    assert bigquery.dataset_uri == "bq://warehouse-prod.listings.rental_listings"
    assert bigquery.bigquery_temp_dataset == BigQueryDataset("my-project", "export_tmp")
    assert bigquery.bigquery_max_bytes_billed == 50_000_000_000
    assert bigquery.bigquery_location == "europe-west4"


def test_bigquery_settings_name_every_problem_at_once() -> None:
    """A bad table, a missing temporary dataset, a cap under 10 MiB and a bad location: one
    message names them all, each with its variable."""
    base = {"GOOGLE_CLOUD_PROJECT": "p", "EXPORT_BUCKET": "b"}
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {
                **base,
                "EXPORT_DATASET_URI": "bq://warehouse-prod.list-ings.rental_listings",
                "EXPORT_BIGQUERY_TEMP_DATASET": "my-project",
                "EXPORT_BIGQUERY_MAX_BYTES_BILLED": "1000",
                "EXPORT_BIGQUERY_LOCATION": "mars",
            }
        )
    message = str(raised.value)
    assert "EXPORT_DATASET_URI dataset ID 'list-ings' must be 1-1024 letters" in message
    assert "EXPORT_BIGQUERY_TEMP_DATASET must be PROJECT.DATASET, got 'my-project'" in message
    assert "EXPORT_BIGQUERY_MAX_BYTES_BILLED must be at least 10485760" in message
    assert "EXPORT_BIGQUERY_LOCATION must be the US or EU multi-region" in message
    missing = {**base, "EXPORT_DATASET_URI": "bq://warehouse-prod.listings.rental_listings"}
    with pytest.raises(ConfigError, match="EXPORT_BIGQUERY_TEMP_DATASET is not set"):
        Settings.from_env(missing)
    with pytest.raises(ConfigError, match="EXPORT_BIGQUERY_MAX_BYTES_BILLED must be positive"):
        Settings.from_env({**base, "EXPORT_BIGQUERY_MAX_BYTES_BILLED": "0"})
    # A Parquet deployment needs no temporary dataset.
    assert Settings.from_env({**base, "EXPORT_DATASET_URI": "/d.parquet"}).engine == "duckdb"


def test_log_lines_are_cloud_logging_json_without_secrets() -> None:
    """A log line is one JSON object with severity, trace and queryUUID, secrets redacted."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    key = new_api_key().plaintext
    trace = logs.trace_name("105445aa7843bc8bf206b12000100000/1;o=1", "proj")
    try:
        with logs.scope(trace=trace):
            logger.warning(
                "key %s url https://storage.googleapis.com/b/o?X-Goog-Signature=abcdef123&x=1 v1,%s"
                " session /upload/storage/v1/b/e/o?uploadType=resumable&upload_id=ADPycdsecret",
                key,
                "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=",
                extra={"queryUUID": "q-1"},
            )
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    entry = json.loads(line)
    assert entry["severity"] == "WARNING"
    assert entry["queryUUID"] == "q-1"
    assert (
        entry["logging.googleapis.com/trace"]
        == "projects/proj/traces/105445aa7843bc8bf206b12000100000"
    )
    assert key not in line
    assert "abcdef123" not in line
    assert "ADPycdsecret" not in line
    assert "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=" not in line
    assert key.split("_")[1] in line  # the public key id stays, for support


# --------------------------------------------------------------------------------------------
# Customers' webhook URLs in logs (scheme, host, port and path only)
# --------------------------------------------------------------------------------------------

LIBRARY_LOGGERS = ("httpx", "httpcore", "urllib3", "requests", "google.auth")


@pytest.fixture
def json_lines() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Every record the root logger sees, as our JSON lines, with ``logs.configure`` applied."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    saved = root.level, {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logs.configure()  # keeps our handler (already JSON); quiets the libraries
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for name, level in saved[1].items():
            logging.getLogger(name).setLevel(level)


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_real_send_logs_no_part_of_the_customers_query_or_path(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """A webhook POST through httpx leaves neither the URL's query value nor its token path."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        url = f"http://127.0.0.1:{port}/hooks/{PATH_SECRET}?key={QUERY_SECRET}"
        sender = WebhookSender(lambda host, port: ["127.0.0.1"], allow_loopback=True)
        outcome = sender.send(url, b"{}", {})
    finally:
        server.shutdown()
        server.server_close()
    assert outcome.status_code == 200
    text = json.dumps(json_lines())
    assert QUERY_SECRET not in text
    assert PATH_SECRET not in text


def test_any_url_in_any_line_shows_only_scheme_host_port_and_path(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """The formatter's backstop rewrites a URL wherever a library or an exception puts it."""
    library = logging.getLogger("some.library")
    url = f"https://user:{QUERY_SECRET}@hooks.example:8443/h/{PATH_SECRET}?key={QUERY_SECRET}&v"
    try:
        raise ValueError(f"cannot reach '{url}'")
    except ValueError:
        library.warning("POST %s failed", url, exc_info=True, extra={"target": url})
    (entry,) = json_lines()
    text = json.dumps(entry)
    assert QUERY_SECRET not in text
    assert PATH_SECRET not in text
    assert "user" not in text
    shown = "https://hooks.example:8443/h/[redacted]?key=[redacted]&[redacted]"
    assert entry["message"] == f"POST {shown} failed"
    assert entry["target"] == shown
    assert f"cannot reach '{shown}'" in entry["exception"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://yourapp.com/webhook/dataset-export",
            "https://yourapp.com/webhook/dataset-export",
        ),
        (
            "https://a:b@Hooks.Example:8443/in?key=s&flag#frag",
            "https://hooks.example:8443/in?key=[redacted]&[redacted]",
        ),
        (
            "https://hooks.slack.com/services/T0AB12CD3/B0AB12CD3/abcDEF123ghiJKL456mnoPQR",
            "https://hooks.slack.com/services/T0AB12CD3/B0AB12CD3/[redacted]",
        ),
        ("https://h.example/2f1c0e4a-5b6d-4e7f-8a9b-0c1d2e3f4a5b", "https://h.example/[redacted]"),
        (
            "https://h.example/customer-webhook-receiver",
            "https://h.example/customer-webhook-receiver",
        ),
        ("http://[::1]:9000/h?", "http://[::1]:9000/h"),
        ("https://h.example:notaport/x?k=v", "https://[redacted]"),
    ],
)
def test_url_for_log_keeps_scheme_host_port_and_readable_path(url: str, shown: str) -> None:
    """Userinfo and fragment go, query values and long opaque path segments are redacted."""
    assert logs.url_for_log(url) == shown
    assert logs.url_for_log(shown) == shown  # redacting twice changes nothing


def _record(query_uuid: str, key_hash: str, key_id: str, webhook_url: str) -> ExportRecord:
    t0 = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
    return ExportRecord(
        query_uuid=query_uuid,
        account_id="acme",
        key_hash=key_hash,
        key_id=key_id,
        name="export",
        format="csv",
        webhook_url=webhook_url,
        dataset=SubmittedDataset('{"scopes":[{"column":"bed"}]}'),
        status=ExportStatus.SUCCEEDED,
        requested_on=t0,
        completed_on=t0 + dt.timedelta(seconds=2),
        number_rows=1,
        size_bytes=10,
        object_name=f"exports/{query_uuid}.csv.gz",
    )


class _Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 27, 10, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


class _ChattySender(FakeSender):
    """Logs a line of its own per send, as httpx does, with no queryUUID of its own."""

    def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptOutcome:
        logging.getLogger("test.sender").info("sending a webhook")
        return super().send(url, body, headers)


def _notifier(*outcomes: AttemptOutcome, urls: Mapping[str, str]) -> tuple[Notifier, _Clock]:
    store, clock = InMemoryStore(), _Clock()
    kek = b"k" * 32
    _, key = create_api_key(store, "acme", kek=kek, now=clock())
    for query_uuid, url in urls.items():
        store.create_export(_record(query_uuid, key.key_hash, key.key_id, url))
    sender = _ChattySender(*outcomes)
    notifier = Notifier(
        store, sender, kek, b"l" * 32, "https://api.example", clock=clock, rng=random.Random(1)
    )
    return notifier, clock


def test_the_delivery_line_names_the_endpoint_without_its_secrets(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """Our own delivery line shows the webhook as scheme, host and path, secrets redacted."""
    url = f"https://hooks.example/in/{PATH_SECRET}?key={QUERY_SECRET}"
    notifier, _ = _notifier(urls={"q-1": url})
    notifier.deliver("q-1")
    (entry,) = [e for e in json_lines() if e["message"].startswith("webhook delivered")]
    assert entry["webhook"] == "https://hooks.example/in/[redacted]?key=[redacted]"
    assert QUERY_SECRET not in json.dumps(json_lines())


# --------------------------------------------------------------------------------------------
# Log context: each line names the export it is about, and only that one
# --------------------------------------------------------------------------------------------


def _load_function(name: str) -> ModuleType:
    """Import ``functions/<name>/main.py`` as the framework does (its own module)."""
    spec = importlib.util.spec_from_file_location(
        f"{name}_main_under_test", REPO / "functions" / name / "main.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _event(query_uuid: str | None) -> CloudEvent:
    data = base64.b64encode(json.dumps({"queryUUID": query_uuid}).encode()).decode()
    attributes = {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "//pubsub"}
    return CloudEvent(attributes, {"message": {"data": data if query_uuid else "!"}})


def _tagged(entries: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["message"].split(":")[0], e.get("queryUUID")) for e in entries]


def test_notify_events_and_ticks_on_one_thread_tag_only_their_own_export(
    json_lines: Callable[[], list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two exports' events, a retry tick and an unreadable message on one thread tag right."""
    main = _load_function("notify")
    notifier, clock = _notifier(
        AttemptOutcome(503, None, 5, host="a.example"),
        urls={"q-a": "https://a.example/h", "q-b": "https://b.example/h"},
    )
    monkeypatch.setattr(main, "_notifier", lambda: notifier)
    app = flask.Flask("notify-under-test")
    with app.test_request_context("/"):
        main.notify(_event("q-a"))  # 503: a retry is scheduled
        main.notify(_event("q-b"))
    clock.now += dt.timedelta(hours=1)
    with app.test_request_context("/tick"):
        main.notify(_event(None))
    with app.test_request_context("/"):
        main.notify(_event(None))  # unreadable
    logging.getLogger("test.after").info("between requests")
    assert _tagged(json_lines()) == [
        ("sending a webhook", "q-a"),
        ("webhook delivery failed", "q-a"),
        ("sending a webhook", "q-b"),
        ("webhook delivered", "q-b"),
        ("sending a webhook", "q-a"),  # the tick's delivery, not the last event's export
        ("webhook delivered", "q-a"),
        ("retry tick sent 1 due webhook(s)", None),
        ("dropping unreadable ready message", None),
        ("between requests", None),
    ]


def test_http_requests_on_one_thread_tag_their_own_export_and_trace(
    world: World, json_lines: Callable[[], list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests about two exports, interleaved on one thread, each tag only their own lines."""
    api = ExportApi(world.service, max_body_bytes=4096, project="proj")
    headers = {"Content-Type": "application/json", "x-api-key": world.key}
    ids = []
    for _ in range(2):
        answer = api.handle(
            HttpRequest("POST", "/dataset/export", headers, json.dumps(SEED_BODY).encode())
        )
        ids.append(answer.body["queryUUID"])
    a, b = ids

    def broken(*args: object) -> None:
        logging.getLogger("test.api").info("rendering the status")
        raise RuntimeError("status rendering broke")

    monkeypatch.setattr(api, "_status", broken)
    trace_a = {"X-Cloud-Trace-Context": "aaaa0000aaaa0000aaaa0000aaaa0000/1;o=1"}
    for query_uuid, extra in ((a, trace_a), (b, {}), (a, {})):
        answer = api.handle(HttpRequest("GET", f"/dataset/export/{query_uuid}", headers | extra))
        assert answer.status == 500
        logging.getLogger("test.after").info("between requests")
    lines = [e for e in json_lines() if not e["message"].startswith("export queued")]
    assert [(e["message"], e.get("queryUUID")) for e in lines] == [
        ("rendering the status", a),
        ("unexpected error", a),
        ("between requests", None),
        ("rendering the status", b),
        ("unexpected error", b),
        ("between requests", None),
        ("rendering the status", a),
        ("unexpected error", a),
        ("between requests", None),
    ]
    traces = [e.get("logging.googleapis.com/trace") for e in lines]
    assert traces[:3] == ["projects/proj/traces/aaaa0000aaaa0000aaaa0000aaaa0000"] * 2 + [None]
    assert traces[3:] == [None] * 6


def test_nested_scopes_restore_the_outer_export_and_tag_needs_a_scope(
    json_lines: Callable[[], list[dict[str, Any]]],
) -> None:
    """An inner scope's export ends with it; tagging outside every scope is refused."""
    log = logging.getLogger("test.scopes")
    with logs.scope("q-a"):
        log.info("a")
        with logs.scope("q-b"):
            log.info("b")
            logs.tag("q-c")
            log.info("c")
        log.info("a again")
    log.info("none")
    assert _tagged(json_lines()) == [
        ("a", "q-a"),
        ("b", "q-b"),
        ("c", "q-c"),
        ("a again", "q-a"),
        ("none", None),
    ]
    with pytest.raises(RuntimeError, match=r"outside logs\.scope"):
        logs.tag("q-d")
