"""The webhook's signatures, and the bytes they are computed over.

Three signatures, all HMAC-SHA256 keyed with the customer's API key (its UTF-8 bytes):

* ``hmacSignature`` (in the body, the seed's scheme): hex, over ``JSON.stringify(payload)`` as
  the seed's Express handler computes it after ``express.json()`` parsed our body. See
  :func:`payload_signature`; it covers the echoed dataset only, not the download link.
* ``SHA256-HMAC-Signature`` header: hex, over the raw body bytes (:func:`body_signature`).
* Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-id``, ``webhook-timestamp``
  and ``webhook-signature: v1,<base64>`` over ``"{id}.{timestamp}.{body}"``
  (:func:`standard_webhook_headers`). The Standard Webhooks libraries take the secret as base64,
  optionally prefixed ``whsec_``, so a receiver builds its verifier from the API key like this::

      // Node, npm "standardwebhooks"
      new Webhook(Buffer.from(apiKey, "utf8").toString("base64")).verify(rawBody, req.headers)
      # Python, PyPI "standardwebhooks"
      Webhook(base64.b64encode(api_key.encode()).decode()).verify(raw_body, headers)

  (:func:`standard_webhooks_secret` returns that string with the ``whsec_`` prefix.)

The body itself is written by :func:`encode_webhook_body`: compact UTF-8 JSON with the payload's
numbers spelled exactly as the customer sent them, so the receiver's ``JSON.parse`` sees the very
literals we rounded in :func:`~dataset_export.core.jsstringify.js_stringify`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping

from .jsontext import dump_preserving
from .jsstringify import js_quote, js_stringify

__all__ = [
    "BODY_SIGNATURE_HEADER",
    "body_signature",
    "encode_body",
    "encode_webhook_body",
    "payload_signature",
    "standard_webhook_headers",
    "standard_webhook_signature",
    "standard_webhooks_secret",
]

BODY_SIGNATURE_HEADER = "SHA256-HMAC-Signature"


def _mac(api_key: str, data: bytes) -> bytes:
    if not api_key:
        raise ValueError("the API key must not be empty")
    return hmac.new(api_key.encode("utf-8"), data, hashlib.sha256).digest()


def payload_signature(api_key: str, payload_value: object) -> str:
    """Return the body's ``hmacSignature``: hex HMAC-SHA256 over ``JSON.stringify(payload)``."""
    return _mac(api_key, js_stringify(payload_value).encode("utf-8")).hex()


def body_signature(api_key: str, body: bytes) -> str:
    """Return the ``SHA256-HMAC-Signature`` header: hex HMAC-SHA256 of the raw body bytes."""
    return _mac(api_key, body).hex()


def standard_webhooks_secret(api_key: str) -> str:
    """Return the API key as a Standard Webhooks secret (``whsec_`` + base64 of its UTF-8)."""
    return "whsec_" + base64.b64encode(api_key.encode("utf-8")).decode("ascii")


def standard_webhook_signature(api_key: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return ``v1,<base64 HMAC-SHA256 over "{msg_id}.{timestamp}.{body}">``."""
    if not msg_id:
        raise ValueError("the webhook id must not be empty")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp < 0:
        raise ValueError("the webhook timestamp must be a non-negative whole number of seconds")
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(_mac(api_key, signed)).decode("ascii")


def standard_webhook_headers(
    api_key: str, msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Return the Standard Webhooks headers ``webhook-id``, ``-timestamp`` and ``-signature``."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_webhook_signature(api_key, msg_id, timestamp, body),
    }


def encode_webhook_body(
    fields: Iterable[tuple[str, object]], payload_key: str = "payload"
) -> bytes:
    """Write the body's fields in the given order as compact UTF-8 JSON.

    Each value is written by ``dump_preserving``: the payload (a value from
    ``parse_preserving``) keeps the customer's number literals, and a lone surrogate is written
    as its escape again, as ``JSON.stringify`` does, so every body is valid UTF-8.
    ``payload_key`` names the field that must be present (the echo).
    """
    seen: set[str] = set()
    parts: list[str] = ["{"]
    for key, value in fields:
        if not isinstance(key, str):
            raise TypeError(f"body keys must be strings, got {type(key).__name__}")
        if key in seen:
            raise ValueError(f"duplicate body key {key!r}")
        if len(seen):
            parts.append(",")
        seen.add(key)
        parts.append(js_quote(key))
        parts.append(":")
        parts.append(dump_preserving(value))
    parts.append("}")
    if payload_key not in seen:
        raise ValueError(f"the body has no {payload_key!r} field")
    return "".join(parts).encode("utf-8")


def encode_body(obj: Mapping[str, object], payload_key: str = "payload") -> bytes:
    """Write a body dict in its own key order; see :func:`encode_webhook_body`."""
    return encode_webhook_body(obj.items(), payload_key=payload_key)
