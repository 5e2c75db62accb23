"""Use cases of account and key administration (``exportctl keys ...``)."""

from __future__ import annotations

import datetime as dt

from ..core.apikeys import new_api_key
from ..key_encryption import encrypt_key
from .ports import Account, ApiKeyRecord, ExportStore


def create_api_key(
    store: ExportStore,
    account_id: str,
    *,
    kek: bytes,
    query_builder: bool = True,
    now: dt.datetime | None = None,
) -> tuple[str, ApiKeyRecord]:
    """Create (or update) the account and a new key for it; return the plaintext once."""
    moment = now or dt.datetime.now(dt.UTC)
    existing = store.get_account(account_id)
    created = existing.created_on if existing else moment
    store.put_account(
        Account(account_id=account_id, query_builder=query_builder, created_on=created)
    )
    key = new_api_key()
    record = ApiKeyRecord(
        key_hash=key.key_hash,
        key_id=key.key_id,
        account_id=account_id,
        ciphertext=encrypt_key(key.plaintext, kek),
        created_on=moment,
    )
    store.create_api_key(record)
    return key.plaintext, record


def revoke_api_key(store: ExportStore, key_id: str, *, now: dt.datetime | None = None) -> bool:
    """Revoke the key with this public id; False when there is none."""
    return store.revoke_api_key(key_id, now or dt.datetime.now(dt.UTC))
