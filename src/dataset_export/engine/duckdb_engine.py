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

Parts (``core.parts``): ``rows=(start, stop)`` exports only the file rows ``[start, stop)``, by
``read_parquet(..., file_row_number=true)`` and a filter on that column, which DuckDB pushes
into the scan: only the row groups in the range are read ("Row Groups Scanned: 1 / 8" on the
1M-row file). The range is applied to the dataset's view, below the compiled query, so the
output columns are the same, and its bounds are integers we checked, passed as values (DuckDB
expression constants), never SQL text. ``header=False`` leaves the CSV header out, and
``DuckDbEngine.header`` is that header as a gzip member of its own (``render.header_member``):
the header's member followed by the members of the parts of a plan, in order, decompress to the
bytes of the single export (up to the order of rows, which without ``orderBy`` is not defined
either way).

``row_groups`` gives the planner the file's row groups and, for each, the rows the query's
filter keeps there. The boundaries come from the file's footer; without a filter that is all
(no row is read). With one, a single statement counts the kept rows by row group: a row numbered
r falls in bucket ``r // w``, where w is the smallest row group but the last, so a bucket holds
at most one group boundary. When the groups are equal but the last (as the generator, pyarrow
and DuckDB write them), bucket b is group b. Otherwise an equality join on the bucket number
with a small table (bound as lists: each bucket's group and that group's end) names the group;
row groups smaller than 1/65,536 of the file (empty ones among them) are counted together with
the ones after them, which bounds that table for any file.

Measured with ``bench/row_groups_bench.py`` on this machine kind (2 cores, shared: load average
2.5-2.7), the generator's files (131,072-row groups), the median of 7 runs in milliseconds, the
range over three runs of the bench:

==========================  =========  ==========
``row_groups``, filter      1M rows    10M rows
==========================  =========  ==========
none (footer only)          4-5        13-20
msa = 'Seattle, WA' (1.8%)  9-13       24-41
bed in (1, 2, 3) (82%)      23-26      226-230
==========================  =========  ==========

At 10M rows and 82%, the counting statement alone takes 205-213 ms for equal groups (bucket b
is group b, no join), 307-412 ms with the join that uneven groups need, and a plain ``count(*)``
with the same filter 53-102 ms. Tried and dropped (10M, 82%, load average 1.5-1.8): an ASOF join
against the boundaries 1,000 ms and a range join 1,850 ms (both sort or compare every row), a
CASE tree over the boundaries 210 ms at 77 groups but 2,900 at 8,000 (its text grows with the
groups). The footer's row counts come from pyarrow (3 ms at 10M rows; DuckDB's
``parquet_metadata()`` 35 ms). Against exporting the same 8.2M rows (about 6 s on 2 cores) the
count is about 4%; it runs once per export, before the parts start.

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
import functools
import hashlib
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, cast

import duckdb
import pyarrow.parquet as pq

from dataset_export.core.catalog import ColumnType
from dataset_export.core.errors import (
    DatasetMismatch,
    PermanentError,
    QueryRejected,
    QueryTooLarge,
    public_detail,
)
from dataset_export.core.formats import ExportFormat
from dataset_export.core.parts import (
    ExportPlan,
    PartSpec,
    RowGroupCount,
    plan_parts,
    single_part_reason,
)
from dataset_export.core.query import Query
from dataset_export.service.ports import Writable

from .gzip_sink import GzipBackend, GzipSink
from .render import Encoder, LinesEncoder, csv_header, encoder_for, header_member
from .sql.compiler import CompiledQuery, columns_read, is_identifier
from .sql.duckdb_dialect import (
    ROW_NUMBER,
    clean_rules_text,
    compile_clean_columns,
    compile_export,
    compile_query,
    compile_row_group_counts,
)

SOURCE = "dataset"
# Row groups below 1/MAX_BUCKETS of the file are counted with the next (see the docstring).
MAX_BUCKETS = 65_536
Render = Literal["duckdb", "arrow"]

_INTEGER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}
    | {"UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
)
# The largest file ``clean_columns`` reads: ~45 s on two cores, a small share of a function's
# 540 s after the export that ran first (or beside a plan that only hands out parts).
CLEAN_SCAN_MAX_ROWS = 200_000_000
# The file's column types whose values the CSV checks one by one (the dialect's
# CHECKED_KINDS), as the catalog's kind.
_CHECKED_TYPES = {
    "VARCHAR": ColumnType.STRING,
    "DOUBLE": ColumnType.NUMBER,
    "FLOAT": ColumnType.NUMBER,
}
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
    rows: tuple[int, int] | None = None,
    header: bool = True,
    batch_rows: int = 32768,
    on_progress: Callable[[int], None] | None = None,
    progress_interval: float = 5.0,
    settings: EngineSettings | None = None,
    render: Render = "duckdb",
    clean: frozenset[str] = frozenset(),
) -> ExportStats:
    """Run ``query`` over the Parquet file and write the gzip-compressed export to ``out``.

    ``rows=(start, stop)`` exports only the file rows ``[start, stop)`` (a part of a plan);
    ``header=False`` leaves the CSV header out (``render.header_member`` writes it once for all
    parts). ``clean`` names columns ``clean_columns`` found clean in this file: DuckDB
    writes them unchecked (the same bytes; the Arrow renderer checks every value anyway).
    ``on_progress(rows_so_far)`` is called at most once per ``progress_interval``
    seconds while rows stream (not per row, and not at the end: the result carries the final
    count). On an exception the gzip stream is left unfinished (no trailer), so partial output
    never reads as a complete file. ``out`` is not closed.
    """
    if fmt not in tuple(ExportFormat):
        raise ValueError(f"unknown export format {fmt!r}")
    if render not in ("duckdb", "arrow"):
        raise ValueError(f"unknown render {render!r}")
    if batch_rows < 1:
        raise ValueError("batch_rows must be positive")
    _check_rows(rows)
    settings = settings or EngineSettings()
    con = _cursor(settings, ordered=bool(query.order_by))
    try:
        con.register(SOURCE, _dataset(con, parquet_path, rows))
        return _export(
            con, query, fmt, out, header, batch_rows, on_progress, progress_interval, settings,
            render, clean,
        )  # fmt: skip
    finally:
        con.close()


def row_groups(
    parquet_path: str, query: Query, *, settings: EngineSettings | None = None
) -> list[RowGroupCount]:
    """The file's row groups in file order, each with the rows the query's filter keeps there.

    Row groups of fewer than 1/65,536 of the file's rows (empty ones among them) come counted
    together with the ones after them: every entry is a range of whole row groups. Without a
    filter no row is read. A dataset that does not fit the query raises ``DatasetMismatch``, a
    filter the engine refuses ``QueryRejected``, as the export would.
    """
    settings = settings or EngineSettings()
    con = _cursor(settings, ordered=False)
    try:
        return _row_groups(con, parquet_path, query)
    finally:
        con.close()


@functools.cache
def clean_rules() -> str:
    """A digest of the rules a clean-columns answer is found and used under: the checks' SQL
    (``clean_rules_text``) and DuckDB's version, whose printing of doubles the checks know
    (``MISPRINTED_POWERS``). An answer kept under other rules (before an upgrade, or by an
    older instance during a deploy) is not used: it may miss a value the rules now check."""
    types = ", ".join(f"{t}={k.value}" for t, k in sorted(_CHECKED_TYPES.items()))
    text = f"{clean_rules_text()}\n{types}\nduckdb {duckdb.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def clean_columns(parquet_path: str, *, settings: EngineSettings | None = None) -> frozenset[str]:
    """The file's text and floating-point columns whose every value CSV writes as its plain
    text (no comma, quote, CR or LF in text, no empty text, no NaN, infinity or misprinted
    double): what ``run_export(..., clean=...)`` may write unchecked for this file, under
    ``clean_rules()``. Columns whose names are not plain identifiers are left out (no query
    can name them).

    One read of those columns (3.4-4.5 CPU-s at 10M rows of the generated dataset, ~4.4M rows
    a second on two cores), worth it only where the answer is kept for the file's later
    exports (``service.process``). A file of more than ``CLEAN_SCAN_MAX_ROWS`` rows is not read:
    none of its columns is reported clean, so its exports check every value, as without.
    """
    if pq.read_metadata(parquet_path).num_rows > CLEAN_SCAN_MAX_ROWS:
        return frozenset()
    settings = settings or EngineSettings()
    con = _cursor(settings, ordered=False)
    try:
        con.register(SOURCE, _dataset(con, parquet_path, None))
        relation = con.table(SOURCE)
        checked = [
            (name, _CHECKED_TYPES[str(kind)])
            for name, kind in zip(relation.columns, relation.types, strict=True)
            if str(kind) in _CHECKED_TYPES and is_identifier(name)
        ]
        if not checked:
            return frozenset()
        compiled = compile_clean_columns(checked, SOURCE)
        with _engine_errors():
            found = con.execute(compiled.sql, compiled.params).fetchone()
        return frozenset(name for (name, _), clean in zip(checked, found, strict=True) if clean)
    finally:
        con.close()


class DuckDbEngine:
    """The export engine over DuckDB and a local Parquet file (``service.ports.ExportEngine``)."""

    name = "duckdb"

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()

    def plan(
        self, source: str, query: Query, *, query_uuid: str, target_rows: int, max_parts: int
    ) -> ExportPlan:
        """Parts of whole row groups with about ``target_rows`` matching rows each
        (``core.parts.plan_parts`` over ``row_groups``); one part, the whole file, when the
        query cannot be split or its rows fit one part. Nothing is started: planning again
        plans the same."""
        reason = single_part_reason(query)
        if reason is not None or max_parts < 2:
            return ExportPlan([PartSpec(0)], None, self.name, reason or "one part at most")
        parts = plan_parts(
            self.row_groups(source, query), target_rows=target_rows, max_parts=max_parts
        )
        rows = sum(p.expected_rows or 0 for p in parts)
        if len(parts) == 1:
            return ExportPlan([PartSpec(0)], rows, self.name, "its rows fit one part")
        return ExportPlan(parts, rows, self.name)

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
        """Write the export (with a ``part``, only its file rows ``[start, stop)``) as one gzip
        member to ``out``; ``header=False`` leaves the CSV header out; ``clean``: columns
        ``clean_columns`` found clean in ``source``; return the data rows."""
        rows = None
        if part is not None and (part.start, part.stop) != (0, None):
            rows = (part.start, part.stop if part.stop is not None else 2**63 - 1)
        stats = run_export(
            source, query, ExportFormat(fmt), cast(BinaryIO, out), rows=rows,
            header=header, on_progress=on_progress, settings=self.settings, clean=clean,
        )  # fmt: skip
        return stats.rows

    def clean_rules(self) -> str:
        """The rules its clean-columns answers are found and used under (``clean_rules``)."""
        return clean_rules()

    def clean_columns(self, source: str) -> frozenset[str]:
        """The columns of ``source`` whose every value is written as is (``clean_columns``)."""
        return clean_columns(source, settings=self.settings)

    def row_groups(self, dataset_path: str, query: Query) -> list[RowGroupCount]:
        """The dataset's row groups in file order, each with the rows the query's filter keeps."""
        return row_groups(dataset_path, query, settings=self.settings)

    def header(self, query: Query, fmt: str) -> bytes:
        """The CSV header line as a gzip member of its own (``b""`` for JSONL)."""
        return header_member(
            query.output_names,
            ExportFormat(fmt),
            backend=self.settings.gzip_backend,
            level=self.settings.gzip_level,
        )

    def finish(self, query_uuid: str) -> None:
        """Nothing to drop: a plan over a file starts nothing."""


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


def _check_rows(rows: tuple[int, int] | None) -> None:
    """ValueError unless ``rows`` is None or integers ``(start, stop)``, 0 <= start <= stop."""
    if rows is None:
        return
    if not isinstance(rows, tuple) or len(rows) != 2:
        raise ValueError(f"rows must be a (start, stop) pair, got {rows!r}")
    start, stop = rows
    for bound in rows:
        if isinstance(bound, bool) or not isinstance(bound, int):
            raise ValueError(f"rows must be integers, got {rows!r}")
    if not 0 <= start <= stop:
        raise ValueError(f"rows must satisfy 0 <= start <= stop, got {rows!r}")


def _dataset(con: Any, parquet_path: str, rows: tuple[int, int] | None) -> Any:
    """The relation the query reads: the file, or only its rows ``[start, stop)``.

    The relation API takes the path as a value: it is never spliced into SQL text by us, and the
    range's bounds are expression constants (values). The range keeps the file's columns: the
    row number it filters on is dropped again.
    """
    if rows is None:
        return con.read_parquet(parquet_path)
    start, stop = rows
    number = duckdb.ColumnExpression(ROW_NUMBER)
    in_range = (number >= duckdb.ConstantExpression(start)) & (
        number < duckdb.ConstantExpression(stop)
    )
    relation = con.read_parquet(parquet_path, file_row_number=True).filter(in_range)
    return relation.select(duckdb.StarExpression(exclude=[ROW_NUMBER]))


def _row_groups(con: Any, parquet_path: str, query: Query) -> list[RowGroupCount]:
    # The footer's row counts, which number the rows as file_row_number does. pyarrow reads
    # them in 3 ms at 10M rows (77 groups); DuckDB's parquet_metadata() took 35 ms.
    metadata = pq.read_metadata(parquet_path)
    units = _units([metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])
    con.register(SOURCE, con.read_parquet(parquet_path, file_row_number=True))
    _check_schema(con, query)
    if query.filter is None or not units:
        return [RowGroupCount(start, stop, stop - start) for start, stop in units]
    width, groups, boundaries = _buckets(units)
    if groups == list(range(len(units))):
        # Bucket b is group b (then every group but the last holds exactly width rows).
        compiled = compile_row_group_counts(query, SOURCE, width=width)
    else:
        compiled = compile_row_group_counts(
            query, SOURCE, width=width, groups=groups, boundaries=boundaries
        )
    with _engine_errors():
        counts = dict(con.sql(compiled.sql, params=compiled.params).fetchall())
    return [
        RowGroupCount(start, stop, int(counts.get(i, 0))) for i, (start, stop) in enumerate(units)
    ]


def _units(sizes: list[int]) -> list[tuple[int, int]]:
    """The row groups as ``(start, stop)``, those below 1/MAX_BUCKETS of the file merged forward.

    Each range but the last holds at least ``ceil(total / MAX_BUCKETS)`` rows (the last is
    merged into the one before when it holds fewer), so at most MAX_BUCKETS ranges come out; for
    the generator's files (131,072-row groups) they are the row groups themselves.
    """
    total = sum(sizes)
    smallest = max(1, -(-total // MAX_BUCKETS))
    units: list[tuple[int, int]] = []
    start = stop = 0
    for size in sizes:
        stop += size
        if stop - start >= smallest:
            units.append((start, stop))
            start = stop
    if stop > start:  # a short tail: part of the range before it, if any
        if units:
            units[-1] = (units[-1][0], stop)
        else:
            units.append((start, stop))
    return units


def _buckets(units: list[tuple[int, int]]) -> tuple[int, list[int], list[int]]:
    """The bucket width, and each bucket's range and that range's end (a row in the bucket at or
    past the end is in the next range): ``compile_row_group_counts``'s arguments.

    The width is the smallest range but the last, so a bucket ``[b * width, (b + 1) * width)``
    holds at most one boundary: the end of the range its first row is in (the range after it is
    at least ``width`` long, or the last one).
    """
    sizes = [stop - start for start, stop in units]
    width = min(sizes[:-1]) if len(sizes) > 1 else max(1, sizes[0])
    groups: list[int] = []
    boundaries: list[int] = []
    index = 0
    for bucket in range(-(-units[-1][1] // width)):
        while units[index][1] <= bucket * width:
            index += 1
        groups.append(index)
        boundaries.append(units[index][1])
    return width, groups, boundaries


def _export(
    con: Any,
    query: Query,
    fmt: ExportFormat,
    out: BinaryIO,
    header: bool,
    batch_rows: int,
    on_progress: Callable[[int], None] | None,
    progress_interval: float,
    settings: EngineSettings,
    render: Render,
    clean: frozenset[str],
) -> ExportStats:
    # The dataset is registered on this cursor (run_export): concurrent exports do not share
    # the name.
    _check_schema(con, query)
    compiled: CompiledQuery
    encoder: Encoder
    if render == "duckdb":
        compiled = compile_export(query, fmt, SOURCE, clean=clean)
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
            if header:
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


def _check_schema(con: Any, query: Query) -> None:
    """Raise DatasetMismatch unless every column the query uses exists with a fitting type."""
    relation = con.table(SOURCE)
    actual = {name: str(kind) for name, kind in zip(relation.columns, relation.types, strict=True)}
    problems = []
    for column in columns_read(query):
        found = actual.get(column.name)
        if found is None:
            problems.append(f"column '{column.name}' is missing")
        elif not _ACCEPTED_TYPES[column.type](found):
            problems.append(f"column '{column.name}' is {found}, expected {column.type.value}")
    if problems:
        raise DatasetMismatch("the dataset does not fit the catalog: " + "; ".join(problems))
