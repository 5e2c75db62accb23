"""API keys: made here, looked up by their hash, kept encrypted for webhook signing.

A key reads ``dwe_<key id>_<secret>``. The store only ever sees its SHA-256 (the lookup id) and,
because signing a webhook needs the key itself, an AES-256-GCM ciphertext of it under a
key-encryption key that production takes from Secret Manager. The ciphertext is bound to the
hash (associated data), so a ciphertext copied onto another key's record does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_PREFIX = "dwe"
_KEY_SHAPE = re.compile(r"dwe_[a-z2-7]{10}_[A-Za-z0-9_-]{43}")
_NONCE_BYTES = 12


class KeyDecryptionError(Exception):
    """A stored key ciphertext did not decrypt (wrong key-encryption key or tampered)."""


@dataclass(frozen=True)
class NewApiKey:
    """A freshly made key: the plaintext is shown once and never stored."""

    plaintext: str
    key_id: str
    key_hash: str


def key_hash(plaintext: str) -> str:
    """The lookup id of a key: hex SHA-256 of its text."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def looks_like_key(text: str) -> bool:
    """Cheap shape check, so garbage never costs a database read."""
    return _KEY_SHAPE.fullmatch(text) is not None


def new_api_key() -> NewApiKey:
    """Make a key with a public id and 256 random bits."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode("ascii").lower()[:10]
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    plaintext = f"{KEY_PREFIX}_{key_id}_{secret}"
    return NewApiKey(plaintext=plaintext, key_id=key_id, key_hash=key_hash(plaintext))


def encrypt_key(plaintext: str, kek: bytes) -> str:
    """Encrypt a key for storage (base64 of nonce + AES-GCM ciphertext)."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    aad = key_hash(plaintext).encode("ascii")
    sealed = AESGCM(kek).encrypt(nonce, plaintext.encode("utf-8"), aad)
    return base64.b64encode(nonce + sealed).decode("ascii")


def decrypt_key(ciphertext: str, kek: bytes, expected_hash: str) -> str:
    """Recover a stored key; raise ``KeyDecryptionError`` if it is not the key of that hash."""
    try:
        raw = base64.b64decode(ciphertext, validate=True)
        plaintext = (
            AESGCM(kek)
            .decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], expected_hash.encode("ascii"))
            .decode("utf-8")
        )
    except (InvalidTag, ValueError) as exc:
        raise KeyDecryptionError("stored API key does not decrypt") from exc
    if not hmac.compare_digest(key_hash(plaintext), expected_hash):
        raise KeyDecryptionError("stored API key does not match its hash")
    return plaintext
