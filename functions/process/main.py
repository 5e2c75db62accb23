"""Pub/Sub-triggered Cloud Function ``process``: runs an export (built in issue #3).

For now it decodes the request message and logs it, so the stack's wiring (topic, push
subscription, retry and dead-letter policies) is exercised end to end; the export stays queued.
"""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from dataset_export import logs
from dataset_export.core.errors import PermanentError
from dataset_export.events import decode_message

logs.configure()
log = logging.getLogger("process")


@functions_framework.cloud_event
def process(cloud_event: CloudEvent) -> None:
    """Acknowledge an export request after logging it (the engine lands with issue #3)."""
    try:
        message = decode_message(cloud_event.data)
    except PermanentError as exc:
        log.error("dropping unreadable export request", extra={"reason": str(exc)})
        return
    log.info(
        "export request received",
        extra={"queryUUID": message.query_uuid, "messageId": message.message_id},
    )
