"""End to end on a stack of its own with DWE_ENGINE=bigquery: exports computed on the BigQuery
emulator, checked against the DuckDB engine over the same Parquet file.

Issue 12's acceptance: the seed's export (its Seattle query, CSV) and a full-table export in CSV
and in JSONL, submitted through the HTTP API, each succeed with ``engine: "bigquery"``, their
webhook delivered, nothing left under the export's tmp/ prefix nor in the temporary dataset, and
the file's records equal (as multisets) those the DuckDB engine writes for the same query over
the stack's Parquet file, the file the emulator's table was loaded from. EXPORT_PART_ROWS=15000
makes the full table's 60,000 rows ask for 4 Storage Read streams, one part each.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import storage

from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.parts import tmp_prefix
from dataset_export.engine import DuckDbEngine
from dataset_export_tools.bigquery_load import emulator_clients
from dataset_export_tools.demo import SEED_DATASET
from dataset_export_tools.localstack.parts import DEFAULT_PART_NAMES
from dataset_export_tools.localstack.stack import StackInfo
from dataset_export_tools.localstack.state import Ports, StackConfig
from tests.e2e.stacks import running, wait
from tests.unit.test_sql import parse

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
# The session stack's block plus 60: clear of it, of the BigQuery tests' emulators (+18, +19,
# +28, +29), of the parts stack (+40 .. +49) and of the local-stack tests' own block.
PORTS = Ports.starting_at(int(os.environ.get("DWE_TEST_PORT_BASE", "28081")) + 60)
ROWS = 60_000
PART_ROWS = 15_000
FULL_TABLE = {"scopes": [{"column": c.name} for c in RENTAL_LISTINGS.columns]}


@pytest.fixture(scope="module")
def bigquery_stack() -> Iterator[StackInfo]:
    """The whole stack with the BigQuery emulator, on 60,000 rows, parts of 15,000 rows."""
    config = StackConfig(
        state_dir=REPO / ".local" / "test-stack-bigquery",
        repo_root=REPO,
        ports=PORTS,
        project="dwe-bqstack",
        dataset_rows=ROWS,
        parts=frozenset({*DEFAULT_PART_NAMES, "bigquery"}),
        part_settings={"EXPORT_PART_ROWS": str(PART_ROWS)},
    )
    with running(config) as info:
        yield info


def records(data: bytes, fmt: str) -> tuple[list[str], list[Any]]:
    """The file's header (CSV) and its records, sorted: CSV rows as lists of fields, JSONL
    lines as text (the rendering is the same whichever engine ran)."""
    text = gzip.decompress(data).decode("utf-8")
    if fmt == "jsonl":
        return [], sorted(text.splitlines())
    rows = list(csv.reader(io.StringIO(text, newline="")))
    return rows[0], sorted(rows[1:])


def duckdb_file(env: dict[str, str], dataset: dict[str, Any], fmt: str) -> bytes:
    """The file the DuckDB engine writes for ``dataset`` over the stack's Parquet file."""
    out = io.BytesIO()
    DuckDbEngine().export(env["EXPORT_DATASET_PATH"], parse(dataset), fmt, out)
    return out.getvalue()


def export_on_the_stack(
    env: dict[str, str], dataset: dict[str, Any], fmt: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], bytes]:
    """Submit through the HTTP API; the final status and the downloaded file, after checking
    that BigQuery ran it, the webhook was delivered and nothing temporary is left."""
    body = {
        "dataset": dataset,
        "webhookURL": env["EXPORT_WEBHOOK_URL"],
        "name": f"BigQuery {fmt}",
        "format": fmt,
    }
    with httpx.Client(
        base_url=env["EXPORT_API_URL"], headers={"x-api-key": env["EXPORT_API_KEY"]}, timeout=30
    ) as client:
        response = client.post("/dataset/export", json=body)
        assert response.status_code == 201, response.text
        query_uuid = response.json()["queryUUID"]
        doc = wait(client, query_uuid)
        assert doc["status"] == "succeeded", doc
        assert doc["engine"] == "bigquery"
        assert doc["delivery"]["state"] == "delivered", doc["delivery"]
        data = client.get(doc["download"]["url"], follow_redirects=True).content
    assert len(data) == doc["sizeBytes"]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", env["STORAGE_EMULATOR_HOST"])
    bucket = storage.Client(project=env["GOOGLE_CLOUD_PROJECT"]).bucket(env["EXPORT_BUCKET"])
    assert list(bucket.list_blobs(prefix=tmp_prefix(query_uuid))) == []
    bq, read = emulator_clients(
        env["GOOGLE_CLOUD_PROJECT"],
        env["BIGQUERY_EMULATOR_HOST"],
        env["BIGQUERY_EMULATOR_GRPC_HOST"],
    )
    try:  # finish dropped the export's result table
        temp = env["EXPORT_BIGQUERY_TEMP_DATASET"]
        assert [t.table_id for t in bq.list_tables(temp)] == []
    finally:
        bq.close()
        read.transport.close()
    return doc, data


def test_the_stack_runs_on_the_bigquery_emulators_table(bigquery_stack: StackInfo) -> None:
    """stack.env says the process function runs BigQuery, on the demo table loaded from the
    stack's Parquet file."""
    env = bigquery_stack.env
    assert env["DWE_ENGINE"] == "bigquery"
    assert env["EXPORT_DATASET_URI"] == "bq://dwe-bqstack.listings.rental_listings"
    assert env["EXPORT_BIGQUERY_TEMP_DATASET"] == "dwe-bqstack.dwe_tmp"


def test_the_seeds_export_has_the_rows_duckdb_gives(
    bigquery_stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seed's Seattle export (CSV), computed by BigQuery, holds DuckDB's records."""
    env = bigquery_stack.env
    doc, data = export_on_the_stack(env, SEED_DATASET, "csv", monkeypatch)
    header, rows = records(data, "csv")
    expected_header, expected = records(duckdb_file(env, SEED_DATASET, "csv"), "csv")
    # Fewer groups than the seed's limit, so the limit keeps every row on either engine.
    assert 0 < len(expected) < SEED_DATASET["limit"]
    assert header == expected_header
    assert rows == expected
    assert doc["numberRows"] == len(rows)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_full_table_export_reads_several_streams_into_duckdbs_records(
    bigquery_stack: StackInfo, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """Every row of the table, read in several Storage Read streams (parts), rendered as the
    DuckDB engine renders them."""
    env = bigquery_stack.env
    doc, data = export_on_the_stack(env, FULL_TABLE, fmt, monkeypatch)
    assert doc["parts"]["total"] >= 2, doc.get("parts")
    assert doc["parts"]["done"] == doc["parts"]["total"]
    header, rows = records(data, fmt)
    expected_header, expected = records(duckdb_file(env, FULL_TABLE, fmt), fmt)
    assert header == expected_header
    assert doc["numberRows"] == len(rows) == ROWS
    assert rows == expected
