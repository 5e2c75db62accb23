"""The small interfaces the service layer needs from the outside world.

Google adapters implement them in ``dataset_export.adapters``; the in-memory fakes of the unit
tests live outside the deployed package, in ``tests/fakes.py``, and ``tests/contract/`` runs one
suite on the fake store and on the Firestore store so the two behave alike.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from ..core.records import ExportRecord


class AlreadyExists(Exception):
    """A create found the document already there (exactly one creator wins)."""


@dataclass(frozen=True)
class ApiKeyRecord:
    """A stored API key: found by hash, never holding the key in the clear."""

    key_hash: str
    key_id: str
    account_id: str
    ciphertext: str
    created_on: dt.datetime
    revoked_on: dt.datetime | None = None


@dataclass(frozen=True)
class Account:
    """A customer account and what it subscribes to."""

    account_id: str
    query_builder: bool
    created_on: dt.datetime


@dataclass(frozen=True)
class IdempotencyRecord:
    """Which export an (API key, Idempotency-Key) pair already created, and for which body."""

    scope_id: str
    query_uuid: str
    body_hash: str
    created_on: dt.datetime


class ExportStore(Protocol):
    """Durable state: accounts, keys, exports, idempotency keys, rate-limit counters."""

    def get_account(self, account_id: str) -> Account | None:
        """The account, or None."""

    def put_account(self, account: Account) -> None:
        """Create or replace an account."""

    def get_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        """The key with this hash, or None."""

    def create_api_key(self, record: ApiKeyRecord) -> None:
        """Store a new key record; raise ``AlreadyExists`` if the hash is taken."""

    def revoke_api_key(self, key_id: str, when: dt.datetime) -> bool:
        """Mark the key with this id revoked; False when no such key."""

    def create_export(self, record: ExportRecord) -> None:
        """Store a new export; raise ``AlreadyExists`` if the queryUUID is taken."""

    def get_export(self, query_uuid: str) -> ExportRecord | None:
        """The export, or None."""

    def mark_queued(self, query_uuid: str, message_id: str) -> None:
        """Record that the request message is published (``submitting`` -> ``queued``)."""

    def delete_export(self, query_uuid: str) -> None:
        """Remove an export whose request could not be queued."""

    def create_idempotency(self, record: IdempotencyRecord) -> None:
        """Store an idempotency record; raise ``AlreadyExists`` if the scope id is taken."""

    def get_idempotency(self, scope_id: str) -> IdempotencyRecord | None:
        """The idempotency record, or None."""

    def delete_idempotency(self, scope_id: str) -> None:
        """Forget an idempotency record whose export was never queued."""

    def count_request(self, key_hash: str, window: str, expires: dt.datetime) -> int:
        """Add one to the key's counter for ``window`` and return the new count."""


class Publisher(Protocol):
    """A topic of ``{"queryUUID": ...}`` messages (``export-requests``, ``export-ready``)."""

    def publish(self, query_uuid: str) -> str:
        """Publish and wait for the broker's confirmation; return the message id.

        Raise ``TransientError`` when the queue is unavailable.
        """
