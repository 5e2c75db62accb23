"""Fixtures for unit tests: the service on in-memory fakes, with one valid key."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.http_api import ExportApi, HttpRequest, HttpResponse
from dataset_export.service.keys import create_api_key
from dataset_export.service.submit import ExportService
from dataset_export_tools.demo import SEED_DATASET
from tests.fakes import FakeQueue, FakeResolver, InMemoryStore

KEK = os.urandom(32)
SEED_BODY: dict[str, Any] = {
    "dataset": copy.deepcopy(SEED_DATASET),
    "webhookURL": "https://yourapp.com/webhook/dataset-export",
    "name": "Seattle Rental Data Export",
    "format": "csv",
}


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class World:
    """The service and its fakes, plus a valid key."""

    store: InMemoryStore
    queue: FakeQueue
    clock: Clock
    service: ExportService
    api: ExportApi
    key: str

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = "default",
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        all_headers = {"Content-Type": "application/json"}
        if key is not None:
            all_headers["x-api-key"] = self.key if key == "default" else key
        all_headers.update(headers or {})
        raw = (
            body
            if isinstance(body, bytes)
            else (b"" if body is None else json.dumps(body).encode())
        )
        return self.api.handle(HttpRequest(method, path, all_headers, raw))


@pytest.fixture
def world() -> World:
    store, queue, clock = InMemoryStore(), FakeQueue(), Clock()
    resolver = FakeResolver({"yourapp.com": ["93.184.216.34"], "rebind.example": ["10.0.0.7"]})
    counter = iter(range(1, 1_000_000))
    service = ExportService(
        store=store,
        queue=queue,
        resolver=resolver,
        catalog=RENTAL_LISTINGS,
        max_rows=1_000_000,
        rate_limit_per_minute=5,
        clock=clock,
        new_uuid=lambda: f"00000000-0000-4000-8000-{next(counter):012d}",
    )
    key, _ = create_api_key(store, "acme", kek=KEK, now=clock())
    return World(store, queue, clock, service, ExportApi(service, max_body_bytes=4096), key)


MakeWorld = Callable[[], World]
