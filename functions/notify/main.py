"""Pub/Sub-triggered Cloud Function ``notify``: sends the signed webhook (built in issue #4).

For now it decodes the ready message and logs it, so the stack's wiring is exercised.
"""

from __future__ import annotations

import logging

import functions_framework
from cloudevents.http import CloudEvent

from dataset_export import logs
from dataset_export.core.errors import PermanentError
from dataset_export.events import decode_message

logs.configure()
log = logging.getLogger("notify")


@functions_framework.cloud_event
def notify(cloud_event: CloudEvent) -> None:
    """Acknowledge a ready message after logging it (delivery lands with issue #4)."""
    try:
        message = decode_message(cloud_event.data)
    except PermanentError as exc:
        log.error("dropping unreadable ready message", extra={"reason": str(exc)})
        return
    log.info(
        "export ready message received",
        extra={"queryUUID": message.query_uuid, "messageId": message.message_id},
    )
