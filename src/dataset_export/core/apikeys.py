"""API keys: made here, looked up by their hash, kept encrypted for webhook signing.

A key reads ``dwe_<key id>_<secret>``. The store only ever sees its SHA-256 (the lookup id) and,
because signing a webhook needs the key itself, an AES-256-GCM ciphertext of it under a
key-encryption key that production takes from Secret Manager. The ciphertext is bound to the
hash (associated data), so a ciphertext copied onto another key's record does not decrypt. The
cipher needs the ``cryptography`` package, so it lives outside the pure core, in
``dataset_export.key_encryption``; its failure is ``core.errors.KeyDecryptionError``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "dwe"
_KEY_SHAPE = re.compile(r"dwe_[a-z2-7]{10}_[A-Za-z0-9_-]{43}")


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
