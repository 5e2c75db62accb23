"""The composition root: real adapters plugged into the services, built once per instance."""

from __future__ import annotations

import ssl

import httpx
from google.cloud import storage

from .adapters.datasets import FixedDataset
from .adapters.dns import resolve
from .adapters.firestore_store import FirestoreStore
from .adapters.gcs_storage import GcsDataset, GcsExportStorage, UrlSigner
from .adapters.pubsub_publisher import PubSubPublisher
from .adapters.webhook_sender import WebhookSender
from .config import Settings
from .core.catalog import RENTAL_LISTINGS
from .events import PART_KIND, READY_KIND, REQUEST_KIND
from .http_api import ExportApi
from .service.downloads import Downloads
from .service.notify import Notifier, Redelivery
from .service.ports import ExportEngine
from .service.process import ExportRunner
from .service.submit import ExportService


def _store(settings: Settings) -> FirestoreStore:
    """The deployment's own Firestore database (EXPORT_FIRESTORE_DATABASE)."""
    return FirestoreStore.for_project(settings.project, settings.firestore_database)


def build_export_api(settings: Settings) -> ExportApi:
    """The HTTP API on Firestore, Pub/Sub, Cloud Storage and the system resolver."""
    settings.require("link_signing_key", "public_url")
    store = _store(settings)
    service = ExportService(
        store=store,
        queue=PubSubPublisher(settings.project, settings.requests_topic, REQUEST_KIND),
        resolver=resolve,
        catalog=RENTAL_LISTINGS,
        max_rows=settings.max_rows,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        allow_loopback_webhooks=settings.is_local,
    )
    signer = UrlSigner(
        storage.Client(project=settings.project),
        settings.exports_bucket,
        key_file=settings.url_signer_key_file or None,
        endpoint=settings.storage_endpoint or None,
    )
    downloads = Downloads(store, signer, settings.link_signing_key, settings.public_url)
    redelivery = Redelivery(
        store, PubSubPublisher(settings.project, settings.ready_topic, READY_KIND)
    )
    return ExportApi(
        service=service,
        max_body_bytes=settings.max_body_bytes,
        downloads=downloads,
        redelivery=redelivery,
        project=settings.project,
    )


def _engine(settings: Settings) -> ExportEngine:
    """The engine the dataset's source asks for: DuckDB over a Parquet file, or BigQuery."""
    # Imported here so the submit and notify functions never load DuckDB or BigQuery.
    if settings.engine == "bigquery":
        from .adapters.bigquery_engine import BigQueryEngine, bigquery_clients

        settings.require("bigquery_temp_dataset")
        client, read_client = bigquery_clients(
            settings.project,
            settings.bigquery_location,
            rest_endpoint=settings.bigquery_endpoint,
            grpc_endpoint=settings.bigquery_grpc_endpoint,
        )
        return BigQueryEngine(
            client,
            read_client,
            temp_dataset=str(settings.bigquery_temp_dataset),
            location=settings.bigquery_location,
            max_bytes_billed=settings.bigquery_max_bytes_billed,
            # The emulator cannot read a query's own result table through Storage Read.
            ordered_results="table" if settings.bigquery_grpc_endpoint else "destination",
        )
    from .engine.duckdb_engine import DuckDbEngine

    return DuckDbEngine()


def build_export_runner(settings: Settings) -> ExportRunner:
    """The process use case on Firestore, Cloud Storage, Pub/Sub and the dataset's engine."""
    settings.require("dataset_uri")
    client = storage.Client(project=settings.project)
    uri = str(settings.dataset_uri)
    datasets = GcsDataset(client, uri) if uri.startswith("gs://") else FixedDataset(uri)
    return ExportRunner(
        store=_store(settings),
        storage=GcsExportStorage(client, settings.exports_bucket),
        ready=PubSubPublisher(settings.project, settings.ready_topic, READY_KIND),
        engine=_engine(settings),
        datasets=datasets,
        catalog=RENTAL_LISTINGS,
        parts_queue=PubSubPublisher(settings.project, settings.parts_topic, PART_KIND),
        part_rows=settings.part_rows,
        max_parts=settings.max_parts,
    )


def _webhook_tls(settings: Settings) -> ssl.SSLContext | bool:
    """The public CAs, plus the local stack's own CA when one is configured (local only)."""
    if not settings.webhook_ca_file:
        return True
    context = httpx.create_ssl_context(trust_env=False)
    context.load_verify_locations(cafile=settings.webhook_ca_file)
    return context


def build_notifier(settings: Settings) -> Notifier:
    """The notify use case on Firestore and the safe webhook sender."""
    settings.require("key_encryption_key", "link_signing_key", "public_url")
    return Notifier(
        store=_store(settings),
        sender=WebhookSender(
            resolve, allow_loopback=settings.is_local, verify=_webhook_tls(settings)
        ),
        kek=settings.key_encryption_key,
        link_key=settings.link_signing_key,
        public_url=settings.public_url,
        retry_concurrency=settings.retry_concurrency,
    )
