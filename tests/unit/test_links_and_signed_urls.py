"""Unit tests of the 30-day download links and of the V4 signed URLs they redirect to (the GCS
emulator does not check signatures, so the signature is verified here from first principles)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from dataset_export.adapters.gcs_storage import UrlSigner
from dataset_export.core.errors import Forbidden, LinkExpired
from dataset_export.core.links import make_token, verify_token
from dataset_export_tools.localstack.provision import write_signer_key

KEY = b"s" * 32
NOW = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)


def test_token_round_trip_until_expiry_then_410() -> None:
    """A token works until its expiry, then answers 410 with the date."""
    token = make_token("q-1", NOW + dt.timedelta(days=30), KEY)
    assert verify_token(token, "q-1", KEY, NOW + dt.timedelta(days=29)) == NOW + dt.timedelta(
        days=30
    )
    with pytest.raises(LinkExpired) as caught:
        verify_token(token, "q-1", KEY, NOW + dt.timedelta(days=30, seconds=1))
    assert caught.value.status == 410
    assert "2026-12-27T10:00:00Z" in caught.value.message


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: t.split(".")[0],
        lambda t: "",
        lambda t: "x" + t,
        lambda t: t.replace(".", ".."),
        lambda t: "\u00d1" + t,  # non-ASCII (was a 500 found by schemathesis)
        lambda t: t + "\u00e9",
        lambda t: t[:5] + "\x1a" + t[5:],
        lambda t: t.replace(".", "\u2024"),
        lambda t: t + "=",
    ],
)
def test_tampered_tokens_are_403(mutate: object) -> None:
    """Any change to the token fails its MAC: 403."""
    token = make_token("q-1", NOW + dt.timedelta(days=30), KEY)
    with pytest.raises(Forbidden) as caught:
        verify_token(mutate(token), "q-1", KEY, NOW)  # type: ignore[operator]
    assert caught.value.status == 403


def test_token_of_another_export_or_key_is_403() -> None:
    """A token is bound to its export and to the server key."""
    token = make_token("q-1", NOW + dt.timedelta(days=30), KEY)
    with pytest.raises(Forbidden):
        verify_token(token, "q-2", KEY, NOW)
    with pytest.raises(Forbidden):
        verify_token(token, "q-1", b"t" * 32, NOW)
    with pytest.raises(Forbidden):
        verify_token(token, "q-1\u00e9\udc80", KEY, NOW)  # a path no export id can have


def test_v4_signed_url_verifies_with_the_public_key(tmp_path: Path) -> None:
    """The signed URL's signature is RSA-SHA256 over the V4 string-to-sign, per GCS's spec."""
    key_file = tmp_path / "signer.json"
    write_signer_key(key_file, "proj")
    client = storage.Client(project="proj", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    signer = UrlSigner(
        client, "exports-bucket", key_file=str(key_file), endpoint="https://storage.googleapis.com"
    )
    url = signer.sign("exports/q-1.csv.gz", dt.timedelta(minutes=15))

    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    assert params["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert params["X-Goog-Expires"] == "900"
    assert params["X-Goog-SignedHeaders"] == "host"
    assert parts.path == "/exports-bucket/exports/q-1.csv.gz"
    signature = bytes.fromhex(params.pop("X-Goog-Signature"))
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items())
    )
    canonical_request = "\n".join(
        ["GET", parts.path, canonical_query, f"host:{parts.netloc}", "", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = params["X-Goog-Credential"].split("/", 1)[1]
    string_to_sign = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            params["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    info = json.loads(key_file.read_text())
    private = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    public = private.public_key()
    public.verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())
    tampered = string_to_sign.replace(params["X-Goog-Date"], "20300101T000000Z")
    with pytest.raises(InvalidSignature):
        public.verify(signature, tampered.encode(), padding.PKCS1v15(), hashes.SHA256())
    assert params["X-Goog-Credential"].startswith(info["client_email"] + "/")
