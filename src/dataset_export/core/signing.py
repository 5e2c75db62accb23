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
import math
from collections.abc import Iterable, Mapping

from .jsontext import JsonNumber
from .jsstringify import js_number, js_quote, js_stringify

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

    Values are written like ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``
    would and the payload (a value from ``parse_preserving``) like ``dump_preserving``: its
    number literals verbatim. One difference, so that every body is valid UTF-8: a lone surrogate
    (from a customer's ``"\\ud800"``) is written as that escape again, as ``JSON.stringify`` does,
    where those would emit an unencodable code point. ``payload_key`` only documents which
    field is the echo; every ``JsonNumber`` anywhere is written as its literal.
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
        _write_wire(value, parts)
    parts.append("}")
    if payload_key not in seen:
        raise ValueError(f"the body has no {payload_key!r} field")
    return "".join(parts).encode("utf-8")


def encode_body(obj: Mapping[str, object], payload_key: str = "payload") -> bytes:
    """Write a body dict in its own key order; see :func:`encode_webhook_body`."""
    return encode_webhook_body(obj.items(), payload_key=payload_key)


def _write_wire(value: object, out: list[str]) -> None:
    if isinstance(value, JsonNumber):
        literal = str.__str__(value)
        js_number(value)  # raises ValueError unless it is a JSON number literal
        out.append(literal)
    elif isinstance(value, str):
        out.append(js_quote(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not valid JSON")
        out.append(float.__repr__(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, got {type(key).__name__}")
            if i:
                out.append(",")
            out.append(js_quote(key))
            out.append(":")
            _write_wire(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write_wire(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")
