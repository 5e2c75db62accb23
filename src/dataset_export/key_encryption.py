"""AES-256-GCM of stored API keys: the key's text sealed under the key-encryption key.

What a key is, its hash and why it is kept encrypted are in ``core/apikeys.py``; the cipher is
here because it needs the ``cryptography`` package and the core imports only the standard
library and pydantic. A stored value is base64 of a 12-byte nonce and the AES-GCM ciphertext;
the key's hash is the associated data, so a ciphertext copied onto another key's record does
not decrypt.
"""

from __future__ import annotations

import base64
import hmac
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .core.apikeys import key_hash
from .core.errors import KeyDecryptionError

_NONCE_BYTES = 12


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
