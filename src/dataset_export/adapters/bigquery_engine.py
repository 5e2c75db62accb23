"""The BigQuery engine: the export's query runs on BigQuery, its rows come back through the
Storage Read API in parallel streams, one part per stream, rendered by the project's own
renderer into gzip members (``service.ports.ExportEngine``).

The source is ``bq://project.dataset.table`` (``source_table``), a table with the catalog's
columns (``dataset_export_tools.bigquery_load.table_schema`` builds one).

``plan`` (once per export; called again for a redelivered message it finds the work instead of
repeating it):

1. The source table's schema is checked against the columns the query reads: a column missing
   or of another type is ``DatasetMismatch``, as the DuckDB engine's check; a missing table too.
2. The query is compiled with the GoogleSQL dialect (``engine.sql.bigquery_dialect``: typed named
   parameters, nothing a customer sent in the text) into ``CREATE OR REPLACE TABLE
   `<temp dataset>.export_<queryUUID>` OPTIONS(expiration_timestamp = now + 24 h) AS SELECT
   ...``: the result goes to a table of its own in the temporary dataset, which also has a
   default table expiration (Terraform), so a table ``finish`` never dropped goes away anyway.
3. A dry run of that statement first: BigQuery's refusal (an invalid query) fails the export
   before anything is billed, and an estimate above ``max_bytes_billed`` is ``QueryTooExpensive``
   naming the bytes and the cap. The job itself runs with ``maximum_bytes_billed`` set too, so
   BigQuery enforces the cap (its 10 MB minimum per table included, which the estimate is not).
4. The job's id derives from the queryUUID, ``dwe-export-<queryUUID>-<n>``, with the queryUUID
   as a label. The engine first looks the job up by that id: a redelivered message finds the
   job an earlier delivery started and waits for it instead of starting a second (no dry run
   either); two deliveries inserting it at once meet BigQuery's 409 Conflict, and the second
   gets the first one's job. A job that failed in a way a retry may cure (quota, backend) is
   followed by the next ``n`` on the next delivery; one that failed for good fails the export.
   A job still running after ``job_timeout`` seconds is a ``TransientError``: the next
   delivery finds it and waits again.
5. The result's row count comes from the result table (``num_rows``), and becomes the plan's
   ``rows``, which the service checks against the file's rows at the end.
6. A read session over the result table (Arrow, LZ4-compressed buffers) with ``N`` requested
   streams: ``ceil(rows / target_rows)`` clamped to ``[1, max_parts]``, and 1 for an ordered
   query. BigQuery may return fewer streams than requested (and none for an empty table); each
   stream it returns is one part (``PartSpec.stream``), whose rows are not known before it is
   read (``expected_rows`` None). A second ``plan`` makes a new session over the same table
   (sessions cost nothing; the old one expires). Sessions expire after 6 hours: a part that
   runs later fails for good.

Ordered results (``ordered_results``). BigQuery does not keep the ``ORDER BY`` of a ``CREATE
TABLE ... AS SELECT`` in the table it writes, so an ordered query cannot be read from the
per-export table. With ``"destination"`` (the default, production) it runs as a plain query
job, whose anonymous destination table holds the ordered result, and that table is read with
one stream, which is what the official client does (``google.cloud.bigquery``'s RowIterator
reads a query's destination with a single stream when the query has an ORDER BY). The BigQuery
emulator cannot Storage-Read an anonymous table, so the local stack and the integration tests
pass ``"table"``: ordered results also go through the per-export table, read with one stream,
which keeps the order on the emulator (it writes a CTAS in order) and would not on BigQuery.
So: ``"destination"`` is tested against a fake client only (tests/unit/test_bigquery_engine.py),
``"table"`` on the emulator (tests/integration/test_bigquery_engine.py).

``export`` reads one part's stream (``read_client.read_rows``, which reconnects at the last
offset on a transient stream error), decodes each response's Arrow record batch with the schema
the stream's first response carries, and renders the batches with ``engine.render`` into a
``GzipSink``: the same bytes as the DuckDB engine writes for the same rows (render.py's
docstring; an INT64 where the Parquet file has an int32 renders the same). ``header`` is
``render.header_member``; ``finish`` drops the result table (a missing one is fine).

Errors (``classify``): an invalid query (``invalidQuery``, ``invalid``) is ``QueryRejected``
with BigQuery's message cleaned by ``public_detail``; the bytes cap (``bytesBilledLimitExceeded``)
``QueryTooExpensive``; ``resourcesExceeded`` ``QueryTooLarge``; the source table or dataset not
found ``DatasetMismatch``; the temporary dataset not found, access denied or billing off
``ConfigError``; quota and rate limits (``quotaExceeded``, ``rateLimitExceeded``), backend and
internal errors, 5xx, timeouts ``TransientError``. The emulator reports some of these
differently (a missing dataset in a CTAS as ``invalidQuery``; it never enforces the cap, always
estimates 0 bytes, accepts a job id twice and returns at most 10 streams), so the
classification, the cap, the Conflict on a second insert and the stream counts are tested
against a fake client.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, cast

import pyarrow as pa
from google.api_core import exceptions as gexc
from google.cloud import bigquery
from google.cloud.bigquery_storage_v1 import types as storage_types

from ..core.catalog import Column, ColumnType
from ..core.errors import (
    ConfigError,
    DatasetMismatch,
    ExportError,
    PermanentError,
    QueryRejected,
    QueryTooExpensive,
    QueryTooLarge,
    TransientError,
    public_detail,
)
from ..core.formats import ExportFormat
from ..core.parts import ExportPlan, PartSpec
from ..core.query import Query
from ..core.source import (
    BIGQUERY_SCHEME,
    BigQueryDataset,
    BigQueryTable,
    parse_bigquery_dataset,
    parse_bigquery_table,
)
from ..engine.gzip_sink import GzipBackend, GzipSink
from ..engine.render import encoder_for, header_member
from ..engine.sql.bigquery_dialect import (
    ArrayParameter,
    ScalarParameter,
    compile_query,
    quote_table,
)
from ..engine.sql.compiler import columns_read
from ..service.ports import Writable
from .errors import google_errors

log = logging.getLogger(__name__)

ENGINE = "bigquery"
OrderedResults = Literal["destination", "table"]
#: How long a result table outlives its export at most (the dataset's default may be shorter).
RESULT_TABLE_HOURS = 24
#: Job ids ``dwe-export-<queryUUID>-1`` .. ``-MAX_JOB_ATTEMPTS``: retries after transient
#: failures of the job itself; past that the export fails.
MAX_JOB_ATTEMPTS = 10

_QUERY_UUID = re.compile(r"[A-Za-z0-9-]{1,100}")
# GoogleSQL types (the REST API's legacy spellings too) each catalog type accepts.
_ACCEPTED_TYPES: dict[ColumnType, frozenset[str]] = {
    ColumnType.STRING: frozenset({"STRING"}),
    ColumnType.INTEGER: frozenset({"INT64", "INTEGER"}),
    ColumnType.NUMBER: frozenset({"FLOAT64", "FLOAT", "INT64", "INTEGER"}),
    ColumnType.DATE: frozenset({"DATE"}),
    ColumnType.BOOLEAN: frozenset({"BOOL", "BOOLEAN"}),
}
# Error reasons (https://cloud.google.com/bigquery/docs/error-messages).
_TRANSIENT_REASONS = frozenset(
    {"backendError", "internalError", "quotaExceeded", "rateLimitExceeded", "tableUnavailable",
     "jobBackendError", "jobInternalError", "timeout", "stopped"}
)  # fmt: skip
_REJECTED_REASONS = frozenset({"invalidQuery", "invalid"})
_CONFIG_REASONS = frozenset({"accessDenied", "billingNotEnabled", "blocked"})


def source_table(source: str) -> BigQueryTable:
    """The table of a ``bq://project.dataset.table`` source; ``ConfigError`` when it is not one."""
    if not source.startswith(BIGQUERY_SCHEME):
        raise ConfigError(
            f"a BigQuery source is {BIGQUERY_SCHEME}project.dataset.table, got {source!r}"
        )
    try:
        return parse_bigquery_table(source.removeprefix(BIGQUERY_SCHEME))
    except ValueError as exc:
        raise ConfigError(f"the BigQuery source is not a table path: {exc}") from exc


def bigquery_clients(
    project: str,
    location: str | None = None,
    *,
    rest_endpoint: str = "",
    grpc_endpoint: str = "",
) -> tuple[Any, Any]:
    """A BigQuery client and a Storage Read client for ``project``.

    On Google Cloud both use the function's own credentials. With ``rest_endpoint`` and
    ``grpc_endpoint`` (the local BigQuery emulator: plain HTTP, plaintext gRPC) both use
    anonymous credentials; the gRPC channel has no message size limit, as the client's own
    channel (a response holds a whole record batch: gRPC's default 4 MiB refuses ~30k rows).
    """
    from google.cloud import bigquery, bigquery_storage_v1

    if not rest_endpoint:
        client = bigquery.Client(project=project, location=location)
        return client, bigquery_storage_v1.BigQueryReadClient()  # type: ignore[no-untyped-call]
    import grpc
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.bigquery_storage_v1.services.big_query_read.transports import (
        BigQueryReadGrpcTransport,
    )

    client = bigquery.Client(
        project=project,
        location=location,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=rest_endpoint),
    )
    unlimited = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    channel = grpc.insecure_channel(grpc_endpoint, options=unlimited)
    transport = BigQueryReadGrpcTransport(channel=channel)
    read = bigquery_storage_v1.BigQueryReadClient(transport=transport)  # type: ignore[no-untyped-call]
    return client, read


class BigQueryEngine:
    """The export engine over a BigQuery table (``service.ports.ExportEngine``).

    ``client`` is a ``google.cloud.bigquery.Client`` (its project runs and bills the jobs),
    ``read_client`` a ``google.cloud.bigquery_storage_v1.BigQueryReadClient``. ``temp_dataset``
    (``project.dataset``, or ``dataset`` in the client's project) holds the per-export result
    tables, in ``location`` (the source's location too). ``max_bytes_billed`` caps each export's
    query. ``ordered_results`` says how an ordered result is read (the module docstring:
    ``"destination"`` on BigQuery, ``"table"`` on the emulator).
    """

    name = ENGINE

    def __init__(
        self,
        client: Any,
        read_client: Any,
        *,
        temp_dataset: str,
        location: str,
        max_bytes_billed: int,
        ordered_results: OrderedResults = "destination",
        job_timeout: float = 300.0,
        progress_interval: float = 5.0,
        gzip_backend: GzipBackend | None = None,
        gzip_level: int | None = None,
    ) -> None:
        if isinstance(max_bytes_billed, bool) or not isinstance(max_bytes_billed, int):
            raise ConfigError(f"max_bytes_billed must be an integer, got {max_bytes_billed!r}")
        if max_bytes_billed < 1:
            raise ConfigError(f"max_bytes_billed must be positive, got {max_bytes_billed}")
        if ordered_results not in ("destination", "table"):
            raise ConfigError(
                f"ordered_results must be destination or table, got {ordered_results!r}"
            )
        project, _, dataset = temp_dataset.rpartition(".")
        try:
            self.temp: BigQueryDataset = parse_bigquery_dataset(
                f"{project or client.project}.{dataset}"
            )
        except ValueError as exc:
            raise ConfigError(f"the temporary dataset is not a dataset path: {exc}") from exc
        self.client = client
        self.read_client = read_client
        self.location = location
        self.max_bytes_billed = max_bytes_billed
        self.ordered_results = ordered_results
        self.job_timeout = job_timeout
        self.progress_interval = progress_interval
        self.gzip_backend = gzip_backend
        self.gzip_level = gzip_level

    # --- the port --------------------------------------------------------------------------

    def plan(
        self, source: str, query: Query, *, query_uuid: str, target_rows: int, max_parts: int
    ) -> ExportPlan:
        """Run the query into its result table (or find the job that did) and split the result
        into the streams of a read session, one part each (the module docstring)."""
        if target_rows < 1 or max_parts < 1:
            raise ValueError("target_rows and max_parts must be positive")
        table = source_table(source)
        self._check_schema(table, query)
        ordered = bool(query.order_by)
        via_destination = ordered and self.ordered_results == "destination"
        compiled = compile_query(query, table)
        statement = compiled.sql
        if not via_destination:
            statement = (
                f"CREATE OR REPLACE TABLE {quote_table(self.result_table(query_uuid))} "
                f"OPTIONS(expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), "
                f"INTERVAL {RESULT_TABLE_HOURS} HOUR)) AS {compiled.sql}"
            )
        params = [_parameter(p) for p in compiled.params]
        job = self._run_job(statement, params, query_uuid, table)
        result = self._result_of(job, query_uuid, via_destination)
        with self._errors("reading the result table's size"):
            rows = int(self.client.get_table(str(result)).num_rows or 0)
        wanted = 1 if ordered else max(1, min(max_parts, math.ceil(rows / target_rows)))
        streams = self._streams(result, wanted)
        parts = [PartSpec(i, stream=name) for i, name in enumerate(streams)] or [PartSpec(0)]
        reason = None
        if ordered:
            reason = "it is ordered"
        elif len(parts) == 1:
            reason = "its rows fit one part" if wanted == 1 else "BigQuery gave one stream"
        log.info(
            "BigQuery result of %d rows in %d stream(s) (%d requested)",
            rows,
            len(streams),
            wanted,
            extra={"queryUUID": query_uuid, "jobId": job.job_id, "engine": ENGINE},
        )
        return ExportPlan(parts, rows, ENGINE, reason)

    def export(
        self,
        source: str,
        query: Query,
        fmt: str,
        out: Writable,
        *,
        part: PartSpec | None = None,
        header: bool = True,
        on_progress: Callable[[int], None] | None = None,
        clean: frozenset[str] = frozenset(),
    ) -> int:
        """Write the rows of the part's stream as one gzip member to ``out`` (a part without a
        stream: an empty result, no rows); ``header=False`` leaves the CSV header out; return
        the data rows. A BigQuery export is always planned first: ``part`` is required.
        ``clean`` is not used: the Arrow renderer checks every value itself."""
        if part is None:
            raise ValueError("a BigQuery export reads the streams its plan made: give a part")
        encoder = encoder_for(ExportFormat(fmt), query.output_names)
        rows = 0
        last_report = time.monotonic()
        with GzipSink(
            cast(BinaryIO, out), backend=self.gzip_backend, level=self.gzip_level
        ) as sink:
            if header:
                sink.write(encoder.header())
            if part.stream is not None:
                for batch in self._batches(part.stream):
                    if batch.num_rows == 0:
                        continue
                    sink.write(encoder.encode(batch))
                    rows += batch.num_rows
                    now = time.monotonic()
                    if on_progress is not None and now - last_report >= self.progress_interval:
                        last_report = now
                        on_progress(rows)
        return rows

    def header(self, query: Query, fmt: str) -> bytes:
        """The CSV header line as a gzip member of its own (``b""`` for JSONL)."""
        return header_member(
            query.output_names, ExportFormat(fmt), backend=self.gzip_backend, level=self.gzip_level
        )

    def clean_rules(self) -> str:
        """Its renderer uses no clean columns."""
        return "bigquery-none"

    def clean_columns(self, source: str) -> frozenset[str]:
        """None to report: a table has no identity to keep it under (``FixedDataset``), and
        the renderer would not use it."""
        return frozenset()

    def finish(self, query_uuid: str) -> None:
        """Drop the export's result table; nothing to do when it is gone (or never was)."""
        table = self.result_table(query_uuid)
        with self._errors("dropping the result table"):
            self.client.delete_table(str(table), not_found_ok=True)

    # --- names -----------------------------------------------------------------------------

    def result_table(self, query_uuid: str) -> BigQueryTable:
        """The per-export result table: ``<temp dataset>.export_<queryUUID, - as _>``."""
        return self.temp.table(f"export_{_uuid(query_uuid, '_')}")

    @staticmethod
    def job_id(query_uuid: str, attempt: int) -> str:
        """The id of the export's ``attempt``-th query job: ``dwe-export-<queryUUID>-<n>``."""
        return f"dwe-export-{_uuid(query_uuid, '-')}-{attempt}"

    # --- the query job ---------------------------------------------------------------------

    def _run_job(
        self, statement: str, params: list[Any], query_uuid: str, source: BigQueryTable
    ) -> Any:
        """The export's finished query job: the one an earlier delivery started, found by its
        id, or a new one after a dry run (the module docstring)."""
        labels = {
            "dwe-query-uuid": _uuid(query_uuid, "-").lower()[:63],
            "dwe-app": "dataset-export",
        }
        checked = False
        for attempt in range(1, MAX_JOB_ATTEMPTS + 1):
            job_id = self.job_id(query_uuid, attempt)
            job = self._find_job(job_id, source)
            started = job is None
            if job is None:
                if not checked:
                    self._dry_run(statement, params, labels, source)
                    checked = True
                job = self._start_job(job_id, statement, params, labels, source)
            error = self._wait(job, source)
            if error is None:
                log.info(
                    "BigQuery job %s %s",
                    job_id,
                    "ran" if started else "found done",
                    extra={"queryUUID": query_uuid, "jobId": job_id, "engine": ENGINE},
                )
                return job
            if started or not isinstance(error, TransientError):
                raise error  # a new job that failed: the next delivery starts the next id
            # An earlier delivery's job failed in a way a retry may cure: the next id.
        raise TransientError(
            f"the export's BigQuery query failed {MAX_JOB_ATTEMPTS} times in a way a retry "
            "may cure; Pub/Sub's dead-letter policy ends it"
        )

    def _find_job(self, job_id: str, source: BigQueryTable) -> Any:
        """The job with this id, or None when there is none."""
        try:
            with self._errors("reading the query job", source=source, passthrough=_NOT_FOUND):
                return self.client.get_job(job_id, location=self.location)
        except gexc.NotFound:
            return None

    def _start_job(
        self,
        job_id: str,
        statement: str,
        params: list[Any],
        labels: dict[str, str],
        source: BigQueryTable,
    ) -> Any:
        """Insert the job; the job of that id when another delivery inserted it first (409)."""
        config = bigquery.QueryJobConfig(
            query_parameters=params,
            labels=labels,
            maximum_bytes_billed=self.max_bytes_billed,
            use_legacy_sql=False,
        )
        try:
            with self._errors("starting the query job", source=source, passthrough=_CONFLICT):
                return self.client.query(
                    statement,
                    job_config=config,
                    job_id=job_id,
                    location=self.location,
                    job_retry=None,
                )
        except gexc.Conflict:
            with self._errors("reading the query job", source=source):
                return self.client.get_job(job_id, location=self.location)

    def _dry_run(
        self, statement: str, params: list[Any], labels: dict[str, str], source: BigQueryTable
    ) -> None:
        """BigQuery's refusal of the statement, or its estimate above the cap, fails the export
        before anything is billed."""
        config = bigquery.QueryJobConfig(
            dry_run=True, use_query_cache=False, query_parameters=params, labels=labels
        )
        with self._errors("the dry run of the query", source=source):
            dry = self.client.query(
                statement, job_config=config, location=self.location, job_retry=None
            )
        estimate = int(dry.total_bytes_processed or 0)
        if estimate > self.max_bytes_billed:
            raise QueryTooExpensive(
                f"the query would read {estimate:,} bytes, more than the {self.max_bytes_billed:,}"
                " bytes an export may bill; BigQuery bills the columns a query reads whatever "
                "its filters, so select fewer columns (or ask for a higher cap) and submit a new "
                "export"
            )

    def _wait(self, job: Any, source: BigQueryTable) -> ExportError | None:
        """Wait for the job (``jobs.get`` until DONE: ``result()`` would also fetch rows); None
        when it succeeded, else the error it failed with. Still running after ``job_timeout``
        seconds: ``TransientError``, and the next delivery finds it and waits again."""
        deadline = time.monotonic() + self.job_timeout
        pause = 0.1
        while job.state != "DONE":
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"the BigQuery job {job.job_id} still runs after {self.job_timeout:.0f} s; "
                    "the next delivery waits for it again"
                )
            time.sleep(pause)
            pause = min(pause * 2, 2.0)
            with self._errors("reading the query job", source=source):
                job.reload()  # jobs.get in the job's own location
        if job.error_result:
            return classify_job_error(job.error_result, self._context(source))
        return None

    def _result_of(self, job: Any, query_uuid: str, via_destination: bool) -> BigQueryTable:
        if not via_destination:
            return self.result_table(query_uuid)
        destination = job.destination
        if destination is None:
            raise TransientError(f"the BigQuery job {job.job_id} has no destination table yet")
        return BigQueryTable(destination.project, destination.dataset_id, destination.table_id)

    # --- Storage Read ----------------------------------------------------------------------

    def _streams(self, table: BigQueryTable, wanted: int) -> list[str]:
        """The names of a new read session's streams over ``table`` (at most ``wanted``)."""
        options = storage_types.ReadSession.TableReadOptions(
            arrow_serialization_options=storage_types.ArrowSerializationOptions(
                buffer_compression=storage_types.ArrowSerializationOptions.CompressionCodec.LZ4_FRAME
            )
        )
        session = storage_types.ReadSession(
            table=f"projects/{table.project}/datasets/{table.dataset}/tables/{table.table}",
            data_format=storage_types.DataFormat.ARROW,
            read_options=options,
        )
        with self._errors("creating the read session"):
            made = self.read_client.create_read_session(
                parent=f"projects/{self.client.project}",
                read_session=session,
                max_stream_count=wanted,
            )
        return [stream.name for stream in made.streams]

    def _batches(self, stream: str) -> Iterator[pa.RecordBatch]:
        """The stream's record batches, decoded with the schema its first response carries."""
        schema: pa.Schema | None = None
        with self._errors("reading the result's stream", gone=_RESULT_GONE):
            for response in self.read_client.read_rows(stream):
                if response._pb.HasField("arrow_schema"):
                    schema = pa.ipc.read_schema(
                        pa.py_buffer(response.arrow_schema.serialized_schema)
                    )
                data = response.arrow_record_batch.serialized_record_batch
                if not data:
                    continue
                if schema is None:
                    raise TransientError("the read stream sent rows before their schema")
                yield pa.ipc.read_record_batch(pa.py_buffer(data), schema)

    # --- the source table ------------------------------------------------------------------

    def _check_schema(self, table: BigQueryTable, query: Query) -> None:
        """``DatasetMismatch`` unless every column the query reads exists with a fitting type."""
        with self._errors("reading the source table's schema", source=table):
            fields = {f.name: f.field_type for f in self.client.get_table(str(table)).schema}
        problems = []
        for column in columns_read(query):
            found = fields.get(column.name)
            if found is None:
                problems.append(f"column '{column.name}' is missing")
            elif found.upper() not in _ACCEPTED_TYPES[column.type]:
                problems.append(_wrong_type(column, found))
        if problems:
            raise DatasetMismatch("the dataset does not fit the catalog: " + "; ".join(problems))

    # --- errors ----------------------------------------------------------------------------

    def _context(self, source: BigQueryTable | None = None) -> ErrorContext:
        return ErrorContext(self.temp.dataset, self.max_bytes_billed, source)

    @contextmanager
    def _errors(
        self,
        what: str,
        *,
        source: BigQueryTable | None = None,
        passthrough: tuple[type[Exception], ...] = (),
        gone: str | None = None,
    ) -> Iterator[None]:
        """Google's errors in the block as the service's (``classify``), naming ``what``:
        ``passthrough`` ones are the caller's to handle, and with ``gone`` a NotFound is that
        PermanentError (the block reads something the export itself made)."""
        try:
            with google_errors(what):  # timeouts, connection errors, retries given up
                yield
        except passthrough:
            raise
        except gexc.NotFound as exc:
            if gone is not None:
                raise PermanentError(gone) from exc
            raise classify(exc, self._context(source), what=what) from exc
        except gexc.GoogleAPICallError as exc:
            raise classify(exc, self._context(source), what=what) from exc


_NOT_FOUND: tuple[type[Exception], ...] = (gexc.NotFound,)
_CONFLICT: tuple[type[Exception], ...] = (gexc.Conflict,)
_RESULT_GONE = (
    "the export's BigQuery result is gone (its read session expired after 6 hours, or its "
    "table was dropped); submit the export again"
)


def _wrong_type(column: Column, found: str) -> str:
    return f"column '{column.name}' is {found.upper()}, expected {column.type.value}"


@dataclass(frozen=True)
class ErrorContext:
    """What ``classify`` needs to tell whose a missing dataset is and to name the cap."""

    temp_dataset: str
    max_bytes_billed: int
    source: BigQueryTable | None = None


def classify(exc: gexc.GoogleAPICallError, context: ErrorContext, *, what: str) -> ExportError:
    """The service's error for a BigQuery API error: by its reason
    (https://cloud.google.com/bigquery/docs/error-messages), else by its HTTP or gRPC kind."""
    message = str(getattr(exc, "message", "") or exc)
    error = _by_reason(_reason(exc), message, context)
    if error is not None:
        return error
    if isinstance(exc, gexc.NotFound):
        return _not_found(message, context)
    if isinstance(exc, gexc.Forbidden | gexc.Unauthorized | gexc.PermissionDenied):
        return _not_allowed(message)
    if isinstance(exc, gexc.BadRequest | gexc.InvalidArgument):
        return _rejected(message)
    # 5xx, 429, deadline, aborted, unavailable, resource exhausted, unknown: a retry may cure.
    return TransientError(f"{what} failed: {type(exc).__name__}: {public_detail(message)}")


def classify_job_error(error_result: Mapping[str, Any], context: ErrorContext) -> ExportError:
    """The service's error for a finished job's ``error_result`` (``{"reason", "message"}``)."""
    reason = error_result.get("reason")
    message = str(error_result.get("message", ""))
    error = _by_reason(reason if isinstance(reason, str) else None, message, context)
    if error is not None:
        return error
    return TransientError(f"the BigQuery job failed: {reason}: {public_detail(message)}")


def _reason(exc: BaseException) -> str | None:
    errors = getattr(exc, "errors", None) or []
    first = errors[0] if errors else None
    reason = first.get("reason") if isinstance(first, Mapping) else None
    return reason if isinstance(reason, str) else None


def _by_reason(reason: str | None, message: str, context: ErrorContext) -> ExportError | None:
    if reason is None:
        return None
    if reason == "bytesBilledLimitExceeded":
        return QueryTooExpensive(
            f"BigQuery refused the query: it would bill more than the "
            f"{context.max_bytes_billed:,} bytes an export may ({public_detail(message)}); "
            "select fewer columns (or ask for a higher cap) and submit a new export"
        )
    if reason == "resourcesExceeded":
        return QueryTooLarge(
            "the query needs more resources than BigQuery gives one query "
            f"({public_detail(message)}); reduce the number of groups (fewer group-by columns, "
            "or a filter) or drop Median, and submit a new export"
        )
    if reason in _REJECTED_REASONS:
        return _rejected(message)
    if reason == "notFound":
        return _not_found(message, context)
    if reason in _CONFIG_REASONS:
        return _not_allowed(message)
    if reason in _TRANSIENT_REASONS:
        return TransientError(f"BigQuery: {reason}: {public_detail(message)}")
    return None


def _rejected(message: str) -> QueryRejected:
    return QueryRejected(
        f"BigQuery refused the query ({public_detail(message)}); change the query and submit a "
        "new export"
    )


def _mentions(message: str, name: str) -> bool:
    """Whether ``message`` names ``name`` as a whole dataset or table name."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message) is not None


def _not_found(message: str, context: ErrorContext) -> PermanentError:
    """Missing temporary dataset: the deployment's fault (``ConfigError``); anything else the
    query reads: the source's (``DatasetMismatch``). BigQuery names what it did not find
    (``Not found: Dataset my-project:export_tmp was not found in location US``)."""
    source = context.source
    names_source = source is not None and _mentions(message, f"{source.dataset}.{source.table}")
    if _mentions(message, context.temp_dataset) and not names_source:
        return ConfigError(
            "the temporary BigQuery dataset for export results is not there "
            "(EXPORT_BIGQUERY_TEMP_DATASET)"
        )
    return DatasetMismatch(
        "the dataset's BigQuery table is not there (or its dataset is not); the dataset "
        "cannot be exported until it is back"
    )


def _not_allowed(message: str) -> ConfigError:
    return ConfigError(
        f"the export may not use BigQuery here ({public_detail(message)}): check the "
        "function's roles (jobUser, dataViewer on the source, dataEditor on the temporary "
        "dataset, readSessionUser) and billing"
    )


def _parameter(p: object) -> Any:
    """The client's query parameter for a dialect's description (``QueryParameter``)."""
    if isinstance(p, ArrayParameter):
        return bigquery.ArrayQueryParameter(p.name, p.type, list(p.values))
    if isinstance(p, ScalarParameter):
        return bigquery.ScalarQueryParameter(p.name, p.type, p.value)
    raise TypeError(f"not a query parameter: {p!r}")


def _uuid(query_uuid: str, dash: str) -> str:
    """The queryUUID checked (letters, digits, dashes) with its dashes as ``dash``: it is part
    of a table name in the statement's text."""
    if not _QUERY_UUID.fullmatch(query_uuid):
        raise ValueError(f"not a queryUUID: {query_uuid!r}")
    return query_uuid.replace("-", dash)
