"""``RequestQueue`` on Pub/Sub: publish and wait for the broker's confirmation."""

from __future__ import annotations

import json

from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import PublisherClient

from ..core.errors import TransientError
from .errors import google_errors

PUBLISH_TIMEOUT_S = 10.0


class PubSubQueue:
    """Publishes ``{"queryUUID": ...}`` messages (no secrets) to one topic."""

    def __init__(self, project: str, topic: str, client: PublisherClient | None = None):
        self._client = client or PublisherClient()
        self._topic = self._client.topic_path(project, topic)

    def publish_request(self, query_uuid: str) -> str:
        """Publish and wait for the broker's confirmation; return the message id."""
        data = json.dumps({"queryUUID": query_uuid}).encode("utf-8")
        try:
            with google_errors("publishing the export request"):
                future = self._client.publish(self._topic, data, queryUUID=query_uuid)
                return str(future.result(timeout=PUBLISH_TIMEOUT_S))
        except gexc.NotFound as exc:
            # A missing topic is an outage from the client's point of view: 503, retry later.
            raise TransientError(f"topic {self._topic} does not exist") from exc
        except gexc.GoogleAPICallError as exc:
            raise TransientError(f"publishing failed: {exc}") from exc
