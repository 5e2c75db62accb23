"""Resources the stack creates in the emulators, through the real Google Cloud clients.

Each function expects the matching *_EMULATOR_HOST variable in os.environ (the clients read it
when they are constructed); `stack.up` sets them for its duration. Every step is idempotent.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc


@dataclass(frozen=True)
class PushSubscription:
    """A push subscription as Eventarc creates one for a Pub/Sub-triggered function."""

    name: str
    topic: str
    endpoint: str
    ack_deadline_seconds: int
    max_delivery_attempts: int = 5
    #: False for the dead-letter topic's own subscription.
    dead_letter: bool = True


def warm_up_firestore(project: str, database: str) -> None:
    """One write and delete in the stack's database: the emulator's first real request takes
    seconds longer than its `GET /` readiness answer, and that delay belongs to `up`, not to the
    first test."""
    from google.cloud import firestore

    client: Any = firestore.Client(project=project, database=database)
    try:
        doc = client.collection("_localstack").document(f"warmup-{uuid.uuid4().hex}")
        doc.set({"ok": True})
        doc.delete()
    finally:
        client.close()


def ensure_pubsub(
    project: str,
    topics: list[str],
    push_subscriptions: list[PushSubscription],
    pull_subscriptions: dict[str, str],
    dead_letter_topic: str,
) -> None:
    """Create topics and subscriptions; an existing push subscription gets its endpoint reset
    (the port of its function may have changed since it was made)."""
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient, types

    publisher = PublisherClient()
    try:
        for topic in topics:
            with contextlib.suppress(gexc.AlreadyExists):
                publisher.create_topic(name=publisher.topic_path(project, topic))
    finally:
        publisher.transport.close()

    with SubscriberClient() as subscriber:
        retry = types.RetryPolicy(
            minimum_backoff=timedelta(seconds=10),
            maximum_backoff=timedelta(seconds=600),
        )
        for sub in push_subscriptions:
            dead_letter = types.DeadLetterPolicy(
                dead_letter_topic=f"projects/{project}/topics/{dead_letter_topic}",
                max_delivery_attempts=sub.max_delivery_attempts,
            )
            path = subscriber.subscription_path(project, sub.name)
            push = types.PushConfig(push_endpoint=sub.endpoint)
            request = types.Subscription(
                name=path,
                topic=f"projects/{project}/topics/{sub.topic}",
                push_config=push,
                ack_deadline_seconds=sub.ack_deadline_seconds,
                retry_policy=retry,
                dead_letter_policy=dead_letter if sub.dead_letter else None,
            )
            try:
                subscriber.create_subscription(request=request)
            except gexc.AlreadyExists:
                subscriber.modify_push_config(subscription=path, push_config=push)
        for name, topic in pull_subscriptions.items():
            with contextlib.suppress(gexc.AlreadyExists):
                subscriber.create_subscription(
                    name=subscriber.subscription_path(project, name),
                    topic=f"projects/{project}/topics/{topic}",
                )


def _storage_client(project: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.storage import Client

    # google-auth leaves AnonymousCredentials.__init__ unannotated.
    anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
    return Client(project=project, credentials=anonymous)


def ensure_buckets(project: str, buckets: list[str]) -> None:
    """Create the buckets that do not exist yet."""
    client = _storage_client(project)
    for name in buckets:
        with contextlib.suppress(gexc.Conflict):
            client.create_bucket(name)


def upload_if_changed(project: str, bucket: str, name: str, path: Path) -> bool:
    """Upload `path` unless an object of the same bytes (size and MD5) is there; True when it
    uploaded. The process function exports what the bucket holds, so a regenerated file of the
    same size is uploaded too."""
    client = _storage_client(project)
    existing = client.bucket(bucket).get_blob(name)
    if existing is not None and existing.size == path.stat().st_size:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).digest()
        if existing.md5_hash == base64.b64encode(digest).decode():
            return False
    # 8 MiB chunks keep this process's memory flat whatever the file size.
    blob = client.bucket(bucket).blob(name, chunk_size=8 * 1024 * 1024)
    blob.upload_from_filename(str(path), content_type="application/vnd.apache.parquet")
    return True


def write_signer_key(path: Path, project: str) -> None:
    """A locally made service-account key, so the local stack signs V4 URLs as production does
    through IAM (the GCS emulator does not check signatures; unit tests do)."""
    import json
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    info = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": uuid.uuid4().hex,
        "private_key": pem,
        "client_email": f"local-url-signer@{project}.iam.gserviceaccount.com",
        "client_id": "0",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(info, handle)
    partial.replace(path)
