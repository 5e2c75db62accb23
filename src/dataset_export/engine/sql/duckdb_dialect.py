"""The DuckDB dialect: a validated ``Query`` as DuckDB SQL text plus bound parameters.

The walk, the safety rules and the semantics every dialect keeps are in ``compiler.py``; this
module spells them for DuckDB:

- identifiers in double quotes (``"dataset"."bed"``);
- Avg ``avg``, Sum ``sum`` (integer sums cast to BIGINT, not DuckDB's HUGEINT), Min, Max, Count
  ``count(col)``, CountDistinct ``count(DISTINCT col)``, Median ``median`` (a DOUBLE, the mean of
  the two middle values for an even count, also for integer columns);
- ``contains`` as ``contains(col, ?)`` and ``startsWith`` as ``starts_with(col, ?)``, both
  literal and case-sensitive.

``compile_query`` gives the result as columns (for the Arrow renderer and tests).
``compile_row_group_counts`` counts the rows the query's filter keeps in each Parquet row group,
for the parts planner (``duckdb_engine.row_groups`` says how the rows are bucketed).
``compile_export`` gives the same rows already rendered by the engine as CSV or JSONL lines, one
VARCHAR column ``line`` per row, each ending in ``\\n``: DuckDB formats in its own worker threads,
faster than formatting Arrow batches with pyarrow (at 2M rows about 1.5x for CSV, 2.5x for
JSONL; see bench/engine_bench.py). Its CSV quotes a field only where needed (``,`` ``"`` CR LF)
and prints doubles as DuckDB does (``784.0``, ``2150.5``, ``1e+20``), except three that DuckDB
misprints (``MISPRINTED_POWERS``). Those checks are most of the rendering's cost beyond the
cheapest formatting (bench/README.md): ``compile_clean_columns`` finds the text and number
columns of a file that no value of needs them, and ``compile_export(..., clean=...)`` writes
those unchecked.
"""

from __future__ import annotations

from collections.abc import Sequence

from dataset_export.core.catalog import Aggregate, Column, ColumnType
from dataset_export.core.formats import ExportFormat
from dataset_export.core.query import Query

from .compiler import CompiledQuery, SqlCompiler, check_identifier, output_type

_AGGREGATE_FUNCTIONS = {
    Aggregate.AVG: "avg({})",
    Aggregate.SUM: "sum({})",
    Aggregate.MIN: "min({})",
    Aggregate.MAX: "max({})",
    Aggregate.COUNT: "count({})",
    Aggregate.COUNT_DISTINCT: "count(DISTINCT {})",
    Aggregate.MEDIAN: "median({})",
}


def quote_identifier(name: str) -> str:
    """``name`` double-quoted; ValueError unless it is a plain identifier (defence in depth)."""
    return f'"{check_identifier(name)}"'


class DuckDbCompiler(SqlCompiler):
    """``SqlCompiler`` with DuckDB's spellings."""

    def quote_identifier(self, name: str) -> str:
        return quote_identifier(name)

    def aggregate(self, aggregate: Aggregate, column: Column, ref: str) -> str:
        expr = _AGGREGATE_FUNCTIONS[aggregate].format(ref)
        if aggregate is Aggregate.SUM and column.type is ColumnType.INTEGER:
            # DuckDB sums integers as HUGEINT; BIGINT is what Arrow, CSV and JSON readers expect.
            expr = f"CAST({expr} AS BIGINT)"
        return expr

    def contains(self, ref: str, value: str) -> str:
        return f"contains({ref}, {value})"

    def starts_with(self, ref: str, value: str) -> str:
        return f"starts_with({ref}, {value})"


def compile_query(query: Query, source: str = "dataset") -> CompiledQuery:
    """The query as SQL over the table or view ``source``, one column per scope, in order."""
    compiler = DuckDbCompiler(source)
    return compiler.compile(query, compiler.select_columns(query))


ROW_NUMBER = "file_row_number"
"""The column ``read_parquet(..., file_row_number=true)`` adds: a row's 0-based place in the
file."""


def compile_row_group_counts(
    query: Query,
    source: str,
    *,
    width: int,
    groups: Sequence[int] | None = None,
    boundaries: Sequence[int] | None = None,
) -> CompiledQuery:
    """How many rows the query's filter keeps in each row group: rows ``group_index, matching``.

    ``source`` has the ``file_row_number`` column. The row numbered r lies in bucket
    ``b = r // width``. Without ``groups``, bucket b is group b (every group but the last holds
    ``width`` rows). With them, it lies in group ``groups[b]`` when ``r < boundaries[b]``, else
    in the next one (the caller picks ``width`` so that a bucket holds at most one boundary).
    Groups without a kept row are absent. Only the query's filter counts: scopes, order and
    limit do not change which rows a filter keeps.
    """
    lists = [] if groups is None else [list(range(len(groups))), list(groups)]
    if boundaries is not None:
        lists.append(list(boundaries))
    if len(lists) not in (0, 3) or (lists and (not lists[1] or len(lists[1]) != len(lists[2]))):
        raise ValueError("groups and boundaries go together, non-empty and of the same length")
    for value in (width, *(v for values in lists for v in values)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"bucket numbers must be non-negative integers, got {value!r}")
    if width < 1:
        raise ValueError("the bucket width must be positive")
    compiler = DuckDbCompiler(source)
    row = f"{compiler.source}.{quote_identifier(ROW_NUMBER)}"
    # FROM and WHERE only: the rows the filter keeps, whatever the query does with them.
    rows_only = Query(scopes=(), filter=query.filter, limit=None, order_by=())
    kept = f"SELECT {row} AS r {compiler.tail(rows_only, where=compiler.where(query))}"
    # Parameters bind in text order. Only quoted identifiers and placeholders are spliced in
    # (compiler.py's "Safety"), hence the noqa.
    if not lists:
        sql = (
            "SELECT m.r // ? AS group_index, count(*) AS matching "  # noqa: S608
            f"FROM ({kept}) AS m GROUP BY 1"
        )
        return CompiledQuery(sql=sql, params=[width, *compiler.params])
    buckets = (
        "SELECT unnest(?::BIGINT[]) AS bucket, unnest(?::BIGINT[]) AS group_index, "
        "unnest(?::BIGINT[]) AS boundary"
    )
    sql = (
        "SELECT b.group_index + CAST(m.r >= b.boundary AS BIGINT) AS group_index, "  # noqa: S608
        f"count(*) AS matching FROM ({kept}) AS m JOIN ({buckets}) AS b "
        "ON m.r // ? = b.bucket GROUP BY 1"
    )
    return CompiledQuery(sql=sql, params=[*compiler.params, *lists, width])


MISPRINTED_POWERS = {
    81: "2.4178516392292583e+24",
    91: "2.4758800785707605e+27",
    807: "8.535058474086213e+242",
}
"""The doubles DuckDB 2.0's ``CAST(x AS VARCHAR)`` writes wrongly, as powers of two, and their
shortest text: 2**81 comes out as ``4.835703278458517e+24`` (twice the value), 2**807 as
``A.070116948172427e+242``. Found by comparing the cast with Python's ``repr`` on every power of
two (the only doubles whose rounding interval is lopsided) and their neighbours, and on 800k
other values; ``to_json`` writes them right."""


_SPECIAL = ("','", "'\"'", "chr(10)", "chr(13)")
"""The characters that make a CSV field need quotes (RFC 4180): comma, quote, LF, CR."""


def _special(expr: str) -> str:
    """SQL true when the text ``expr`` holds a character of ``_SPECIAL``."""
    return " OR ".join(f"contains({expr}, {c})" for c in _SPECIAL)


def _misprinted(expr: str) -> str:
    """SQL true when the number ``expr`` is a double DuckDB misprints (``MISPRINTED_POWERS``)."""
    powers = ", ".join(f"2.0::DOUBLE ** {p}" for p in MISPRINTED_POWERS)
    return f"abs({expr}) IN ({powers}) AND typeof({expr}) = 'DOUBLE'"


def _not_plain(expr: str, kind: ColumnType) -> str:
    """SQL true when the value ``expr`` is not written as its plain text in CSV: text that
    needs quotes (``_special``, or empty: ``""`` keeps it apart from null), a number that is
    not finite or is misprinted. Every other value, and null, is written as
    ``CAST(expr AS VARCHAR)``, which is what a clean column (``compile_clean_columns``) gets."""
    if kind is ColumnType.STRING:
        return f"{_special(expr)} OR {expr} = ''"
    if kind is ColumnType.NUMBER:
        return f"NOT isfinite({expr}) OR {_misprinted(expr)}"
    raise ValueError(f"{kind.value} values are always written as their plain text")


CHECKED_KINDS = (ColumnType.STRING, ColumnType.NUMBER)
"""The kinds of column whose CSV fields are checked value by value (``_not_plain``)."""


def _csv_field(expr: str, kind: ColumnType, *, clean: bool = False) -> str:
    """SQL rendering one value as an RFC 4180 field; NULL (empty under ``concat``) for null.

    ``clean``: no value of the column is one ``_not_plain`` catches (``compile_clean_columns``
    said so), so each is written as its plain text, unchecked.
    """
    if clean and kind in CHECKED_KINDS:
        return expr if kind is ColumnType.STRING else f"CAST({expr} AS VARCHAR)"
    if kind is ColumnType.STRING:
        # Quote only where needed, like DuckDB's and Polars' writers; "" keeps '' apart from null.
        return (
            f"CASE WHEN {_special(expr)} THEN '\"' || replace({expr}, '\"', '\"\"') || '\"' "
            f"WHEN {expr} = '' THEN '\"\"' ELSE {expr} END"
        )
    if kind is ColumnType.NUMBER:
        # DuckDB prints the shortest text that reads back as the same double (2150.5, 784.0),
        # but for three magnitudes; those are spelled out (a test checks them against repr).
        spelled = " ".join(
            f"WHEN 2.0::DOUBLE ** {p} THEN '{text}'" for p, text in MISPRINTED_POWERS.items()
        )
        return (
            f"CASE WHEN NOT isfinite({expr}) THEN NULL "
            f"WHEN {_misprinted(expr)} THEN "
            f"(CASE WHEN {expr} < 0 THEN '-' ELSE '' END) || CASE abs({expr}) {spelled} END "
            f"ELSE CAST({expr} AS VARCHAR) END"
        )
    # Integers as digits, dates as ISO-8601 (2025-01-31), booleans as true/false.
    return f"CAST({expr} AS VARCHAR)"


def _json_value(expr: str, kind: ColumnType) -> str:
    if kind is ColumnType.NUMBER:
        return f"CASE WHEN isfinite({expr}) THEN {expr} END"  # NaN and infinities become null
    return expr


def compile_clean_columns(
    columns: Sequence[tuple[str, ColumnType]], source: str = "dataset"
) -> CompiledQuery:
    """One row, a BOOLEAN per column (name, kind: text or number) in order: true when no value
    of it in ``source`` is one ``_not_plain`` catches (text that needs quotes or is empty, a
    number not finite or misprinted; nulls are clean), so that ``compile_export(...,
    clean=...)`` may write every value as its plain text. ``_not_plain`` is built from the
    pieces ``_csv_field``'s branches test (``_special``, ``_misprinted``); ``clean_rules``
    names both, so an answer found under other rules is never used."""
    if not columns:
        raise ValueError("no columns to check")
    ref = DuckDbCompiler(source).source
    checks = ", ".join(
        f"NOT coalesce(bool_or({_not_plain(f'{ref}.{quote_identifier(name)}', kind)}), false)"
        for name, kind in columns
    )
    return CompiledQuery(sql=f"SELECT {checks} FROM {ref}", params=[])  # noqa: S608 - quoted


def clean_rules_text() -> str:
    """The SQL a clean-columns answer depends on: the scan, and the checked and the unchecked
    rendering of each checked kind (``duckdb_engine.clean_rules`` adds the file types it scans
    and DuckDB's version, and hashes it)."""
    kinds = list(CHECKED_KINDS)
    scan = compile_clean_columns([("x", k) for k in kinds]).sql
    fields = [_csv_field("x", k, clean=c) for k in kinds for c in (False, True)]
    return "\n".join([scan, *fields])


def compile_export(
    query: Query,
    fmt: ExportFormat,
    source: str = "dataset",
    *,
    clean: frozenset[str] = frozenset(),
) -> CompiledQuery:
    """The query with each row rendered as one CSV or JSONL line (column ``line``, ends in LF).

    CSV: fields as ``_csv_field`` renders them, no header (the writer adds it); in a one-column
    export a null is ``""`` so that its row is not a blank line. A column named in ``clean``
    holds no value that needs more than its plain text (``compile_clean_columns`` said so of
    this very ``source``): a scope that is that column (not an aggregate of it) is written
    unchecked, the same bytes for less work. JSONL: one object
    per row, keys in scope order, numbers as numbers, non-finite numbers and nulls as ``null``,
    dates as ISO-8601 strings, text escaped by DuckDB's ``to_json`` (non-ASCII kept as UTF-8).
    """
    compiler = DuckDbCompiler(source)
    scopes = [
        (
            compiler.scope(s),
            output_type(s),
            quote_identifier(s.output_name),
            s.column.name in clean and s.aggregate is None,
        )
        for s in query.scopes
    ]
    if fmt == ExportFormat.CSV:
        fields = [_csv_field(e, kind, clean=unchecked) for e, kind, _, unchecked in scopes]
        if len(fields) == 1:
            # A lone null field would be a blank line, which many readers skip: write "".
            fields = [f"coalesce({fields[0]}, '\"\"')"]
        line = "concat(" + ", ',', ".join(fields) + ", chr(10))"
    elif fmt == ExportFormat.JSONL:
        members = ", ".join(
            f"{name} := {_json_value(expr, kind)}" for expr, kind, name, _ in scopes
        )
        line = f"concat(to_json(struct_pack({members})), chr(10))"
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    return compiler.compile(query, [f'{line} AS "line"'])
