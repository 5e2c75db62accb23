"""Unit tests of the BigQuery engine's logic where the emulator does not behave as BigQuery: the
official client talks to a fake BigQuery REST API (a fake transport under the real
``google.cloud.bigquery.Client``), and a fake Storage Read client hands over real protobuf
messages with Arrow IPC bytes.

What is here and not on the emulator (tests/integration/test_bigquery_engine.py): dry-run
estimates and the byte cap (the emulator estimates 0 bytes and enforces no cap), a 409 Conflict
on inserting a job id that exists (the emulator accepts it twice), jobs that fail or keep
running, fewer or more streams than the emulator gives, the ordered path BigQuery takes (the
query job's anonymous destination, which the emulator cannot Storage-Read) and the error
reasons BigQuery answers with.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyarrow as pa
import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import types

from dataset_export.adapters.bigquery_engine import (
    BigQueryEngine,
    ErrorContext,
    classify,
    classify_job_error,
    source_table,
)
from dataset_export.core.errors import (
    ConfigError,
    DatasetMismatch,
    PermanentError,
    QueryRejected,
    QueryTooExpensive,
    QueryTooLarge,
    TransientError,
)
from dataset_export.core.parts import PartSpec
from dataset_export.core.source import BigQueryTable
from tests.unit.test_sql import parse

PROJECT = "dwe-unit"
SOURCE = f"bq://{PROJECT}.listings.rental_listings"
UUID = "0b7c9e4e-2f7a-4d4e-9a52-3c1f0e6d8a11"
QUERY = parse({"scopes": [{"column": "city"}, {"column": "bed"}]})
ORDERED = parse({"scopes": [{"column": "city"}, {"column": "bed"}], "orderBy": [{"column": "bed"}]})
SCHEMA = [{"name": "city", "type": "STRING"}, {"name": "bed", "type": "INTEGER"}]


@dataclass
class FakeBigQuery:
    """BigQuery's REST API, as much of it as the engine calls: jobs (insert, get), tables (get,
    delete). ``jobs`` holds job resources by id; ``on_insert`` decides how a new job ends."""

    estimate: int = 1_000
    result_rows: int = 10
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    inserted: list[dict[str, Any]] = field(default_factory=list)  # every POST to jobs
    conflict_once: set[str] = field(default_factory=set)  # ids another delivery inserts first
    end_state: dict[str, Any] = field(default_factory=lambda: {"state": "DONE"})
    is_mtls = False  # what the client asks an authorized session

    def __post_init__(self) -> None:
        self.tables["listings.rental_listings"] = {"schema": {"fields": SCHEMA}, "numRows": "99"}

    # The transport: requests.Session.request's signature, as the client calls it.
    def request(self, method: str, url: str, data: Any = None, **_: Any) -> requests.Response:
        path = urlparse(url).path.removeprefix("/bigquery/v2")
        query = parse_qs(urlparse(url).query)
        body = json.loads(data) if data else None
        if method == "POST" and (m := re.fullmatch(r"/projects/([^/]+)/jobs", path)):
            return self._insert(body, url)
        if method == "GET" and (m := re.fullmatch(r"/projects/([^/]+)/jobs/([^/]+)", path)):
            job = self.jobs.get(m.group(2))
            if job is None:
                return _response(404, _error(404, "notFound", f"Not found: Job {m.group(2)}"), url)
            assert query.get("location") == ["EU"]
            return _response(200, job, url)
        if m := re.fullmatch(r"/projects/([^/]+)/datasets/([^/]+)/tables/([^/]+)", path):
            key = f"{m.group(2)}.{m.group(3)}"
            if key not in self.tables:
                text = f"Not found: Table {m.group(1)}:{key}"
                return _response(404, _error(404, "notFound", text), url)
            if method == "DELETE":
                del self.tables[key]
                return _response(204, None, url)
            table = {"tableReference": {"projectId": m.group(1), "datasetId": m.group(2),
                                        "tableId": m.group(3)}, **self.tables[key]}  # fmt: skip
            return _response(200, table, url)
        raise AssertionError(f"unexpected {method} {url}")

    def _insert(self, body: dict[str, Any], url: str) -> requests.Response:
        self.inserted.append(copy.deepcopy(body))
        config = body["configuration"]
        reference = body["jobReference"]
        if config.get("dryRun"):
            stats = {"query": {"totalBytesProcessed": str(self.estimate)}}
            return _response(200, {**body, "status": {"state": "DONE"}, "statistics": stats}, url)
        job_id = reference["jobId"]
        if job_id in self.jobs or job_id in self.conflict_once:
            if job_id in self.conflict_once:  # the other delivery's job, already done
                self.conflict_once.discard(job_id)
                self.jobs[job_id] = self._finished(body)
            text = f"Already Exists: Job {PROJECT}:EU.{job_id}"
            return _response(409, _error(409, "duplicate", text), url)
        self.jobs[job_id] = job = self._finished(body)
        return _response(200, job, url)

    def _finished(self, body: dict[str, Any]) -> dict[str, Any]:
        job = {**copy.deepcopy(body), "status": dict(self.end_state)}
        statement = body["configuration"]["query"]["query"]
        if m := re.match(r"CREATE OR REPLACE TABLE `[^.]+\.([^.]+)\.([^`]+)`", statement):
            if "errorResult" not in self.end_state:
                self.tables[f"{m.group(1)}.{m.group(2)}"] = {
                    "schema": {"fields": SCHEMA},
                    "numRows": str(self.result_rows),
                }
        else:  # a plain query: its anonymous destination table
            anonymous = {"projectId": PROJECT, "datasetId": "_anon0", "tableId": "anon_ordered"}
            job["configuration"]["query"]["destinationTable"] = anonymous
            self.tables["_anon0.anon_ordered"] = {
                "schema": {"fields": SCHEMA},
                "numRows": str(self.result_rows),
            }
        return job


def _error(code: int, reason: str, message: str) -> dict[str, Any]:
    errors = [{"reason": reason, "message": message, "domain": "global"}]
    return {"error": {"code": code, "message": message, "errors": errors}}


def _response(status: int, body: Any, url: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = b"" if body is None else json.dumps(body).encode()
    response.headers["Content-Type"] = "application/json"
    response.url = url
    response.request = requests.Request("GET", url).prepare()
    return response


@dataclass
class FakeRead:
    """The Storage Read client: sessions of at most ``max_streams`` streams over any table, and
    each stream's rows as Arrow IPC messages, the schema in the first one (as BigQuery sends)."""

    max_streams: int = 1_000
    batch: pa.RecordBatch = field(
        default_factory=lambda: pa.record_batch(
            {"city": ["Akron, OH", "Zoo"], "bed": pa.array([2, None], pa.int64())}
        )
    )
    sessions: list[tuple[str, int]] = field(default_factory=list)  # (table, requested)

    def create_read_session(
        self, *, parent: str, read_session: types.ReadSession, max_stream_count: int
    ) -> types.ReadSession:
        assert parent == f"projects/{PROJECT}"
        assert read_session.data_format == types.DataFormat.ARROW
        self.sessions.append((read_session.table, max_stream_count))
        count = min(max_stream_count, self.max_streams)
        name = f"projects/{PROJECT}/locations/eu/sessions/s{len(self.sessions)}"
        return types.ReadSession(
            name=name, streams=[types.ReadStream(name=f"{name}/streams/{i}") for i in range(count)]
        )

    def read_rows(self, stream: str) -> list[types.ReadRowsResponse]:
        schema = self.batch.schema.serialize().to_pybytes()
        data = self.batch.serialize().to_pybytes()
        return [
            types.ReadRowsResponse(
                arrow_schema=types.ArrowSchema(serialized_schema=schema),
                arrow_record_batch=types.ArrowRecordBatch(serialized_record_batch=data),
                row_count=self.batch.num_rows,
            ),
            types.ReadRowsResponse(
                arrow_record_batch=types.ArrowRecordBatch(serialized_record_batch=data),
                row_count=self.batch.num_rows,
            ),
        ]


def engine_on(
    fake: FakeBigQuery, read: FakeRead | None = None, **options: Any
) -> tuple[BigQueryEngine, FakeRead]:
    client = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        _http=fake,  # type: ignore[arg-type]
    )
    read = read or FakeRead()
    settings: dict[str, Any] = {"temp_dataset": "dwe_tmp", "location": "EU",
                                "max_bytes_billed": 10**9, **options}  # fmt: skip
    return BigQueryEngine(client, read, **settings), read


def plan(engine: BigQueryEngine, query: Any = QUERY, **options: Any) -> Any:
    settings = {"query_uuid": UUID, "target_rows": 4, "max_parts": 8, **options}
    return engine.plan(SOURCE, query, **settings)


def started(fake: FakeBigQuery) -> list[str]:
    """The ids of the real (not dry-run) jobs the engine inserted."""
    return [
        b["jobReference"]["jobId"] for b in fake.inserted if not b["configuration"].get("dryRun")
    ]


def test_a_plan_dry_runs_then_runs_one_labelled_capped_ctas_job_named_after_the_export() -> None:
    """The statement is a CTAS into the export's table, the job id and label carry the
    queryUUID, the cap is set, and the parts are the session's streams."""
    fake = FakeBigQuery(result_rows=10)
    engine, read = engine_on(fake)
    result = plan(engine)
    dry, real = fake.inserted
    assert dry["configuration"]["dryRun"] is True
    assert started(fake) == [f"dwe-export-{UUID}-1"]
    config = real["configuration"]
    table = f"`{PROJECT}.dwe_tmp.export_{UUID.replace('-', '_')}`"
    assert config["query"]["query"].startswith(f"CREATE OR REPLACE TABLE {table} OPTIONS(")
    assert "AS SELECT `dataset`.`city` AS `city`" in config["query"]["query"]
    assert config["query"]["maximumBytesBilled"] == str(10**9)
    assert config["labels"] == {"dwe-query-uuid": UUID, "dwe-app": "dataset-export"}
    assert real["jobReference"]["location"] == "EU"
    # ceil(10 rows / 4 per part) = 3 streams asked for; each one a part.
    table_name = f"projects/{PROJECT}/datasets/dwe_tmp/tables/export_{UUID.replace('-', '_')}"
    assert read.sessions == [(table_name, 3)]
    assert result.rows == 10
    assert result.engine == "bigquery"
    assert [(p.index, p.stream) for p in result.parts] == [
        (i, f"projects/{PROJECT}/locations/eu/sessions/s1/streams/{i}") for i in range(3)
    ]
    assert all(p.expected_rows is None for p in result.parts)


def test_an_estimate_above_the_cap_fails_for_good_naming_the_bytes_and_the_cap() -> None:
    """The dry run's estimate above max_bytes_billed: QueryTooExpensive, and no job starts."""
    fake = FakeBigQuery(estimate=5_000_000_001)
    engine, _ = engine_on(fake, max_bytes_billed=5_000_000_000)
    with pytest.raises(QueryTooExpensive) as caught:
        plan(engine)
    assert "5,000,000,001 bytes, more than the 5,000,000,000 bytes an export may bill" in str(
        caught.value
    )
    assert "select fewer columns" in str(caught.value)
    assert caught.value.code == "query_too_expensive"
    assert isinstance(caught.value, QueryRejected)
    assert started(fake) == []


def test_a_redelivered_plan_finds_the_job_and_starts_no_second_one() -> None:
    """Planning again for the same queryUUID gets the job by its id: no insert, no dry run."""
    fake = FakeBigQuery(result_rows=3)
    engine, read = engine_on(fake)
    first = plan(engine)
    inserted = len(fake.inserted)
    again = plan(engine)
    assert len(fake.inserted) == inserted  # neither a dry run nor a job
    assert again.rows == first.rows == 3
    assert len(read.sessions) == 2  # a new session over the same table


def test_a_job_another_delivery_inserted_first_is_taken_from_the_409() -> None:
    """Not there when looked up, there when inserted (409 Conflict): its job is used."""
    fake = FakeBigQuery(conflict_once={f"dwe-export-{UUID}-1"})
    engine, _ = engine_on(fake)
    result = plan(engine)
    assert started(fake) == [f"dwe-export-{UUID}-1"]  # the insert that met the 409
    assert result.rows == 10


def test_a_failed_job_is_transient_or_permanent_by_its_reason_and_a_retry_takes_the_next_id() -> (
    None
):
    """A new job failing on quota is transient; the next delivery, finding it failed, starts
    attempt 2. A job failing on an invalid query fails the export for good."""
    limited = {"reason": "rateLimitExceeded", "message": "Exceeded rate limits: too many jobs"}
    fake = FakeBigQuery(end_state={"state": "DONE", "errorResult": limited})
    engine, _ = engine_on(fake)
    with pytest.raises(TransientError, match="rateLimitExceeded"):
        plan(engine)
    fake.end_state = {"state": "DONE"}
    assert plan(engine).rows == 10
    assert started(fake) == [f"dwe-export-{UUID}-1", f"dwe-export-{UUID}-2"]

    invalid = {"reason": "invalidQuery",
               "message": "Syntax error: Unexpected keyword AS at [1:9]\nSELECT AS"}  # fmt: skip
    broken = FakeBigQuery(end_state={"state": "DONE", "errorResult": invalid})
    engine, _ = engine_on(broken)
    with pytest.raises(QueryRejected) as caught:
        plan(engine)
    assert str(caught.value) == (
        "BigQuery refused the query (Syntax error: Unexpected keyword AS at [1:9]); change the "
        "query and submit a new export"
    )
    with pytest.raises(QueryRejected):  # found failed again: still permanent, no new job
        plan(engine)
    assert started(broken) == [f"dwe-export-{UUID}-1"]


def test_a_job_still_running_past_the_timeout_is_transient() -> None:
    """The next delivery finds the running job and waits again; no second job."""
    fake = FakeBigQuery(end_state={"state": "RUNNING"})
    engine, _ = engine_on(fake, job_timeout=0.3)
    with pytest.raises(TransientError, match="still runs after 0 s"):
        plan(engine)
    with pytest.raises(TransientError):
        plan(engine)
    assert started(fake) == [f"dwe-export-{UUID}-1"]


@pytest.mark.parametrize(
    ("rows", "target_rows", "max_parts", "available", "requested", "parts"),
    [
        (10, 4, 8, 1_000, 3, 3),  # ceil(10 / 4)
        (10, 100, 8, 1_000, 1, 1),  # fits one part
        (1_000, 1, 8, 1_000, 8, 8),  # capped by max_parts
        (1_000, 1, 8, 5, 8, 5),  # BigQuery gives fewer: one part per stream it gives
        (0, 4, 8, 0, 1, 1),  # empty: no stream, one part with none
    ],
)
def test_streams_requested_and_parts_made(
    rows: int, target_rows: int, max_parts: int, available: int, requested: int, parts: int
) -> None:
    """N = min(max_parts, ceil(rows / target_rows)), at least 1; one part per stream given."""
    fake = FakeBigQuery(result_rows=rows)
    engine, read = engine_on(fake, read=FakeRead(max_streams=available))
    result = plan(engine, target_rows=target_rows, max_parts=max_parts)
    assert read.sessions[0][1] == requested
    assert len(result.parts) == parts
    if available == 0:
        assert result.parts == [PartSpec(0)]
        assert result.single_part_reason == "its rows fit one part"


def test_an_ordered_query_reads_its_jobs_destination_with_one_stream_on_bigquery() -> None:
    """ordered_results="destination": a plain query job (no CTAS, whose table would not keep
    the order), its anonymous destination read by a session of one stream."""
    fake = FakeBigQuery(result_rows=50)
    engine, read = engine_on(fake)
    result = plan(engine, ORDERED, target_rows=1)
    statement = started_statement(fake)
    assert statement.startswith("SELECT ")
    assert statement.endswith("ORDER BY `dataset`.`bed` ASC NULLS LAST")
    assert read.sessions == [(f"projects/{PROJECT}/datasets/_anon0/tables/anon_ordered", 1)]
    assert len(result.parts) == 1
    assert result.rows == 50
    assert result.single_part_reason == "it is ordered"


def test_an_ordered_query_goes_through_the_result_table_with_ordered_results_table() -> None:
    """ordered_results="table" (the emulator): CTAS as for any query, one stream."""
    fake = FakeBigQuery(result_rows=50)
    engine, read = engine_on(fake, ordered_results="table")
    plan(engine, ORDERED, target_rows=1)
    assert started_statement(fake).startswith("CREATE OR REPLACE TABLE ")
    assert read.sessions[0][1] == 1


def started_statement(fake: FakeBigQuery) -> str:
    (body,) = [b for b in fake.inserted if not b["configuration"].get("dryRun")]
    statement: str = body["configuration"]["query"]["query"]
    return statement


def test_export_decodes_the_stream_with_its_first_schema_and_renders_csv_and_jsonl() -> None:
    """Each response's Arrow batch, decoded with the schema of the first, rendered by the
    project's renderer: an INT64 as digits, text quoted only when needed, null empty."""
    engine, _ = engine_on(FakeBigQuery())
    part = PartSpec(0, stream="projects/p/locations/eu/sessions/s/streams/0")
    out = io.BytesIO()
    assert engine.export(SOURCE, QUERY, "csv", out, part=part) == 4
    assert (
        gzip.decompress(out.getvalue()) == b'city,bed\n"Akron, OH",2\nZoo,\n"Akron, OH",2\nZoo,\n'
    )
    out = io.BytesIO()
    assert engine.export(SOURCE, QUERY, "jsonl", out, part=part, header=False) == 4
    assert gzip.decompress(out.getvalue()).splitlines()[:2] == [
        b'{"city":"Akron, OH","bed":2}',
        b'{"city":"Zoo","bed":null}',
    ]
    assert gzip.decompress(engine.header(QUERY, "csv")) == b"city,bed\n"
    with pytest.raises(ValueError, match="give a part"):
        engine.export(SOURCE, QUERY, "csv", io.BytesIO())


def test_finish_drops_the_result_table_and_again_is_harmless() -> None:
    """finish deletes export_<uuid> in the temporary dataset; a second finish finds nothing."""
    fake = FakeBigQuery()
    engine, _ = engine_on(fake)
    plan(engine)
    key = f"dwe_tmp.export_{UUID.replace('-', '_')}"
    assert key in fake.tables
    engine.finish(UUID)
    assert key not in fake.tables
    engine.finish(UUID)


def test_a_missing_source_table_and_a_missing_temporary_dataset_are_told_apart() -> None:
    """The source's table gone: DatasetMismatch; the results' dataset gone: ConfigError."""
    fake = FakeBigQuery()
    del fake.tables["listings.rental_listings"]
    engine, _ = engine_on(fake)
    with pytest.raises(DatasetMismatch, match="BigQuery table is not there"):
        plan(engine)
    context = ErrorContext("dwe_tmp", 10, source_table(SOURCE))
    missing = gexc.NotFound(
        "Not found: Dataset dwe-unit:dwe_tmp was not found in location EU",
        errors=[{"reason": "notFound"}],
    )
    assert isinstance(classify(missing, context, what="x"), ConfigError)
    gone = gexc.NotFound("Not found: Dataset dwe-unit:listings", errors=[{"reason": "notFound"}])
    assert isinstance(classify(gone, context, what="x"), DatasetMismatch)


CONTEXT = ErrorContext(
    "dwe_tmp", 1_000_000, BigQueryTable("dwe-unit", "listings", "rental_listings")
)


def _api(kind: type[gexc.GoogleAPICallError], message: str, reason: str | None = None) -> Any:
    return kind(message, errors=[{"reason": reason}] if reason else ())


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (_api(gexc.BadRequest, "Unrecognized name: x at [1:8]\nSELECT x", "invalidQuery"),
         QueryRejected),
        (_api(gexc.BadRequest, "bad parameter", "invalid"), QueryRejected),
        (_api(gexc.BadRequest, "Query exceeded limit for bytes billed: 1000000. 10485760 or "
              "higher required.", "bytesBilledLimitExceeded"), QueryTooExpensive),
        (_api(gexc.BadRequest, "Resources exceeded during query execution",
              "resourcesExceeded"), QueryTooLarge),
        (_api(gexc.Forbidden, "Exceeded rate limits", "rateLimitExceeded"), TransientError),
        (_api(gexc.Forbidden, "Quota exceeded", "quotaExceeded"), TransientError),
        (_api(gexc.Forbidden, "Access Denied: Table x", "accessDenied"), ConfigError),
        (_api(gexc.InternalServerError, "Backend error", "backendError"), TransientError),
        (_api(gexc.ServiceUnavailable, "try again"), TransientError),
        (_api(gexc.TooManyRequests, "slow down"), TransientError),
        (_api(gexc.DeadlineExceeded, "deadline"), TransientError),
        (_api(gexc.NotFound, "Not found: Table dwe-unit:listings.rental_listings", "notFound"),
         DatasetMismatch),
        (_api(gexc.BadRequest, "something else"), QueryRejected),
    ],
)  # fmt: skip
def test_bigquery_errors_are_classified(exc: gexc.GoogleAPICallError, kind: type) -> None:
    """Each reason BigQuery answers with lands on the branch the service acts on."""
    error = classify(exc, CONTEXT, what="running the query")
    assert type(error) is kind
    assert "SELECT" not in str(error)  # only the first line of BigQuery's message
    assert isinstance(error, TransientError | PermanentError)


def test_a_bytes_billed_refusal_names_the_cap_and_bigquerys_figure() -> None:
    """BigQuery's own refusal (its 10 MB minimum per table) says both figures."""
    error = classify_job_error(
        {"reason": "bytesBilledLimitExceeded",
         "message": "Query exceeded limit for bytes billed: 1000000. 10485760 or higher required."},
        CONTEXT,
    )  # fmt: skip
    assert isinstance(error, QueryTooExpensive)
    assert "more than the 1,000,000 bytes an export may" in str(error)
    assert "10485760 or higher required" in str(error)


def test_bad_settings_and_sources_are_config_errors() -> None:
    """A source that is not bq://project.dataset.table, a bad temporary dataset or cap."""
    with pytest.raises(ConfigError, match=r"bq://project\.dataset\.table"):
        source_table("gs://bucket/file.parquet")
    with pytest.raises(ConfigError, match="not a table path"):
        source_table("bq://no-dots")
    with pytest.raises(ConfigError, match="temporary dataset"):
        engine_on(FakeBigQuery(), temp_dataset="bad-name")
    with pytest.raises(ConfigError, match="max_bytes_billed"):
        engine_on(FakeBigQuery(), max_bytes_billed=0)
    engine, _ = engine_on(FakeBigQuery(), temp_dataset="other-proj.results")
    assert str(engine.result_table(UUID)) == f"other-proj.results.export_{UUID.replace('-', '_')}"
    with pytest.raises(ValueError, match="queryUUID"):
        engine.result_table("x`; DROP")
