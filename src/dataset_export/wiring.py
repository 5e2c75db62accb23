"""The composition root: real adapters plugged into the service, built once per instance."""

from __future__ import annotations

from .adapters.dns import resolve
from .adapters.firestore_store import FirestoreStore
from .adapters.pubsub_queue import PubSubQueue
from .config import Settings
from .core.catalog import RENTAL_LISTINGS
from .http_api import ExportApi
from .service.submit import ExportService


def build_export_api(settings: Settings) -> ExportApi:
    """The HTTP API on Firestore, Pub/Sub and the system resolver."""
    service = ExportService(
        store=FirestoreStore.for_project(settings.project),
        queue=PubSubQueue(settings.project, settings.requests_topic),
        resolver=resolve,
        catalog=RENTAL_LISTINGS,
        max_rows=settings.max_rows,
        rate_limit_per_minute=settings.rate_limit_per_minute,
        allow_loopback_webhooks=settings.is_local,
    )
    return ExportApi(service=service, max_body_bytes=settings.max_body_bytes)
