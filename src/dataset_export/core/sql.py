"""Compile a validated ``Query`` to DuckDB SQL text plus bound parameters.

Safety: the only words a customer can influence in the SQL text are catalog column names and
validated output names (``[A-Za-z_][A-Za-z0-9_]*``, always double-quoted and re-checked here),
the choice of operator or aggregate, and the number of ``?`` placeholders. Every value is a
positional parameter (dates as ``datetime.date``), so no string a customer sends ever appears in
the text. Columns are qualified with the source (``"dataset"."bed"``) so an alias that happens to
equal a column name can never change what WHERE, GROUP BY or ORDER BY refer to.

Semantics:

- Scopes are selected in order under their output names. When any scope aggregates, the plain
  scopes are the GROUP BY keys (a null key is a group of its own, as in SQL).
- Aggregates: Avg ``avg``, Sum ``sum`` (integer sums are BIGINT, not DuckDB's HUGEINT), Min,
  Max, Count ``count(col)`` (non-null values), CountDistinct ``count(DISTINCT col)`` (non-null
  distinct values), Median ``median`` (a DOUBLE, the mean of the two middle values for an even
  count, also for integer columns). Over no rows, Count is 0 and the others are null.
- Null semantics are SQL's three-valued logic, which a customer reads as "a condition on a
  missing value is not met": ``equals``, ``notEquals``, ``in``, ``notIn``, comparisons,
  ``between``, ``contains`` and ``startsWith`` never match a null value (so ``notEquals`` and
  ``notIn`` exclude rows where the column is null); ``not`` of a subtree is SQL ``NOT``, so
  ``not`` of a condition that is unknown for a row (null column) also excludes that row. Use
  ``isNull`` to ask for missing values explicitly.
- ``contains`` and ``startsWith`` are literal and case-sensitive (``%`` and ``_`` match only
  themselves); strings compare and sort by their UTF-8 bytes.
- ``orderBy`` sorts with ``NULLS LAST`` in both directions; an output name wins over a catalog
  column of the same name, as the query model decides. ``limit`` is ``LIMIT ?``; without
  ``orderBy`` which rows a limit keeps is unspecified.

``compile_query`` gives the result as columns (for Arrow encoders and tests).
``compile_export`` gives the same rows already rendered by the engine as CSV or JSONL lines, one
VARCHAR column ``line`` per row, each ending in ``\\n``: DuckDB formats in its own worker threads,
faster than formatting Arrow batches with pyarrow (at 2M rows about 1.5x for CSV, 2.5x for
JSONL; see bench/engine_bench.py). Its CSV quotes a field only where needed (``,`` ``"`` CR LF)
and prints doubles as DuckDB does (``784.0``, ``2150.5``, ``1e+20``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .catalog import Aggregate, Column, ColumnType, FilterOp
from .formats import ExportFormat
from .query import AllOf, AnyOf, Condition, FilterNode, Negation, Query, Scope

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_COMPARISONS = {
    FilterOp.EQUALS: "=",
    FilterOp.NOT_EQUALS: "<>",
    FilterOp.GT: ">",
    FilterOp.GTE: ">=",
    FilterOp.LT: "<",
    FilterOp.LTE: "<=",
}

_AGGREGATE_FUNCTIONS = {
    Aggregate.AVG: "avg({})",
    Aggregate.SUM: "sum({})",
    Aggregate.MIN: "min({})",
    Aggregate.MAX: "max({})",
    Aggregate.COUNT: "count({})",
    Aggregate.COUNT_DISTINCT: "count(DISTINCT {})",
    Aggregate.MEDIAN: "median({})",
}


@dataclass(frozen=True)
class CompiledQuery:
    """SQL text with ``?`` placeholders and the values to bind to them, in order."""

    sql: str
    params: list[object]


def quote_identifier(name: str) -> str:
    """``name`` double-quoted; ValueError unless it is a plain identifier (defence in depth)."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return f'"{name}"'


def output_type(scope: Scope) -> ColumnType:
    """The logical type of a scope's output column."""
    aggregate = scope.aggregate
    if aggregate is None or aggregate in (Aggregate.MIN, Aggregate.MAX):
        return scope.column.type
    if aggregate in (Aggregate.COUNT, Aggregate.COUNT_DISTINCT):
        return ColumnType.INTEGER
    if aggregate is Aggregate.SUM and scope.column.type is ColumnType.INTEGER:
        return ColumnType.INTEGER
    return ColumnType.NUMBER


class _Compiler:
    def __init__(self, source: str) -> None:
        self.source = quote_identifier(source)
        self.params: list[object] = []

    def column(self, column: Column) -> str:
        return f"{self.source}.{quote_identifier(column.name)}"

    def scope(self, scope: Scope) -> str:
        ref = self.column(scope.column)
        if scope.aggregate is None:
            return ref
        expr = _AGGREGATE_FUNCTIONS[scope.aggregate].format(ref)
        if scope.aggregate is Aggregate.SUM and scope.column.type is ColumnType.INTEGER:
            # DuckDB sums integers as HUGEINT; BIGINT is what Arrow, CSV and JSON readers expect.
            expr = f"CAST({expr} AS BIGINT)"
        return expr

    def bind(self, value: object) -> str:
        if isinstance(value, dt.datetime):  # a datetime is a date subclass: never bind one
            raise TypeError("filter values must be dates, not datetimes")
        if not isinstance(value, str | bool | int | float | dt.date):
            raise TypeError(f"unsupported filter value type {type(value).__name__}")
        self.params.append(value)
        return "?"

    def values(self, value: object) -> Sequence[object]:
        if not isinstance(value, tuple) or not value:
            raise TypeError("expected a non-empty tuple of values")
        return value

    def condition(self, node: Condition) -> str:
        col = self.column(node.column)
        op = node.op
        if op in _COMPARISONS:
            return f"{col} {_COMPARISONS[op]} {self.bind(node.value)}"
        if op in (FilterOp.IN, FilterOp.NOT_IN):
            marks = ", ".join(self.bind(v) for v in self.values(node.value))
            return f"{col} {'IN' if op is FilterOp.IN else 'NOT IN'} ({marks})"
        if op is FilterOp.BETWEEN:
            low, high = self.values(node.value)
            return f"{col} BETWEEN {self.bind(low)} AND {self.bind(high)}"
        if op is FilterOp.CONTAINS:
            return f"contains({col}, {self.bind(node.value)})"
        if op is FilterOp.STARTS_WITH:
            return f"starts_with({col}, {self.bind(node.value)})"
        if op is FilterOp.IS_NULL:
            if not isinstance(node.value, bool):
                raise TypeError("isNull takes true or false")
            return f"{col} IS NULL" if node.value else f"{col} IS NOT NULL"
        raise ValueError(f"unknown operator {op!r}")

    def filter(self, node: FilterNode) -> str:
        if isinstance(node, Condition):
            return self.condition(node)
        if isinstance(node, Negation):
            inner = self.filter(node.child)
            return f"(NOT ({inner}))" if isinstance(node.child, Condition) else f"(NOT {inner})"
        joiner = " AND " if isinstance(node, AllOf) else " OR "
        if not isinstance(node, AllOf | AnyOf) or not node.children:
            raise ValueError("a filter group needs children")
        return "(" + joiner.join(self.filter(child) for child in node.children) + ")"

    def tail(self, query: Query, *, where: str | None) -> str:
        """FROM, WHERE, GROUP BY, ORDER BY and LIMIT; binds parameters in text order."""
        parts = [f"FROM {self.source}"]
        if where is not None:
            parts.append(f"WHERE {where}")
        keys = list(dict.fromkeys(self.column(s.column) for s in query.group_by))
        if keys:
            parts.append("GROUP BY " + ", ".join(keys))
        if query.order_by:
            outputs = {s.output_name: s for s in query.scopes}
            terms = []
            for key in query.order_by:
                if key.name in outputs:
                    expr = self.scope(outputs[key.name])
                elif key.column is not None:
                    expr = self.column(key.column)
                else:
                    raise ValueError(f"order key {key.name!r} is neither an output nor a column")
                terms.append(f"{expr} {key.direction.value.upper()} NULLS LAST")
            parts.append("ORDER BY " + ", ".join(terms))
        if query.limit is not None:
            if isinstance(query.limit, bool) or query.limit < 1:
                raise ValueError("limit must be a positive integer")
            parts.append(f"LIMIT {self.bind(int(query.limit))}")
        return " ".join(parts)

    def compile(self, query: Query, select: Sequence[str]) -> CompiledQuery:
        if not query.scopes:
            raise ValueError("a query needs at least one scope")
        # Parameters bind in text order: WHERE's come before LIMIT's.
        where = None if query.filter is None else self.filter(query.filter)
        sql = "SELECT " + ", ".join(select) + " " + self.tail(query, where=where)
        return CompiledQuery(sql=sql, params=self.params)


def compile_query(query: Query, source: str = "dataset") -> CompiledQuery:
    """The query as SQL over the table or view ``source``, one column per scope, in order."""
    compiler = _Compiler(source)
    select = [f"{compiler.scope(s)} AS {quote_identifier(s.output_name)}" for s in query.scopes]
    return compiler.compile(query, select)


def _csv_field(expr: str, kind: ColumnType) -> str:
    """SQL rendering one value as an RFC 4180 field; NULL (empty under ``concat``) for null."""
    if kind is ColumnType.STRING:
        # Quote only where needed, like DuckDB's and Polars' writers; "" keeps '' apart from null.
        special = " OR ".join(
            f"contains({expr}, {c})" for c in ("','", "'\"'", "chr(10)", "chr(13)")
        )
        return (
            f"CASE WHEN {special} THEN '\"' || replace({expr}, '\"', '\"\"') || '\"' "
            f"WHEN {expr} = '' THEN '\"\"' ELSE {expr} END"
        )
    if kind is ColumnType.NUMBER:
        # DuckDB prints the shortest text that reads back as the same double (2150.5, 784.0).
        return f"CASE WHEN isfinite({expr}) THEN CAST({expr} AS VARCHAR) END"
    # Integers as digits, dates as ISO-8601 (2025-01-31), booleans as true/false.
    return f"CAST({expr} AS VARCHAR)"


def _json_value(expr: str, kind: ColumnType) -> str:
    if kind is ColumnType.NUMBER:
        return f"CASE WHEN isfinite({expr}) THEN {expr} END"  # NaN and infinities become null
    return expr


def compile_export(query: Query, fmt: ExportFormat, source: str = "dataset") -> CompiledQuery:
    """The query with each row rendered as one CSV or JSONL line (column ``line``, ends in LF).

    CSV: fields as ``_csv_field`` renders them, no header (the writer adds it); in a one-column
    export a null is ``""`` so that its row is not a blank line. JSONL: one object
    per row, keys in scope order, numbers as numbers, non-finite numbers and nulls as ``null``,
    dates as ISO-8601 strings, text escaped by DuckDB's ``to_json`` (non-ASCII kept as UTF-8).
    """
    compiler = _Compiler(source)
    scopes = [
        (compiler.scope(s), output_type(s), quote_identifier(s.output_name)) for s in query.scopes
    ]
    if fmt == ExportFormat.CSV:
        fields = [_csv_field(expr, kind) for expr, kind, _ in scopes]
        if len(fields) == 1:
            # A lone null field would be a blank line, which many readers skip: write "".
            fields = [f"coalesce({fields[0]}, '\"\"')"]
        line = "concat(" + ", ',', ".join(fields) + ", chr(10))"
    elif fmt == ExportFormat.JSONL:
        members = ", ".join(f"{name} := {_json_value(expr, kind)}" for expr, kind, name in scopes)
        line = f"concat(to_json(struct_pack({members})), chr(10))"
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    return compiler.compile(query, [f'{line} AS "line"'])
