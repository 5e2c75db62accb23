"""Settings read from the environment: the one place the service reads ``os.environ``.

Each function builds ``Settings.from_env()`` once at cold start and hands plain values to the core.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .core.errors import ConfigError
from .core.parts import DEFAULT_MAX_PARTS, DEFAULT_PART_ROWS, MAX_PARTS_LIMIT
from .core.source import (
    DEFAULT_BIGQUERY_LOCATION,
    DEFAULT_BIGQUERY_MAX_BYTES_BILLED,
    MIN_BYTES_BILLED,
    BigQueryDataset,
    BigQueryTable,
    DatasetSource,
    Engine,
    bigquery_location_problem,
    parse_bigquery_dataset,
    parse_dataset_source,
)

LOCAL = "local"
PRODUCTION = "production"

#: The Firestore database used when EXPORT_FIRESTORE_DATABASE is not set: the project's own.
DEFAULT_FIRESTORE_DATABASE = "(default)"
#: Firestore's rule for a database ID: 4-63 characters, lowercase letters, digits and hyphens,
#: a letter first, a letter or digit last, and not shaped like a UUID.
FIRESTORE_DATABASE_ID = re.compile(r"[a-z][a-z0-9-]{2,61}[a-z0-9]")
_UUID_LIKE = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")


def firestore_database_problem(database: str) -> str | None:
    """Why ``database`` (the value of EXPORT_FIRESTORE_DATABASE) is not a database ID, or None."""
    if database == DEFAULT_FIRESTORE_DATABASE:
        return None
    if FIRESTORE_DATABASE_ID.fullmatch(database) and not _UUID_LIKE.fullmatch(database):
        return None
    return (
        f"EXPORT_FIRESTORE_DATABASE must be {DEFAULT_FIRESTORE_DATABASE} or a Firestore "
        "database ID (4-63 lowercase letters, digits and hyphens, starting with a letter, "
        f"not ending with a hyphen, not a UUID), got {database!r}"
    )


@dataclass(frozen=True)
class Settings:
    """Everything a function needs to know about where it runs."""

    project: str
    env: str
    requests_topic: str
    ready_topic: str
    #: The topic of part messages: one per part of an export planned as parts.
    parts_topic: str
    dead_letter_topic: str
    exports_bucket: str
    #: The Firestore database of this deployment (accounts, keys, exports, rate counters).
    firestore_database: str
    dataset_uri: str
    key_encryption_key: bytes
    link_signing_key: bytes
    url_signer_key_file: str
    storage_endpoint: str
    public_url: str
    max_rows: int
    max_body_bytes: int
    rate_limit_per_minute: int
    #: Due webhook retries one retry tick sends at once (``Notifier.retry_concurrency``).
    retry_concurrency: int
    #: Target rows per part of an export that can be split (``core.parts.plan_parts``).
    part_rows: int = DEFAULT_PART_ROWS
    #: At most this many parts per export (two compose rounds of 32 hold 1024).
    max_parts: int = DEFAULT_MAX_PARTS
    webhook_ca_file: str = ""
    #: ``dataset_uri`` parsed: a Parquet file (DuckDB) or a BigQuery table (BigQuery); None when
    #: EXPORT_DATASET_URI is not set (submit and notify query nothing).
    dataset_source: DatasetSource | None = None
    #: ``PROJECT.DATASET`` where each BigQuery export's result table is created (required when
    #: the source is a BigQuery table).
    bigquery_temp_dataset: BigQueryDataset | None = None
    #: A BigQuery export's ``maximum_bytes_billed``: the dry run refuses a query above it.
    bigquery_max_bytes_billed: int = DEFAULT_BIGQUERY_MAX_BYTES_BILLED
    #: Where BigQuery runs the jobs: the location of the source table and the temporary dataset.
    bigquery_location: str = DEFAULT_BIGQUERY_LOCATION
    #: The local BigQuery emulator's REST endpoint and Storage Read (gRPC) address, when set.
    bigquery_endpoint: str = ""
    bigquery_grpc_endpoint: str = ""

    @property
    def engine(self) -> Engine:
        """Which engine runs exports: ``bigquery`` for a BigQuery table, else ``duckdb``."""
        return self.dataset_source.engine if self.dataset_source is not None else "duckdb"

    @property
    def is_local(self) -> bool:
        """True in the local stack, where loopback webhooks are allowed."""
        return self.env == LOCAL

    def require(self, *names: str) -> None:
        """Fail at cold start, naming every setting this function needs but lacks."""
        env_names = {
            "key_encryption_key": "EXPORT_KEY_ENCRYPTION_KEY",
            "link_signing_key": "EXPORT_LINK_SIGNING_KEY",
            "dataset_uri": "EXPORT_DATASET_URI",
            "public_url": "EXPORT_PUBLIC_URL",
            "bigquery_temp_dataset": "EXPORT_BIGQUERY_TEMP_DATASET",
        }
        missing = [env_names.get(n, n) for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError(
                "invalid configuration: " + "; ".join(f"{m} is not set" for m in missing)
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings, failing with one message that names every problem."""
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def need(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                problems.append(f"{name} is not set")
            return value

        def integer(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name} must be an integer, got {raw!r}")
                return default
            if value <= 0:
                problems.append(f"{name} must be positive, got {value}")
            return value

        project = env.get("GOOGLE_CLOUD_PROJECT", "").strip() or env.get("GCP_PROJECT", "").strip()
        if not project:
            problems.append("GOOGLE_CLOUD_PROJECT is not set")
        mode = env.get("EXPORT_ENV", PRODUCTION).strip() or PRODUCTION
        if mode not in (LOCAL, PRODUCTION):
            problems.append(f"EXPORT_ENV must be '{LOCAL}' or '{PRODUCTION}', got {mode!r}")
        database = env.get("EXPORT_FIRESTORE_DATABASE", "").strip() or DEFAULT_FIRESTORE_DATABASE
        database_problem = firestore_database_problem(database)
        if database_problem:
            problems.append(database_problem)

        def key32(name: str) -> bytes:
            # Secrets are optional here; each function states what it needs with require().
            text = env.get(name, "").strip()
            if not text:
                return b""
            try:
                value = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                problems.append(f"{name} must be base64")
                return b""
            if len(value) != 32:
                problems.append(f"{name} must decode to 32 bytes")
            return value

        dataset_uri = env.get("EXPORT_DATASET_URI", "").strip()
        dataset_source: DatasetSource | None = None
        if dataset_uri:
            try:
                dataset_source = parse_dataset_source(dataset_uri)
            except ValueError as error:
                problems.append(f"EXPORT_DATASET_URI {error}")
        temp_dataset_text = env.get("EXPORT_BIGQUERY_TEMP_DATASET", "").strip()
        temp_dataset: BigQueryDataset | None = None
        if temp_dataset_text:
            try:
                temp_dataset = parse_bigquery_dataset(temp_dataset_text)
            except ValueError as error:
                problems.append(f"EXPORT_BIGQUERY_TEMP_DATASET {error}")
        elif isinstance(dataset_source, BigQueryTable):
            problems.append(
                "EXPORT_BIGQUERY_TEMP_DATASET is not set: a BigQuery table in EXPORT_DATASET_URI "
                "needs a PROJECT.DATASET for each export's result table"
            )
        location = env.get("EXPORT_BIGQUERY_LOCATION", "").strip() or DEFAULT_BIGQUERY_LOCATION
        location_problem = bigquery_location_problem(location)
        if location_problem:
            problems.append(f"EXPORT_BIGQUERY_LOCATION {location_problem}")

        settings = cls(
            project=project,
            env=mode,
            requests_topic=env.get("EXPORT_REQUESTS_TOPIC", "export-requests"),
            ready_topic=env.get("EXPORT_READY_TOPIC", "export-ready"),
            parts_topic=env.get("EXPORT_PARTS_TOPIC", "export-parts"),
            dead_letter_topic=env.get("EXPORT_DEAD_LETTER_TOPIC", "export-dead-letter"),
            exports_bucket=need("EXPORT_BUCKET"),
            firestore_database=database,
            dataset_uri=dataset_uri,
            key_encryption_key=key32("EXPORT_KEY_ENCRYPTION_KEY"),
            link_signing_key=key32("EXPORT_LINK_SIGNING_KEY"),
            url_signer_key_file=env.get("EXPORT_URL_SIGNER_KEY_FILE", "").strip(),
            storage_endpoint=env.get("STORAGE_EMULATOR_HOST", "").strip(),
            public_url=env.get("EXPORT_PUBLIC_URL", "").strip().rstrip("/"),
            max_rows=integer("EXPORT_MAX_ROWS", 50_000_000),
            # 64 KiB keeps the webhook, which echoes the dataset, under express.json()'s
            # default 100 kB limit.
            max_body_bytes=integer("EXPORT_MAX_BODY_BYTES", 64 * 1024),
            rate_limit_per_minute=integer("EXPORT_RATE_LIMIT_PER_MINUTE", 60),
            # notify.RETRY_CONCURRENCY (a test checks): 50 due retries that all hang until the
            # sender's timeout still fit one tick's budget.
            retry_concurrency=integer("EXPORT_RETRY_CONCURRENCY", 16),
            part_rows=integer("EXPORT_PART_ROWS", DEFAULT_PART_ROWS),
            max_parts=integer("EXPORT_MAX_PARTS", DEFAULT_MAX_PARTS),
            webhook_ca_file=env.get("EXPORT_WEBHOOK_CA_FILE", "").strip(),
            dataset_source=dataset_source,
            bigquery_temp_dataset=temp_dataset,
            bigquery_max_bytes_billed=integer(
                "EXPORT_BIGQUERY_MAX_BYTES_BILLED", DEFAULT_BIGQUERY_MAX_BYTES_BILLED
            ),
            bigquery_location=location,
            bigquery_endpoint=env.get("BIGQUERY_EMULATOR_HOST", "").strip(),
            bigquery_grpc_endpoint=env.get("BIGQUERY_EMULATOR_GRPC_HOST", "").strip(),
        )
        cap = settings.bigquery_max_bytes_billed
        if 0 < cap < MIN_BYTES_BILLED:
            problems.append(
                f"EXPORT_BIGQUERY_MAX_BYTES_BILLED must be at least {MIN_BYTES_BILLED} "
                f"(BigQuery bills at least 10 MiB a query), got {cap}"
            )
        if settings.max_parts > MAX_PARTS_LIMIT:
            problems.append(
                f"EXPORT_MAX_PARTS must be at most {MAX_PARTS_LIMIT}, got {settings.max_parts}"
            )
        if settings.webhook_ca_file and not settings.is_local:
            # Production trusts only the public web PKI: a customer's endpoint must have a real
            # certificate, and no extra CA may widen that.
            problems.append("EXPORT_WEBHOOK_CA_FILE is for the local stack only (EXPORT_ENV=local)")
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return settings
