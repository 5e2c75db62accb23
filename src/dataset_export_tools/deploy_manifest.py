"""The deployment's contract with the code: what each Cloud Function is, reads and talks to.

One table, used by the bundle builder (``dataset_export_tools.bundle``) and checked against the
code and against ``infra/terraform`` by ``tests/unit/test_terraform_wiring.py``. It is tooling:
the functions do not import it, and it is not in their bundles. Topic and subscription names are
the ones the local stack creates, so the emulators and Google Cloud are wired alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

Trigger = Literal["http", "pubsub"]

REQUESTS_TOPIC: Final = "export-requests"
READY_TOPIC: Final = "export-ready"
#: One message per part of an export planned as parts (``kind=export-part``), published and
#: consumed by process.
PARTS_TOPIC: Final = "export-parts"
DEAD_LETTER_TOPIC: Final = "export-dead-letter"
RETRY_TICK_TOPIC: Final = "export-retry-tick"
#: The ``kind`` attribute (and JSON ``kind``) of the scheduler's retry-tick messages.
RETRY_TICK_KIND: Final = "retry-tick"
DEAD_LETTER_PATH: Final = "/dead-letter"
RETRY_TICK_PATH: Final = "/tick"

#: Settings every function needs: ``Settings.from_env`` fails without the first and the third,
#: and production must say it is production.
COMMON_ENV: Final = frozenset({"GOOGLE_CLOUD_PROJECT", "EXPORT_ENV", "EXPORT_BUCKET"})
#: The deployment's own Firestore database. Every function reads it, and each states so on its
#: own (not in COMMON_ENV), so the wiring test fails when one of them stops reading it.
FIRESTORE_ENV: Final = frozenset({"EXPORT_FIRESTORE_DATABASE"})

#: Settings ``config.py`` reads that the cloud deployment deliberately leaves unset, and why.
NOT_DEPLOYED: Final[Mapping[str, str]] = {
    "GCP_PROJECT": "legacy alias of GOOGLE_CLOUD_PROJECT, which is set",
    "EXPORT_DEAD_LETTER_TOPIC": "Pub/Sub itself publishes dead letters; no function does",
    "EXPORT_URL_SIGNER_KEY_FILE": "local only: in the cloud submit signs URLs through IAM signBlob",
    "STORAGE_EMULATOR_HOST": "local only: the GCS emulator",
    "BIGQUERY_EMULATOR_HOST": "local only: the BigQuery emulator's REST API",
    "BIGQUERY_EMULATOR_GRPC_HOST": "local only: the BigQuery emulator's Storage Read API",
    "EXPORT_WEBHOOK_CA_FILE": "local only: the local stack's CA for its HTTPS demo receiver",
}


@dataclass(frozen=True)
class Push:
    """A Pub/Sub push subscription delivering one topic to one path of a function."""

    subscription: str
    topic: str
    path: str
    #: Pub/Sub's push timeout: above the function's own timeout, so no concurrent redelivery.
    ack_deadline_seconds: int
    #: Deliveries before the message moves to the dead-letter topic; None: no dead-lettering.
    max_delivery_attempts: int | None
    #: How long an unacknowledged message is kept (a retry tick is worthless after minutes).
    retention_seconds: int = 7 * 24 * 3600


@dataclass(frozen=True)
class FunctionSpec:
    """One Cloud Function: its source folder, entry point, trigger and configuration."""

    #: ``functions/<name>/main.py``; the deployed function is ``export-<name>``.
    name: str
    entry_point: str
    trigger: Trigger
    #: Plain environment variables the function reads (Terraform sets exactly these).
    env: frozenset[str]
    #: Environment variables that come from Secret Manager.
    secrets: frozenset[str]
    #: Environment variables naming the topics the function publishes to.
    publishes: frozenset[str]
    #: Push subscriptions that deliver to the function (pubsub triggers only).
    pushes: tuple[Push, ...]
    #: Extras of the project, beyond its dependencies, that the function installs: its
    #: ``requirements.txt`` is ``uv.lock`` exported for them (``dataset_export_tools.lockfile``).
    extras: tuple[str, ...] = ()
    #: Modules imported lazily at run time: the bundle test imports them too.
    runtime_modules: tuple[str, ...] = ()
    #: Distributions the function must never need (kept out of its requirements and imports).
    forbidden: tuple[str, ...] = ()

    @property
    def deployed_name(self) -> str:
        """The Cloud Functions (and Cloud Run service) name."""
        return f"export-{self.name}"


#: The ``engine`` extra (pyproject.toml): only process installs it.
_ENGINE = ("duckdb", "pyarrow", "numpy", "isal")

FUNCTIONS: Final[Mapping[str, FunctionSpec]] = {
    spec.name: spec
    for spec in (
        FunctionSpec(
            name="submit",
            entry_point="submit",
            trigger="http",
            env=COMMON_ENV
            | FIRESTORE_ENV
            | {
                "EXPORT_REQUESTS_TOPIC",
                "EXPORT_READY_TOPIC",
                "EXPORT_PUBLIC_URL",
                "EXPORT_MAX_ROWS",
                "EXPORT_MAX_BODY_BYTES",
                "EXPORT_RATE_LIMIT_PER_MINUTE",
            },
            secrets=frozenset({"EXPORT_LINK_SIGNING_KEY"}),
            # New exports, and redeliveries (POST .../redeliver publishes a ready message).
            publishes=frozenset({"EXPORT_REQUESTS_TOPIC", "EXPORT_READY_TOPIC"}),
            pushes=(),
            forbidden=_ENGINE,
        ),
        FunctionSpec(
            name="process",
            entry_point="process",
            trigger="pubsub",
            env=COMMON_ENV
            | FIRESTORE_ENV
            | {
                "EXPORT_READY_TOPIC",
                "EXPORT_DATASET_URI",
                "EXPORT_PARTS_TOPIC",
                "EXPORT_PART_ROWS",
                "EXPORT_MAX_PARTS",
                # The BigQuery engine's settings, read when EXPORT_DATASET_URI is a bq:// table
                # (Terraform sets them either way; the temporary dataset is "" without one).
                "EXPORT_BIGQUERY_TEMP_DATASET",
                "EXPORT_BIGQUERY_MAX_BYTES_BILLED",
                "EXPORT_BIGQUERY_LOCATION",
            },
            secrets=frozenset(),
            # A finished export announces itself; an export planned as parts publishes one
            # message per part, which process itself receives.
            publishes=frozenset({"EXPORT_READY_TOPIC", "EXPORT_PARTS_TOPIC"}),
            pushes=(
                Push(
                    subscription="export-requests-process",
                    topic=REQUESTS_TOPIC,
                    path="/",
                    ack_deadline_seconds=600,
                    max_delivery_attempts=10,
                ),
                # The parts of an export, delivered to the same path as the requests (the
                # message's ``kind`` attribute tells them apart), with the same limits: a part
                # runs as long as an export may.
                Push(
                    subscription="export-parts-process",
                    topic=PARTS_TOPIC,
                    path="/",
                    ack_deadline_seconds=600,
                    max_delivery_attempts=10,
                ),
                # Dead letters of the three dead-lettering subscriptions: process records the
                # export as failed (or, for a ready message, leaves it to notify's own retries).
                Push(
                    subscription="export-dead-letter-process",
                    topic=DEAD_LETTER_TOPIC,
                    path=DEAD_LETTER_PATH,
                    ack_deadline_seconds=60,
                    max_delivery_attempts=None,
                ),
            ),
            extras=("engine",),
            runtime_modules=(
                "dataset_export.engine.duckdb_engine",
                "dataset_export.engine.render",
                "dataset_export.engine.gzip_sink",
                "isal.isal_zlib",
            ),
        ),
        FunctionSpec(
            name="notify",
            entry_point="notify",
            trigger="pubsub",
            env=COMMON_ENV | FIRESTORE_ENV | {"EXPORT_PUBLIC_URL", "EXPORT_RETRY_CONCURRENCY"},
            secrets=frozenset({"EXPORT_KEY_ENCRYPTION_KEY", "EXPORT_LINK_SIGNING_KEY"}),
            publishes=frozenset(),
            pushes=(
                Push(
                    subscription="export-ready-notify",
                    topic=READY_TOPIC,
                    path="/",
                    ack_deadline_seconds=60,
                    max_delivery_attempts=5,
                ),
                # Cloud Scheduler publishes a tick every minute; notify sends the due retries,
                # a batch of attempts that may take minutes, hence the longest deadline.
                Push(
                    subscription="export-retry-tick-notify",
                    topic=RETRY_TICK_TOPIC,
                    path=RETRY_TICK_PATH,
                    ack_deadline_seconds=600,
                    max_delivery_attempts=None,
                    retention_seconds=600,
                ),
            ),
            runtime_modules=("dataset_export.adapters.webhook_sender",),
            forbidden=_ENGINE,
        ),
    )
}

#: Every topic of the deployment.
TOPICS: Final = frozenset(
    {REQUESTS_TOPIC, READY_TOPIC, PARTS_TOPIC, DEAD_LETTER_TOPIC, RETRY_TICK_TOPIC}
)
