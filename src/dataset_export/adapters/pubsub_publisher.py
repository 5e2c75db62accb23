"""``Publisher`` (and ``PartsQueue``) on Pub/Sub: publish ``{"queryUUID"}`` messages and wait
for the broker's confirmation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import PublisherClient
from google.cloud.pubsub_v1.types import BatchSettings

from ..core.errors import TransientError
from .errors import google_errors

PUBLISH_TIMEOUT_S = 10.0
# Every publish is awaited at once, so batching only adds its wait (10 ms by default, on every
# submit and every finished export): a batch of one message is sent immediately.
UNBATCHED = BatchSettings(max_messages=1)


class PubSubPublisher:
    """Publishes ``{"queryUUID": ...}`` messages (no secrets) to one topic."""

    def __init__(
        self, project: str, topic: str, kind: str, client: PublisherClient | None = None
    ) -> None:
        self._client = client or PublisherClient(batch_settings=UNBATCHED)
        self._topic = self._client.topic_path(project, topic)
        # Messages from both topics share one dead-letter topic; the kind tells them apart.
        self._kind = kind

    def publish(self, query_uuid: str) -> str:
        """Publish and wait for the broker's confirmation; return the message id."""
        return self._publish(query_uuid, [None])[0]

    def publish_parts(self, query_uuid: str, indices: Sequence[int]) -> None:
        """One ``{"queryUUID", "part"}`` message per index, all sent before any is awaited."""
        self._publish(query_uuid, list(indices))

    def _publish(self, query_uuid: str, parts: Sequence[int | None]) -> list[str]:
        try:
            with google_errors(f"publishing to {self._topic}"):
                futures = [self._send(query_uuid, part) for part in parts]
                return [str(future.result(timeout=PUBLISH_TIMEOUT_S)) for future in futures]
        except gexc.NotFound as exc:
            # A missing topic is an outage from the client's point of view: 503, retry later.
            raise TransientError(f"topic {self._topic} does not exist") from exc
        except gexc.GoogleAPICallError as exc:
            raise TransientError(f"publishing failed: {exc}") from exc

    def _send(self, query_uuid: str, part: int | None) -> Any:
        body: dict[str, object] = {"queryUUID": query_uuid}
        attributes = {"queryUUID": query_uuid, "kind": self._kind}
        if part is not None:
            body["part"] = part
            attributes["part"] = str(part)
        data = json.dumps(body).encode("utf-8")
        return self._client.publish(self._topic, data, **attributes)
