"""The embedded engine: DuckDB over a local Parquet file, streamed into a gzip CSV or JSONL file.

Pipeline: a DuckDB view over ``read_parquet`` of the local path, the compiled query, an Arrow
record-batch stream (``con.sql(sql, params=...).to_arrow_reader(batch_rows)``, which streams;
the DB-API ``con.execute(...)`` path copies the whole result first), an encoder, and a
``GzipSink`` whose worker thread compresses and writes to ``out`` while DuckDB produces the next
batch.

Rendering: by default (``render="duckdb"``) DuckDB renders each row as a finished CSV or JSONL
line (``sql.duckdb_dialect.compile_export``) in its own worker threads, and the Arrow buffer
holding the lines is handed to gzip without a copy. ``render="arrow"`` streams the result columns
and formats them with ``render.CsvEncoder`` / ``JsonlEncoder`` instead (slower; kept as an
engine-independent encoder that the tests cross-check against the DuckDB rendering).

Database: one in-memory DuckDB database per process and settings, each export on a cursor of
its own (with its own view of the dataset): opening a database costs 20-50 ms and a thread pool,
and concurrent exports in one process each started a pool of their own.

Memory: DuckDB runs under ``memory_limit`` and spills to ``temp_directory``;
``preserve_insertion_order`` is off unless the query orders its rows, so large scans and
high-cardinality aggregates need not buffer their results. Peak RSS is bounded by the memory
limit plus a few batches, whatever the number of rows.

Errors: a dataset that lacks a column the query needs, or has it with an incompatible type,
raises ``DatasetMismatch``. An error of the query itself, which the same query meets on every
retry (invalid input such as text that is not valid Unicode, binder, catalog, parser,
conversion and range errors: DuckDB's ``ProgrammingError``, ``DataError``,
``NotSupportedError`` and ``IntegrityError`` families), raises ``QueryRejected`` with a short
reason a customer can read (no SQL text, no paths). DuckDB's ``OutOfMemoryException`` raises
``QueryTooLarge`` (a ``QueryRejected``): holistic aggregates (Median, CountDistinct) hold every
value of a group at once and do not spill, so a query over millions of groups needs more than
``memory_limit`` on every retry (the process function runs one export per instance, so no other
export shares that memory). All three are ``PermanentError``. Other DuckDB errors (I/O,
interrupts, internal errors) propagate unchanged for the caller to retry.
"""

from __future__ import annotations

import atexit
import contextlib
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import duckdb

from dataset_export.core.catalog import Column, ColumnType
from dataset_export.core.errors import (
    DatasetMismatch,
    PermanentError,
    QueryRejected,
    QueryTooLarge,
    public_detail,
)
from dataset_export.core.formats import ExportFormat
from dataset_export.core.query import AllOf, AnyOf, Condition, FilterNode, Negation, Query

from .gzip_sink import GzipBackend, GzipSink
from .render import Encoder, LinesEncoder, csv_header, encoder_for
from .sql.compiler import CompiledQuery
from .sql.duckdb_dialect import compile_export, compile_query

SOURCE = "dataset"
Render = Literal["duckdb", "arrow"]

_INTEGER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}
    | {"UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
)
_ACCEPTED_TYPES: dict[ColumnType, Callable[[str], bool]] = {
    ColumnType.STRING: lambda t: t == "VARCHAR",
    ColumnType.INTEGER: lambda t: t in _INTEGER_TYPES,
    ColumnType.NUMBER: lambda t: (
        t in _INTEGER_TYPES or t in ("FLOAT", "DOUBLE") or t.startswith("DECIMAL")
    ),
    ColumnType.DATE: lambda t: t == "DATE",
    ColumnType.BOOLEAN: lambda t: t == "BOOLEAN",
}


# Errors of the query itself: the same query fails the same way on every retry.
_QUERY_ERRORS = (
    duckdb.ProgrammingError,  # binder, catalog, parser, syntax, invalid input, invalid type
    duckdb.DataError,  # conversion, out of range, type mismatch
    duckdb.NotSupportedError,
    duckdb.IntegrityError,
)
# The same, and running out of memory, by the "<type> Error: " that starts DuckDB's message: an
# error raised while rows stream reaches us through Arrow (as an OSError) with nothing else to
# tell it by.
_PERMANENT_ERROR_TYPES: dict[str, type[Exception]] = {
    "Binder": duckdb.BinderException,
    "Catalog": duckdb.CatalogException,
    "Parser": duckdb.ParserException,
    "Syntax": duckdb.SyntaxException,
    "Invalid Input": duckdb.InvalidInputException,
    "Invalid type": duckdb.InvalidTypeException,
    "Conversion": duckdb.ConversionException,
    "Out of Range": duckdb.OutOfRangeException,
    "Mismatch Type": duckdb.TypeMismatchException,
    "Not implemented": duckdb.NotImplementedException,
    "Constraint": duckdb.ConstraintException,
    "Out of Memory": duckdb.OutOfMemoryException,
}
# "Invalid Input Error: Python Conversion Failure: " and the like say where, not what.
_ENGINE_PREFIX = re.compile(r"^(?:[A-Z][A-Za-z ]*(?:Error|Failure): )+")


def _permanent(exc: Exception) -> PermanentError | None:
    """The customer's error when ``exc`` fails the query on every retry, else None."""
    kind: type[Exception] | None
    if isinstance(exc, (*_QUERY_ERRORS, duckdb.OutOfMemoryException)):
        kind = type(exc)
    else:
        name, sep, _ = str(exc).partition(" Error: ")
        kind = _PERMANENT_ERROR_TYPES.get(name) if sep else None
    if kind is None:
        return None
    if issubclass(kind, duckdb.OutOfMemoryException):
        return _too_large(str(exc))
    return _rejected(kind, str(exc))


def _too_large(text: str) -> QueryTooLarge:
    """The customer's view of DuckDB running out of memory: what to change."""
    detail = _ENGINE_PREFIX.sub("", public_detail(text))
    return QueryTooLarge(
        f"the query needs more memory than an export may use ({detail}); reduce the number of "
        "groups (fewer group-by columns, or a filter) or drop Median and CountDistinct, which "
        "hold every value of a group at once, and submit a new export"
    )


def _rejected(kind: type[Exception], text: str) -> QueryRejected:
    """The customer's view of an engine error caused by the query: what kind, and the detail."""
    if issubclass(kind, duckdb.DataError):
        what = "a value does not fit its type"
    elif issubclass(kind, duckdb.InvalidInputException | duckdb.InvalidTypeException):
        what = "a value in the query is not valid input"
    else:
        what = "the query cannot be compiled"
    detail = _ENGINE_PREFIX.sub("", public_detail(text))
    return QueryRejected(
        f"the query engine refused the query: {what} ({detail}); "
        "change the query and submit a new export"
    )


@contextlib.contextmanager
def _engine_errors() -> Iterator[None]:
    """Raise the errors that fail the query on every retry as their ``PermanentError``."""
    try:
        yield
    except Exception as exc:
        error = _permanent(exc)
        if error is None:
            raise
        raise error from exc


def _batches(reader: Any) -> Iterator[Any]:
    """The reader's record batches; an error of the query while they stream is permanent."""
    batches = iter(reader)
    while True:
        with _engine_errors():
            try:
                batch = next(batches)
            except StopIteration:
                return
        yield batch


@dataclass(frozen=True)
class EngineSettings:
    """Resource settings of one export's DuckDB connection."""

    # DuckDB's own memory; the process holds 160-240 MB beside it (libraries, the Parquet
    # reader, batches), and the process function ~70 MB more (the Google clients). Measured
    # engine alone, 10M / 20M rows: the ~10M-group aggregate peaks at 535 / 546 MB with 384 MB
    # and 421 / 435 MB with 256 MB at the same CPU time; an ORDER BY over the whole 10M-row
    # table at 610 MB with 384 MB and 492 MB with 256 MB (~15% more CPU for the larger spill).
    memory_limit: str = "256MB"
    threads: int | None = None  # None: one per core
    temp_directory: str | None = None  # None: a private directory, removed afterwards
    gzip_backend: GzipBackend | None = None  # None: isal when installed, else zlib
    gzip_level: int | None = None  # None: the backend's default (isal 2, zlib 1)
    gzip_threaded: bool = True


@dataclass(frozen=True)
class ExportStats:
    """What an export wrote: data rows, bytes before and after gzip."""

    rows: int
    uncompressed_bytes: int
    compressed_bytes: int


def run_export(
    parquet_path: str,
    query: Query,
    fmt: ExportFormat,
    out: BinaryIO,
    *,
    batch_rows: int = 32768,
    on_progress: Callable[[int], None] | None = None,
    progress_interval: float = 5.0,
    settings: EngineSettings | None = None,
    render: Render = "duckdb",
) -> ExportStats:
    """Run ``query`` over the Parquet file and write the gzip-compressed export to ``out``.

    ``on_progress(rows_so_far)`` is called at most once per ``progress_interval`` seconds while
    rows stream (not per row, and not at the end: the result carries the final count). On an
    exception the gzip stream is left unfinished (no trailer), so partial output never reads as
    a complete file. ``out`` is not closed.
    """
    if fmt not in tuple(ExportFormat):
        raise ValueError(f"unknown export format {fmt!r}")
    if render not in ("duckdb", "arrow"):
        raise ValueError(f"unknown render {render!r}")
    if batch_rows < 1:
        raise ValueError("batch_rows must be positive")
    settings = settings or EngineSettings()
    con = _cursor(settings, ordered=bool(query.order_by))
    try:
        return _export(
            con, parquet_path, query, fmt, out, batch_rows, on_progress,
            progress_interval, settings, render,
        )  # fmt: skip
    finally:
        con.close()


_DATABASES: dict[tuple[str, int | None, str | None, bool], Any] = {}
_DATABASES_LOCK = threading.Lock()


def _database(settings: EngineSettings, *, ordered: bool) -> Any:
    """The process's database for these settings, opened on first use."""
    key = (settings.memory_limit, settings.threads, settings.temp_directory, ordered)
    with _DATABASES_LOCK:
        database = _DATABASES.get(key)
        if database is None:
            temp_dir = settings.temp_directory
            if temp_dir is None:
                temp_dir = tempfile.mkdtemp(prefix="duckdb-export-")
                atexit.register(shutil.rmtree, temp_dir, ignore_errors=True)
            database = _DATABASES[key] = _connect(settings, temp_dir, ordered=ordered)
    return database


def _cursor(settings: EngineSettings, *, ordered: bool) -> Any:
    """A cursor of its own for one export on the process's database.

    DuckDB draws a progress bar on stdout for queries past 2 s when ``__main__`` has no
    ``__file__`` (python -c, a REPL), and stdout is the log stream, one JSON line per record. A
    cursor does not inherit a ``SET`` from its database's connection (and the connect config
    refuses this option), so each cursor turns it off itself.
    """
    cursor = _database(settings, ordered=ordered).cursor()
    cursor.execute("SET enable_progress_bar = false")
    return cursor


def _connect(settings: EngineSettings, temp_dir: str, *, ordered: bool) -> Any:
    config: dict[str, Any] = {
        "memory_limit": settings.memory_limit,
        "temp_directory": temp_dir,
        # Without ORDER BY any order is correct; not keeping it lets DuckDB stream and spill.
        "preserve_insertion_order": ordered,
        # Never reach for the network to fetch an extension.
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if settings.threads is not None:
        config["threads"] = settings.threads
    con = duckdb.connect(":memory:", config=config)
    con.execute("SET enable_progress_bar = false")  # see _cursor
    return con


def _export(
    con: Any,
    parquet_path: str,
    query: Query,
    fmt: ExportFormat,
    out: BinaryIO,
    batch_rows: int,
    on_progress: Callable[[int], None] | None,
    progress_interval: float,
    settings: EngineSettings,
    render: Render,
) -> ExportStats:
    # The relation API takes the path as a value: it is never spliced into SQL text by us.
    # Registered, the view is this cursor's own: concurrent exports do not share the name.
    con.register(SOURCE, con.read_parquet(parquet_path))
    _check_schema(con, query)
    compiled: CompiledQuery
    encoder: Encoder
    if render == "duckdb":
        compiled = compile_export(query, fmt, SOURCE)
        encoder = LinesEncoder(csv_header(query.output_names) if fmt == ExportFormat.CSV else b"")
    else:
        compiled = compile_query(query, SOURCE)
        encoder = encoder_for(fmt, query.output_names)
    # The columns were checked above: what fails here (or in _batches, while rows stream, such
    # as a conversion) is the query itself, or the memory it needs.
    with _engine_errors():
        reader = con.sql(compiled.sql, params=compiled.params).to_arrow_reader(batch_rows)
    rows = 0
    last_report = time.monotonic()
    try:
        with GzipSink(
            out,
            backend=settings.gzip_backend,
            level=settings.gzip_level,
            threaded=settings.gzip_threaded,
        ) as sink:
            sink.write(encoder.header())
            for batch in _batches(reader):
                if batch.num_rows == 0:
                    continue
                sink.write(encoder.encode(batch))
                rows += batch.num_rows
                if on_progress is not None and time.monotonic() - last_report >= progress_interval:
                    last_report = time.monotonic()
                    on_progress(rows)
    finally:
        reader.close()
    return ExportStats(rows, sink.uncompressed_bytes, sink.compressed_bytes)


def _columns(node: FilterNode | None) -> Iterable[Column]:
    if node is None:
        return
    if isinstance(node, Condition):
        yield node.column
    elif isinstance(node, Negation):
        yield from _columns(node.child)
    elif isinstance(node, AllOf | AnyOf):
        for child in node.children:
            yield from _columns(child)


def _check_schema(con: Any, query: Query) -> None:
    """Raise DatasetMismatch unless every column the query uses exists with a fitting type."""
    relation = con.table(SOURCE)
    actual = {name: str(kind) for name, kind in zip(relation.columns, relation.types, strict=True)}
    needed = [s.column for s in query.scopes]
    needed += list(_columns(query.filter))
    needed += [k.column for k in query.order_by if k.column is not None]
    problems = []
    for column in dict.fromkeys(needed):
        found = actual.get(column.name)
        if found is None:
            problems.append(f"column '{column.name}' is missing")
        elif not _ACCEPTED_TYPES[column.type](found):
            problems.append(f"column '{column.name}' is {found}, expected {column.type.value}")
    if problems:
        raise DatasetMismatch("the dataset does not fit the catalog: " + "; ".join(problems))
