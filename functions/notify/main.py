"""Pub/Sub-triggered Cloud Function ``notify``: send the signed webhook of a finished export.

Pushed to ``/`` by the ``export-ready`` subscription (one message per finished export or
redelivery) and to ``/tick`` by the ``export-retry-tick`` subscription (Cloud Scheduler every
minute; a local ticker in the stack), which sends every retry that is due. Returning normally
acknowledges; a transient failure answers 503 so Pub/Sub delivers the message again.
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
from dataset_export.service.notify import Notifier
from dataset_export.wiring import build_notifier

logs.configure()
log = logging.getLogger("notify")


@functools.cache
def _notifier() -> Notifier:
    return build_notifier(Settings.from_env())


@functions_framework.cloud_event
@logs.scoped
def notify(cloud_event: CloudEvent) -> None:
    """Deliver one export's webhook, or every due retry on a tick."""
    try:
        if flask.request.path.rstrip("/").endswith("/tick"):
            sent = _notifier().send_due()
            if sent:
                log.info("retry tick sent %d due webhook(s)", sent)
            return
        try:
            message = decode_message(cloud_event.data)
        except PermanentError as exc:
            log.error("dropping unreadable ready message", extra={"reason": str(exc)})
            return
        logs.tag(message.query_uuid)
        _notifier().deliver(message.query_uuid)
    except TransientError as exc:
        log.warning("transient failure, Pub/Sub will redeliver: %s", exc)
        flask.abort(503)
