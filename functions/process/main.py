"""Pub/Sub-triggered Cloud Function ``process``: run an export into one gzip file in GCS.

Pushed to ``/`` by the ``export-requests`` subscription (an export, or its plan as parts) and the
``export-parts`` subscription (one part; the message's ``kind`` attribute tells them apart), and
to ``/dead-letter`` by the dead-letter topic's subscription. Returning normally acknowledges the
message; a transient failure answers 503 so Pub/Sub delivers it again with backoff.
"""

from __future__ import annotations

import functools
import logging

import flask
import functions_framework
from cloudevents.http import CloudEvent

from dataset_export import logs
from dataset_export.config import Settings
from dataset_export.core.errors import PermanentError, TransientError
from dataset_export.events import decode_message
from dataset_export.service.process import ExportRunner
from dataset_export.wiring import build_export_runner

logs.configure()
log = logging.getLogger("process")


@functools.cache
def _runner() -> ExportRunner:
    return build_export_runner(Settings.from_env())


@functions_framework.cloud_event
@logs.scoped
def process(cloud_event: CloudEvent) -> None:
    """Decode the message (and whether it came to /dead-letter), hand it over, ack or nack."""
    try:
        message = decode_message(cloud_event.data)
    except PermanentError as exc:
        log.error("dropping unreadable message", extra={"reason": str(exc)})
        return
    logs.tag(message.query_uuid)
    dead_letter = flask.request.path.rstrip("/").endswith("/dead-letter")
    try:
        _runner().handle_message(message, dead_letter=dead_letter)
    except TransientError as exc:
        log.warning("transient failure, Pub/Sub will redeliver: %s", exc)
        flask.abort(503)
