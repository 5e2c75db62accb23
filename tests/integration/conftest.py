"""Fixtures shared by the integration tests (the stack itself comes from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def client(stack_env: dict[str, str]) -> Iterator[httpx.Client]:
    """An HTTP client on the running submit function with the demo key."""
    with httpx.Client(
        base_url=stack_env["EXPORT_API_URL"],
        headers={"x-api-key": stack_env["EXPORT_API_KEY"]},
        timeout=30,
    ) as http:
        yield http
