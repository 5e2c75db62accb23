"""Decoding the Pub/Sub CloudEvents that trigger the process and notify functions."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .core.errors import PermanentError

# The ``kind`` attribute of our messages: both topics dead-letter into one topic.
REQUEST_KIND = "export-request"
READY_KIND = "export-ready"
PART_KIND = "export-part"
# Set by Pub/Sub on a message it forwards to the dead-letter topic.
_DEAD_LETTER_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"


@dataclass(frozen=True)
class PubSubMessage:
    """The parts of a pushed Pub/Sub message the functions use."""

    message_id: str
    query_uuid: str
    attributes: Mapping[str, str]
    delivery_attempt: int | None
    part: int | None = None  # the part's index, in a message of the parts topic

    @property
    def kind(self) -> str | None:
        """``REQUEST_KIND``, ``READY_KIND`` or ``PART_KIND`` (the ``kind`` attribute), or None."""
        return self.attributes.get("kind")

    @property
    def dead_letter_attempts(self) -> int | None:
        """How often Pub/Sub tried the message before it dead-lettered it, or None."""
        attempts = self.attributes.get(_DEAD_LETTER_COUNT)
        return int(attempts) if attempts else None


def decode_message(event_data: Mapping[str, Any]) -> PubSubMessage:
    """Read ``{"message": {...}}`` as Eventarc and the emulator's push deliver it.

    A message we cannot read is a ``PermanentError``: redelivering it cannot help.
    """
    message = event_data.get("message") or {}
    try:
        payload = json.loads(base64.b64decode(message.get("data") or b"", validate=True) or b"{}")
    except (binascii.Error, ValueError) as exc:
        raise PermanentError(f"message data is not base64 JSON: {exc}") from exc
    attributes = dict(message.get("attributes") or {})
    query_uuid = (payload if isinstance(payload, dict) else {}).get("queryUUID") or attributes.get(
        "queryUUID"
    )
    if not isinstance(query_uuid, str) or not query_uuid:
        raise PermanentError("message carries no queryUUID")
    part = (payload if isinstance(payload, dict) else {}).get("part", attributes.get("part"))
    if part is not None:
        if isinstance(part, str) and part.isdigit():
            part = int(part)
        if isinstance(part, bool) or not isinstance(part, int) or part < 0:
            raise PermanentError(f"message carries an invalid part index {part!r}")
    attempt = event_data.get("deliveryAttempt")
    return PubSubMessage(
        part=part,
        message_id=str(message.get("messageId") or message.get("message_id") or ""),
        query_uuid=query_uuid,
        attributes=attributes,
        delivery_attempt=int(attempt)
        if isinstance(attempt, int | str) and str(attempt).isdigit()
        else None,
    )
