"""The BigQuery engine on the BigQuery emulator, checked against the DuckDB engine over the same
rows: plan, the export of every part, the header member, finish, ordered results.

The emulator runs on its own ports (the session stack's BigQuery ports plus twenty), started and
stopped by PID through the local stack. It holds the test file as a table, and the engine runs
with ``ordered_results="table"`` (the emulator cannot Storage-Read an anonymous table; the
``"destination"`` path BigQuery takes is checked against a fake client in
tests/unit/test_bigquery_engine.py, as are what the emulator does not do as BigQuery does:
dry-run byte estimates, the byte cap, a 409 on a second insert of a job id, error reasons).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from dataset_export.adapters.bigquery_engine import BigQueryEngine
from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.errors import DatasetMismatch
from dataset_export.core.parts import ExportPlan
from dataset_export.core.query import Query
from dataset_export.engine import DuckDbEngine
from tests.bigquery_emulator import emulator_with_table
from tests.conftest import TEST_PORTS
from tests.unit.test_sql import parse, write_listings

pytestmark = pytest.mark.integration

PROJECT = "dwe-engine"
TABLE = f"{PROJECT}.listings.rental_listings"
SOURCE = f"bq://{TABLE}"
TEMP = "dwe_tmp"
ROWS = 60_000
PORTS = dataclasses.replace(
    TEST_PORTS, bigquery=TEST_PORTS.bigquery + 20, bigquery_grpc=TEST_PORTS.bigquery_grpc + 20
)
FULL_TABLE = {"scopes": [{"column": c.name} for c in RENTAL_LISTINGS]}
FILTERED = {
    "scopes": [{"column": "property_id"}, {"column": "building_name"}, {"column": "msa"},
               {"column": "bed"}, {"column": "asking_rent"}, {"column": "listed_on"},
               {"column": "is_active"}],
    "filters": [{"column": "bed", "filter": {"in": [1, 2, 3]}},
                {"column": "asking_rent", "filter": {"gte": 1500}}],
}  # fmt: skip


class CountingClient:
    """The real BigQuery client, counting the query jobs started through it (dry runs apart)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.started: list[str] = []

    def query(self, statement: str, **kwargs: Any) -> Any:
        config = kwargs.get("job_config")
        if not (config is not None and config.dry_run):
            self.started.append(kwargs.get("job_id") or "")
        return self._client.query(statement, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclasses.dataclass
class Setup:
    path: Path
    client: Any
    read: Any
    counting: CountingClient
    engine: BigQueryEngine


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """The emulator with the test file loaded as TABLE, a temporary dataset, and the engine."""
    path, _ = write_listings(tmp_path_factory.mktemp("bq-engine"), ROWS)
    emulator = emulator_with_table(
        "test-bigquery-engine", PORTS, PROJECT, path, TABLE, ROWS, f"{PROJECT}.{TEMP}"
    )
    with emulator as (client, read):
        counting = CountingClient(client)
        engine = BigQueryEngine(
            counting, read, temp_dataset=TEMP, location="US", max_bytes_billed=10**12,
            ordered_results="table",
        )  # fmt: skip
        yield Setup(path, client, read, counting, engine)


def duckdb_file(setup: Setup, query: Query, fmt: str) -> bytes:
    """The decompressed file the DuckDB engine writes for the query over the test file."""
    out = io.BytesIO()
    DuckDbEngine().export(str(setup.path), query, fmt, out)
    return gzip.decompress(out.getvalue())


def bigquery_file(setup: Setup, query: Query, fmt: str, plan: ExportPlan) -> tuple[bytes, int]:
    """The header member and every part's member, concatenated as compose does, decompressed
    as one file; and the rows the parts said they wrote."""
    members = [setup.engine.header(query, fmt)]
    rows = 0
    for part in plan.parts:
        out = io.BytesIO()
        rows += setup.engine.export(SOURCE, query, fmt, out, part=part, header=False)
        members.append(out.getvalue())
    return gzip.decompress(b"".join(members)), rows


def records(data: bytes, fmt: str) -> list[str]:
    """The file's records as their raw text (a CSV record may hold a quoted line break)."""
    text = data.decode("utf-8")
    if fmt == "jsonl":
        return text.splitlines(keepends=True)
    found: list[str] = []
    start, quoted = 0, False
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char == "\n" and not quoted:
            found.append(text[start : i + 1])
            start = i + 1
    assert start == len(text)
    assert not quoted
    return found


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("dataset", [FULL_TABLE, FILTERED], ids=["full-table", "filtered"])
def test_the_parts_give_the_records_duckdb_writes(
    setup: Setup, dataset: dict[str, Any], fmt: str
) -> None:
    """Planned as several streams, the parts' members after the header member read as one
    file whose header and records are those of the DuckDB engine's file, byte for byte."""
    query = parse(dataset)
    want = duckdb_file(setup, query, fmt)
    plan = setup.engine.plan(
        SOURCE, query, query_uuid=str(uuid.uuid4()), target_rows=ROWS // 8, max_parts=4
    )
    want_records = records(want, fmt)
    header = 1 if fmt == "csv" else 0
    assert plan.engine == "bigquery"
    assert plan.rows == len(want_records) - header
    assert len(plan.parts) == 4  # min(max_parts, rows / target_rows); the emulator gives 4
    assert [p.index for p in plan.parts] == [0, 1, 2, 3]
    assert all(p.stream and p.expected_rows is None for p in plan.parts)
    got, rows = bigquery_file(setup, query, fmt, plan)
    assert rows == plan.rows
    got_records = records(got, fmt)
    assert got_records[:header] == want_records[:header]
    assert sorted(got_records[header:]) == sorted(want_records[header:])
    if fmt == "csv":  # and it reads as one CSV file
        assert len(list(csv.reader(io.StringIO(got.decode(), newline="")))) == rows + 1


def test_an_ordered_query_is_one_stream_in_order(setup: Setup) -> None:
    """orderBy: one part, one stream, and the file is DuckDB's, in the same order."""
    query = parse(
        {
            "scopes": [{"column": "property_id"}, {"column": "city"}, {"column": "sqft"}],
            "filters": [{"column": "msa", "filter": {"equals": "Seattle, WA"}}],
            "orderBy": [{"column": "sqft", "direction": "desc"}, {"column": "property_id"}],
        }
    )
    plan = setup.engine.plan(
        SOURCE, query, query_uuid=str(uuid.uuid4()), target_rows=10, max_parts=8
    )
    assert len(plan.parts) == 1
    assert plan.parts[0].stream
    assert plan.single_part_reason == "it is ordered"
    got, rows = bigquery_file(setup, query, "csv", plan)
    assert got == duckdb_file(setup, query, "csv")
    assert rows == plan.rows > 100


def test_an_aggregate_fits_one_part_and_matches_duckdb(setup: Setup) -> None:
    """The seed's grouped average, small enough for one part: DuckDB's records."""
    query = parse(
        {
            "scopes": [{"column": "city"}, {"column": "bed"},
                       {"column": "sqft", "aggregate": "Max"},
                       {"column": "property_id", "aggregate": "Count"}],
            "filters": [{"column": "msa", "filter": {"equals": "Seattle, WA"}}],
        }
    )  # fmt: skip
    plan = setup.engine.plan(
        SOURCE, query, query_uuid=str(uuid.uuid4()), target_rows=100_000, max_parts=8
    )
    assert len(plan.parts) == 1
    assert plan.single_part_reason == "its rows fit one part"
    got, _ = bigquery_file(setup, query, "jsonl", plan)
    assert sorted(records(got, "jsonl")) == sorted(
        records(duckdb_file(setup, query, "jsonl"), "jsonl")
    )


def test_planning_again_finds_the_job_and_finish_drops_the_result(setup: Setup) -> None:
    """A second plan for the same queryUUID (a redelivered message) starts no second job and
    reads the same result; finish drops the result table, and again is harmless."""
    query = parse(FILTERED)
    query_uuid = str(uuid.uuid4())
    job_id = BigQueryEngine.job_id(query_uuid, 1)
    before = len(setup.counting.started)
    first = setup.engine.plan(SOURCE, query, query_uuid=query_uuid, target_rows=5_000, max_parts=3)
    assert setup.counting.started[before:] == [job_id]
    again = setup.engine.plan(SOURCE, query, query_uuid=query_uuid, target_rows=5_000, max_parts=3)
    assert setup.counting.started[before:] == [job_id]  # found, not started again
    assert again.rows == first.rows
    assert len(again.parts) == len(first.parts) == 3
    assert bigquery_file(setup, query, "csv", again)[1] == first.rows
    table = str(setup.engine.result_table(query_uuid))
    assert setup.client.get_table(table).num_rows == first.rows
    setup.engine.finish(query_uuid)
    with pytest.raises(gexc.NotFound):
        setup.client.get_table(table)
    setup.engine.finish(query_uuid)


def test_an_empty_result_is_one_part_with_only_the_header(setup: Setup) -> None:
    """No row matches: BigQuery gives no stream, the plan one part that writes no row."""
    query = parse(
        {
            "scopes": [{"column": "city"}, {"column": "bed"}],
            "filters": [{"column": "city", "filter": {"equals": "Nowhere"}}],
        }
    )
    plan = setup.engine.plan(
        SOURCE, query, query_uuid=str(uuid.uuid4()), target_rows=1_000, max_parts=4
    )
    assert plan.rows == 0
    assert [p.stream for p in plan.parts] == [None]
    assert bigquery_file(setup, query, "csv", plan) == (b"city,bed\n", 0)
    assert bigquery_file(setup, query, "jsonl", plan) == (b"", 0)


def test_a_table_that_does_not_fit_the_catalog_is_a_dataset_mismatch(setup: Setup) -> None:
    """A missing table, a missing column and a column of another type fail for good, naming
    the columns."""
    query = parse({"scopes": [{"column": "city"}, {"column": "bed"}, {"column": "sqft"}]})
    plan = {"query_uuid": str(uuid.uuid4()), "target_rows": 1_000, "max_parts": 1}
    with pytest.raises(DatasetMismatch, match="BigQuery table is not there"):
        setup.engine.plan(f"bq://{PROJECT}.listings.missing", query, **plan)  # type: ignore[arg-type]
    odd = f"{PROJECT}.listings.odd"
    statement = (
        f"CREATE OR REPLACE TABLE `{odd}` AS SELECT city, CAST(bed AS STRING) AS bed "  # noqa: S608
        f"FROM `{TABLE}` LIMIT 5"
    )
    setup.client.query(statement, job_config=bigquery.QueryJobConfig()).result()
    with pytest.raises(DatasetMismatch) as caught:
        setup.engine.plan(f"bq://{odd}", query, **plan)  # type: ignore[arg-type]
    assert str(caught.value) == (
        "the dataset does not fit the catalog: column 'bed' is STRING, expected integer; "
        "column 'sqft' is missing"
    )
