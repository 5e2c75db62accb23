"""Unit tests of API-key handling, number-preserving JSON, settings and log redaction."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from dataset_export import logs
from dataset_export.config import ConfigError, Settings
from dataset_export.core.apikeys import (
    KeyDecryptionError,
    decrypt_key,
    encrypt_key,
    key_hash,
    looks_like_key,
    new_api_key,
)
from dataset_export.core.jsontext import dump_preserving, parse_preserving


def test_new_keys_are_unique_well_formed_and_hashed() -> None:
    """Keys carry their id, match the shape check, and hash to their lookup id."""
    keys = [new_api_key() for _ in range(50)]
    assert len({k.plaintext for k in keys}) == 50
    for key in keys:
        assert looks_like_key(key.plaintext)
        assert key.plaintext.startswith(f"dwe_{key.key_id}_")
        assert key.key_hash == key_hash(key.plaintext)
        assert key.plaintext not in key.key_hash


def test_key_encryption_round_trips_and_binds_to_the_hash() -> None:
    """A stored ciphertext decrypts only with the right KEK and only as its own key."""
    kek, other_kek = os.urandom(32), os.urandom(32)
    a, b = new_api_key(), new_api_key()
    sealed = encrypt_key(a.plaintext, kek)
    assert a.plaintext not in sealed
    assert decrypt_key(sealed, kek, a.key_hash) == a.plaintext
    with pytest.raises(KeyDecryptionError):
        decrypt_key(sealed, other_kek, a.key_hash)
    with pytest.raises(KeyDecryptionError):
        decrypt_key(sealed, kek, b.key_hash)
    with pytest.raises(KeyDecryptionError):
        decrypt_key("not base64!", kek, a.key_hash)


@pytest.mark.parametrize(
    "text",
    [
        '{"b":1,"a":[1.0,2.50,-0,1e400,12345678901234567890,1E-7]}',
        '{"text":"caf\\u00e9 \\"q\\" \\n 東京","nested":{"z":null,"y":true,"x":false}}',
        '{"lone":"x\\ud800y","\\udc00":[]}',
    ],
)
def test_preserving_json_keeps_literals_and_order(text: str) -> None:
    """Numbers come back exactly as written and keys in their order."""
    out = dump_preserving(parse_preserving(text))
    assert out.replace("\\u00e9", "é") == text.replace("\\u00e9", "é")
    assert json.loads(out) == json.loads(text)


def test_settings_report_every_problem_at_once() -> None:
    """A broken environment is named in one message, variable by variable."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {"EXPORT_ENV": "staging", "EXPORT_MAX_ROWS": "lots", "EXPORT_LINK_SIGNING_KEY": "abc"}
        )
    message = str(caught.value)
    for name in (
        "GOOGLE_CLOUD_PROJECT",
        "EXPORT_ENV",
        "EXPORT_LINK_SIGNING_KEY",
        "EXPORT_BUCKET",
        "EXPORT_MAX_ROWS",
    ):
        assert name in message


def test_settings_from_a_complete_environment() -> None:
    """A complete environment gives typed settings; production is the default mode."""
    import base64

    settings = Settings.from_env(
        {
            "GOOGLE_CLOUD_PROJECT": "p",
            "EXPORT_BUCKET": "b",
            "EXPORT_KEY_ENCRYPTION_KEY": base64.b64encode(b"k" * 32).decode(),
        }
    )
    assert settings.env == "production"
    assert not settings.is_local
    assert settings.requests_topic == "export-requests"
    assert settings.key_encryption_key == b"k" * 32
    settings.require("key_encryption_key")
    with pytest.raises(ConfigError, match="EXPORT_LINK_SIGNING_KEY is not set"):
        settings.require("key_encryption_key", "link_signing_key")


def test_log_lines_are_cloud_logging_json_without_secrets() -> None:
    """A log line is one JSON object with severity, trace and queryUUID, secrets redacted."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    key = new_api_key().plaintext
    logs.set_trace("105445aa7843bc8bf206b12000100000/1;o=1", "proj")
    try:
        logger.warning(
            "key %s url https://storage.googleapis.com/b/o?X-Goog-Signature=abcdef123&x=1 v1,%s"
            " session /upload/storage/v1/b/e/o?uploadType=resumable&upload_id=ADPycdsecret",
            key,
            "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=",
            extra={"queryUUID": "q-1"},
        )
    finally:
        logs.set_trace(None, "proj")
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    entry = json.loads(line)
    assert entry["severity"] == "WARNING"
    assert entry["queryUUID"] == "q-1"
    assert (
        entry["logging.googleapis.com/trace"]
        == "projects/proj/traces/105445aa7843bc8bf206b12000100000"
    )
    assert key not in line
    assert "abcdef123" not in line
    assert "ADPycdsecret" not in line
    assert "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=" not in line
    assert key.split("_")[1] in line  # the public key id stays, for support
