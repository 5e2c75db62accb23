"""The webhook's signatures and body bytes, checked with the Python ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from dataset_export.core.jsontext import dump_preserving, parse_preserving
from dataset_export.core.signing import (
    BODY_SIGNATURE_HEADER,
    body_signature,
    encode_body,
    encode_webhook_body,
    payload_signature,
    standard_webhook_headers,
    standard_webhook_signature,
    standard_webhooks_secret,
)

API_KEY = "test-api-key-not-a-secret-0123456789abcdef"
QUERY_UUID = "6f1c2e9a-3b7d-4c55-9a0e-2f7f3d1b8c42"
DATASET = (
    '{"scopes": [{"column": "street_address"}, {"column": "asking_rent", "aggregate": "Avg"}],'
    ' "filters": {"and": [{"column": "msa", "filter": {"equals": "Zürich \\ud800"}},'
    ' {"column": "asking_rent", "filter": {"gte": 1500.0}}, null]}, "limit": 1E4}'
)


def customer_verifier(api_key: str) -> Webhook:
    """A Standard Webhooks verifier built the way our docs tell customers: base64 of the key."""
    return Webhook(base64.b64encode(api_key.encode("utf-8")).decode("ascii"))


def webhook_body(api_key: str = API_KEY, dataset: str = DATASET) -> bytes:
    """A webhook body in the seed's key order around the given dataset text."""
    payload = parse_preserving(dataset)
    return encode_webhook_body(
        [
            ("queryUUID", QUERY_UUID),
            ("name", "Seattle Rental Data Export"),
            ("format", "csv"),
            ("payload", payload),
            ("hmacSignature", payload_signature(api_key, payload)),
            ("gcsBlob", {"url": "https://x.example/d?t=1", "timeTakenMs": 45000}),
            ("requestedOn", "2026-11-27T10:00:00Z"),
            ("completedOn", "2026-11-27T10:00:45Z"),
        ]
    )


def test_standard_webhook_headers_verify_with_the_python_package() -> None:
    """A customer's standardwebhooks verifier accepts our headers and returns the parsed body."""
    body = webhook_body()
    now = int(time.time())
    headers = standard_webhook_headers(API_KEY, QUERY_UUID, now, body)
    assert headers["webhook-id"] == QUERY_UUID
    assert headers["webhook-timestamp"] == str(now)
    assert headers["webhook-signature"].startswith("v1,")
    assert customer_verifier(API_KEY).verify(body, headers) == json.loads(body)
    assert Webhook(standard_webhooks_secret(API_KEY)).verify(body, headers) == json.loads(body)


def test_signature_equals_the_packages_own_signing() -> None:
    """Our v1 signature is byte-identical to what the package's Webhook.sign produces."""
    body = webhook_body()
    ts = 1_800_000_000
    expected = customer_verifier(API_KEY).sign(
        QUERY_UUID, dt.datetime.fromtimestamp(ts, tz=dt.UTC), body.decode("utf-8")
    )
    assert standard_webhook_signature(API_KEY, QUERY_UUID, ts, body) == expected


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
            id="timestamp",
        ),
        pytest.param(lambda h, b: (h, b.replace(b"45000", b"45001")), id="body"),
        pytest.param(lambda h, b: (h, b + b" "), id="trailing-space"),
        pytest.param(lambda h, b: ({**h, "webhook-id": h["webhook-id"] + "x"}, b), id="id"),
        pytest.param(
            lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
            id="no-signature",
        ),
    ],
)
def test_changed_timestamp_body_or_id_fails(tamper: Any) -> None:
    """Changing the timestamp, the body or the id makes verification fail."""
    body = webhook_body()
    headers = standard_webhook_headers(API_KEY, QUERY_UUID, int(time.time()), body)
    bad_headers, bad_body = tamper(headers, body)
    with pytest.raises(WebhookVerificationError):
        customer_verifier(API_KEY).verify(bad_body, bad_headers)


def test_wrong_key_and_stale_timestamp_fail() -> None:
    """Another key fails, and a correctly signed 10-minute-old message is refused as a replay."""
    body = webhook_body()
    headers = standard_webhook_headers(API_KEY, QUERY_UUID, int(time.time()), body)
    with pytest.raises(WebhookVerificationError):
        customer_verifier(API_KEY + "x").verify(body, headers)
    stale = standard_webhook_headers(API_KEY, QUERY_UUID, int(time.time()) - 600, body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        customer_verifier(API_KEY).verify(body, stale)


def test_non_ascii_api_key_signs_its_utf8_bytes() -> None:
    """A key with non-ASCII characters is used as its UTF-8 bytes everywhere."""
    key = "clé-ключ-🔑"
    body = webhook_body(key)
    headers = standard_webhook_headers(key, QUERY_UUID, int(time.time()), body)
    customer_verifier(key).verify(body, headers)
    assert body_signature(key, body) == hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def test_body_signature_is_hex_hmac_of_raw_bytes() -> None:
    """SHA256-HMAC-Signature is the RFC 4231-style hex HMAC-SHA256 of the raw body."""
    assert BODY_SIGNATURE_HEADER == "SHA256-HMAC-Signature"
    assert body_signature("key", b"The quick brown fox jumps over the lazy dog") == (
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    )


def test_payload_signature_covers_the_javascript_string() -> None:
    """hmacSignature is the hex HMAC of JSON.stringify(payload), with 1500.0 as 1500."""
    payload = parse_preserving('{"filter": {"gte": 1500.0, "lt": 1e-7}, "b": "é"}')
    js = '{"filter":{"gte":1500,"lt":1e-7},"b":"é"}'
    expected = hmac.new(API_KEY.encode(), js.encode("utf-8"), hashlib.sha256).hexdigest()
    assert payload_signature(API_KEY, payload) == expected


def test_body_keeps_field_order_and_the_customers_number_spelling() -> None:
    """The body is compact UTF-8 in the given key order, echoing 1500.0 and 1E4 as sent."""
    body = webhook_body()
    text = body.decode("utf-8")
    assert list(json.loads(text)) == [
        "queryUUID",
        "name",
        "format",
        "payload",
        "hmacSignature",
        "gcsBlob",
        "requestedOn",
        "completedOn",
    ]
    assert '{"gte":1500.0}' in text
    assert '"limit":1E4}' in text
    assert '"Zürich \\ud800"' in text  # a lone surrogate goes out escaped, never as bad UTF-8
    assert ": " not in text
    assert ", " not in text.replace("Seattle, WA", "")


def test_encode_body_uses_the_dicts_order() -> None:
    """encode_body writes a dict's items in its own order."""
    payload = parse_preserving('{"b": 2.50, "a": [1.0]}')
    assert encode_body({"z": 1, "payload": payload, "a": None}) == (
        b'{"z":1,"payload":{"b":2.50,"a":[1.0]},"a":null}'
    )


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ([("payload", {}), ("payload", {})], ValueError),
        ([("name", "x")], ValueError),
        ([("payload", {}), ("x", float("nan"))], ValueError),
        ([("payload", {}), ("x", object())], TypeError),
    ],
)
def test_bad_bodies_are_refused(fields: list[tuple[str, object]], error: type[Exception]) -> None:
    """Duplicate keys, a missing payload, NaN and unknown types are programming errors."""
    with pytest.raises(error):
        encode_webhook_body(fields)


surrogate_free_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.text(),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(surrogate_free_json)
def test_payload_is_written_like_dump_preserving(value: Any) -> None:
    """Without lone surrogates the payload bytes are exactly dump_preserving's."""
    payload = parse_preserving(json.dumps(value))
    body = encode_webhook_body([("payload", payload)])
    assert body == ('{"payload":' + dump_preserving(payload) + "}").encode("utf-8")
