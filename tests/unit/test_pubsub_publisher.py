"""Unit tests of the Pub/Sub publisher's client settings (no broker needed to build one)."""

from __future__ import annotations

import pytest

from dataset_export.adapters.pubsub_publisher import PubSubPublisher


def test_each_publish_is_sent_at_once_not_held_for_a_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch holds one message, so an awaited publish never waits out the batching delay."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")  # builds without credentials
    publisher = PubSubPublisher("p", "export-requests", "export-request")
    assert publisher._client.batch_settings.max_messages == 1
