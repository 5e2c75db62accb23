"""Differential test of the GoogleSQL dialect: random queries from the query model give the same
rows on DuckDB (the DuckDB dialect over the Parquet file) and on the BigQuery emulator (the
GoogleSQL dialect over the same rows loaded into a table, with typed query parameters through
google-cloud-bigquery).

The emulator runs on its own ports (the session stack's BigQuery ports plus ten), started and
stopped by PID through the local stack (building its virtualenv if missing). Queries without
``orderBy`` run as ``CREATE TABLE ... AS`` and are read back through the Storage Read API (the
engine's path); ordered ones are read from the query job itself, whose rows keep the order.
Rows are compared as multisets, in order where ``orderBy`` says, floats within a relative 1e-9;
with a limit, BigQuery's rows must be a valid answer to the query (``check_result`` against
DuckDB's full result), since which rows a limit keeps is unspecified without an order.

The emulator executes GoogleSQL by translating it to DuckDB, and it accepts SQL BigQuery would
refuse (``MEDIAN``, a float in ``PARTITION BY``...): passing here shows the two dialects mean
the same, not that BigQuery accepts the text. The golden tests in tests/unit/test_sql_bigquery.py,
checked against BigQuery's documentation, are what pin the text.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from google.cloud import bigquery, bigquery_storage_v1
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataset_export.core.query import Query
from dataset_export.engine.sql import bigquery_dialect, duckdb_dialect
from dataset_export.engine.sql.bigquery_dialect import ArrayParameter, QueryParameter
from tests.bigquery_emulator import emulator_with_table
from tests.conftest import TEST_PORTS
from tests.unit.test_sql import check_result, datasets, parse, value_pools, write_listings

pytestmark = pytest.mark.integration

PROJECT = "dwe-dialect"
TABLE = f"{PROJECT}.listings.rental_listings"
RESULTS = f"{PROJECT}.results"
ROWS = 20_000
PORTS = dataclasses.replace(
    TEST_PORTS, bigquery=TEST_PORTS.bigquery + 10, bigquery_grpc=TEST_PORTS.bigquery_grpc + 10
)


@dataclasses.dataclass
class Engines:
    """DuckDB over the file and the emulator over the same rows."""

    duck: Any
    client: Any
    read: Any
    rows: list[dict[str, Any]]
    names: Iterator[int] = dataclasses.field(default_factory=itertools.count)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    """The emulator with the test file loaded as TABLE, and DuckDB with it as a view."""
    path, rows = write_listings(tmp_path_factory.mktemp("bq"), ROWS)
    duck = duckdb.connect(":memory:", config={"threads": 1})
    try:
        emulator = emulator_with_table("test-bigquery", PORTS, PROJECT, path, TABLE, ROWS, RESULTS)
        with emulator as (client, read):
            duck.read_parquet(str(path)).create_view("dataset")
            yield Engines(duck=duck, client=client, read=read, rows=rows)
    finally:
        duck.close()


def _parameter(p: QueryParameter) -> Any:
    if isinstance(p, ArrayParameter):
        return bigquery.ArrayQueryParameter(p.name, p.type, list(p.values))
    return bigquery.ScalarQueryParameter(p.name, p.type, p.value)


def on_duckdb(engines: Engines, query: Query) -> list[tuple[Any, ...]]:
    compiled = duckdb_dialect.compile_query(query)
    return [tuple(row) for row in engines.duck.sql(compiled.sql, params=compiled.params).fetchall()]


def on_bigquery(engines: Engines, query: Query) -> list[tuple[Any, ...]]:
    """The query's rows from the emulator: CTAS and Storage Read, or the job's rows in order."""
    compiled = bigquery_dialect.compile_query(query, TABLE)
    job_config = bigquery.QueryJobConfig(query_parameters=[_parameter(p) for p in compiled.params])
    if query.order_by:
        rows = engines.client.query(compiled.sql, job_config=job_config).result()
        return [tuple(row.values()) for row in rows]
    table = f"{RESULTS}.r{next(engines.names)}"
    statement = f"CREATE TABLE `{table}` AS {compiled.sql}"
    engines.client.query(statement, job_config=job_config).result()
    try:
        session = engines.read.create_read_session(
            parent=f"projects/{PROJECT}",
            read_session=bigquery_storage_v1.types.ReadSession(
                table=f"projects/{PROJECT}/datasets/results/tables/{table.rsplit('.', 1)[1]}",
                data_format=bigquery_storage_v1.types.DataFormat.ARROW,
            ),
            max_stream_count=4,
        )
        # The Arrow IPC messages as sent (the client's to_arrow is deprecated in favour of
        # pandas-gbq): one schema for the session, record batches per response.
        schema = pa.ipc.read_schema(pa.py_buffer(session.arrow_schema.serialized_schema))
        found: list[tuple[Any, ...]] = []
        for stream in session.streams:
            for response in engines.read.read_rows(stream.name):
                message = pa.py_buffer(response.arrow_record_batch.serialized_record_batch)
                batch = pa.ipc.read_record_batch(message, schema)
                found.extend(tuple(row.values()) for row in batch.to_pylist())
        return found
    finally:
        engines.client.delete_table(table)


def check_same_rows(engines: Engines, query: Query) -> None:
    """The emulator's rows are a valid answer by DuckDB's full result (limit lifted)."""
    unlimited = dataclasses.replace(query, limit=None)
    check_result(query, on_bigquery(engines, query), on_duckdb(engines, unlimited))


def test_the_seed_example_and_each_median_shape_give_duckdbs_rows(engines: Engines) -> None:
    """Fixed queries first: the seed's, and Median with and without keys, float keys, nulls."""
    cases: list[dict[str, Any]] = [
        {
            "scopes": [{"column": "street_address"}, {"column": "asking_rent", "aggregate": "Avg"}],
            "filters": [
                {"column": "msa", "filter": {"equals": "Seattle, WA"}},
                {"column": "bed", "filter": {"in": [1, 2, 3]}},
            ],
            "limit": 10000,
        },
        {"scopes": [{"column": "sqft", "aggregate": "Median"}]},
        {  # no row matches: one row, median null, count 0
            "scopes": [
                {"column": "sqft", "aggregate": "Median"},
                {"column": "sqft", "aggregate": "Count"},
            ],
            "filters": [{"column": "city", "filter": {"equals": "Nowhere"}}],
        },
        {  # float and nullable keys, an integer and a float median, other aggregates beside
            "scopes": [
                {"column": "bath"},
                {"column": "bed"},
                {"column": "sqft", "aggregate": "Median"},
                {"column": "asking_rent", "aggregate": "Median"},
                {"column": "asking_rent", "aggregate": "Avg"},
                {"column": "city", "aggregate": "CountDistinct"},
            ],
            "orderBy": [{"column": "median_asking_rent", "direction": "desc"}, {"column": "bath"}],
        },
        {
            "scopes": [{"column": "building_name"}, {"column": "lat", "aggregate": "Median"}],
            "filters": [{"column": "building_name", "filter": {"contains": "Lofts"}}],
        },
        {  # mixed integer and fractional in-list
            "scopes": [{"column": "property_id"}, {"column": "bed"}],
            "filters": [{"column": "bed", "filter": {"notIn": [1, 2.5, 4]}}],
            "orderBy": [{"column": "property_id"}],
            "limit": 50,
        },
    ]
    for dataset in cases:
        check_same_rows(engines, parse(dataset))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_queries_give_the_same_rows_on_duckdb_and_the_bigquery_emulator(
    data: st.DataObject, engines: Engines, pools: dict[str, list[Any]]
) -> None:
    """Random valid queries (every operator, aggregate, keys, order, limit) agree."""
    check_same_rows(engines, parse(data.draw(datasets(pools))))


@pytest.fixture(scope="module")
def pools(engines: Engines) -> dict[str, list[Any]]:
    """Value pools of the test file."""
    return value_pools(engines.rows)
