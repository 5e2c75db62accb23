"""Unit tests of the stored dataset: its text as submitted, and the two forms read from it."""

from __future__ import annotations

import json

import pytest

from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.dataset import SubmittedDataset
from dataset_export.core.errors import InvalidRequest
from dataset_export.core.jsontext import JsonNumber, parse_preserving
from dataset_export.core.query import parse_dataset
from dataset_export_tools.demo import SEED_DATASET

TEXT = (
    '{"limit":5,"filters":[{"filter":{"gte":1500.0},"column":"asking_rent"}],'
    '"scopes":[{"column":"city"}]}'
)


def test_the_text_is_kept_byte_for_byte_from_the_submitted_object() -> None:
    """From the preserving parse of what was sent, the stored text is that compact text."""
    assert SubmittedDataset.from_payload(parse_preserving(TEXT)).text == TEXT


def test_the_payload_keeps_literals_and_is_parsed_once() -> None:
    """The payload keeps ``1500.0`` as its literal, and a second read is the same object."""
    dataset = SubmittedDataset(TEXT)
    payload = dataset.payload
    assert payload["filters"][0]["filter"]["gte"] == JsonNumber("1500.0")
    assert list(payload) == ["limit", "filters", "scopes"]
    assert dataset.payload is payload


def test_the_query_is_the_one_parse_dataset_makes() -> None:
    """The query read back equals what submit validated, and a bad column names its field."""
    dataset = SubmittedDataset(json.dumps(SEED_DATASET))
    expected = parse_dataset(SEED_DATASET, RENTAL_LISTINGS, max_rows=1_000_000)
    assert dataset.query(RENTAL_LISTINGS, max_rows=1_000_000) == expected
    with pytest.raises(InvalidRequest) as caught:
        SubmittedDataset('{"scopes":[{"column":"rentt"}]}').query(RENTAL_LISTINGS, max_rows=1)
    assert caught.value.field == "dataset.scopes[0].column"
