"""What every SQL dialect shares: the walk from a validated ``Query`` to SQL text and parameters.

A dialect (``duckdb_dialect.py``, ``bigquery_dialect.py``) subclasses ``SqlCompiler`` and spells
identifiers, aggregates, the two text functions, its placeholders (``placeholder``, ``in_list``)
and its FROM item (``from_where``) its way; the structure of the statement, the order in which
parameters bind and the checks on every value are decided here once.

Safety: the only words a customer can influence in the SQL text are catalog column names and
validated output names (``[A-Za-z_][A-Za-z0-9_]*``, always quoted and re-checked by
``check_identifier``), the choice of operator or aggregate, and the number of placeholders.
Every value is a parameter (dates as ``datetime.date``), checked by ``check_value``, so no string
a customer sends ever appears in the text. Columns are qualified with the source
(``"dataset"."bed"``) so an alias that happens to equal a column name can never change what
WHERE, GROUP BY or ORDER BY refer to.

Semantics (the contract every dialect keeps):

- Scopes are selected in order under their output names. When any scope aggregates, the plain
  scopes are the GROUP BY keys (a null key is a group of its own, as in SQL).
- Aggregates: Avg, Sum (integer sums are 64-bit integers), Min, Max, Count (non-null values),
  CountDistinct (non-null distinct values), Median (a double, the mean of the two middle values
  for an even count, also for integer columns). Over no rows, Count is 0 and the others are
  null. ``output_type`` is the logical type of each output column.
- Null semantics are SQL's three-valued logic, which a customer reads as "a condition on a
  missing value is not met": ``equals``, ``notEquals``, ``in``, ``notIn``, comparisons,
  ``between``, ``contains`` and ``startsWith`` never match a null value (so ``notEquals`` and
  ``notIn`` exclude rows where the column is null); ``not`` of a subtree is SQL ``NOT``, so
  ``not`` of a condition that is unknown for a row (null column) also excludes that row. Use
  ``isNull`` to ask for missing values explicitly.
- ``contains`` and ``startsWith`` are literal and case-sensitive (``%`` and ``_`` match only
  themselves); strings compare and sort by their UTF-8 bytes.
- ``orderBy`` sorts with ``NULLS LAST`` in both directions; an output name wins over a catalog
  column of the same name, as the query model decides. ``limit`` is a parameter; without
  ``orderBy`` which rows a limit keeps is unspecified.
"""

from __future__ import annotations

import datetime as dt
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from dataset_export.core.catalog import Aggregate, Column, ColumnType, FilterOp
from dataset_export.core.query import (
    AllOf,
    AnyOf,
    Condition,
    FilterNode,
    Negation,
    Query,
    Scalar,
    Scope,
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_COMPARISONS = {
    FilterOp.EQUALS: "=",
    FilterOp.NOT_EQUALS: "<>",
    FilterOp.GT: ">",
    FilterOp.GTE: ">=",
    FilterOp.LT: "<",
    FilterOp.LTE: "<=",
}


@dataclass(frozen=True)
class CompiledQuery:
    """SQL text with placeholders and what to bind to them, in text order: for DuckDB the
    values themselves (``?``), for BigQuery typed named parameters (``QueryParameter``)."""

    sql: str
    params: list[object]


def is_identifier(name: str) -> bool:
    """True when ``name`` is a plain identifier, one SQL text may name."""
    return _IDENTIFIER.fullmatch(name) is not None


def check_identifier(name: str) -> str:
    """``name`` itself; ValueError unless it is a plain identifier (defence in depth)."""
    if not is_identifier(name):
        raise ValueError(f"not a safe SQL identifier: {name!r}")
    return name


def check_value(value: object) -> Scalar:
    """``value`` itself; TypeError unless it is a value a filter may bind."""
    if isinstance(value, dt.datetime):  # a datetime is a date subclass: never bind one
        raise TypeError("filter values must be dates, not datetimes")
    if not isinstance(value, str | bool | int | float | dt.date):
        raise TypeError(f"unsupported filter value type {type(value).__name__}")
    return value


def columns_read(query: Query) -> list[Column]:
    """The catalog columns the query reads (its scopes', its filter's, its order keys'), each
    once, in that order: what an engine checks its dataset against."""
    needed = [s.column for s in query.scopes]
    nodes: list[FilterNode] = [] if query.filter is None else [query.filter]
    while nodes:
        node = nodes.pop(0)
        if isinstance(node, Condition):
            needed.append(node.column)
        elif isinstance(node, Negation):
            nodes.insert(0, node.child)
        elif isinstance(node, AllOf | AnyOf):
            nodes[:0] = node.children
    needed += [k.column for k in query.order_by if k.column is not None]
    return list(dict.fromkeys(needed))


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


class SqlCompiler(ABC):
    """Compiles one query over the table or view ``source``; one instance per statement."""

    def __init__(self, source: str) -> None:
        #: What columns are qualified with.
        self.source = self.quote_identifier(source)
        #: The FROM item (the source itself, unless a dialect reads a table under an alias).
        self.relation = self.source
        self.params: list[object] = []

    # The dialect's spellings.

    @abstractmethod
    def quote_identifier(self, name: str) -> str:
        """``name`` quoted as an identifier (after ``check_identifier``)."""

    @abstractmethod
    def aggregate(self, aggregate: Aggregate, column: Column, ref: str) -> str:
        """The aggregate of ``column`` (referenced as ``ref``), typed as ``output_type`` says."""

    @abstractmethod
    def contains(self, ref: str, value: str) -> str:
        """A literal, case-sensitive substring test of ``ref`` against the parameter ``value``."""

    @abstractmethod
    def starts_with(self, ref: str, value: str) -> str:
        """A literal, case-sensitive prefix test of ``ref`` against the parameter ``value``."""

    # The shared walk.

    def column(self, column: Column) -> str:
        return f"{self.source}.{self.quote_identifier(column.name)}"

    def scope(self, scope: Scope) -> str:
        ref = self.column(scope.column)
        if scope.aggregate is None:
            return ref
        return self.aggregate(scope.aggregate, scope.column, ref)

    def bind(self, value: object) -> str:
        """Bind one value; its placeholder in the text."""
        return self.placeholder(check_value(value))

    def placeholder(self, value: Scalar) -> str:
        """Record a checked value as the next parameter; the text that refers to it."""
        self.params.append(value)
        return "?"

    def in_list(self, ref: str, values: Sequence[object], *, negated: bool) -> str:
        """``ref [NOT] IN`` the values, each one bound."""
        marks = ", ".join(self.bind(v) for v in values)
        return f"{ref} {'NOT IN' if negated else 'IN'} ({marks})"

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
            return self.in_list(col, self.values(node.value), negated=op is FilterOp.NOT_IN)
        if op is FilterOp.BETWEEN:
            low, high = self.values(node.value)
            return f"{col} BETWEEN {self.bind(low)} AND {self.bind(high)}"
        if op is FilterOp.CONTAINS:
            return self.contains(col, self.bind(node.value))
        if op is FilterOp.STARTS_WITH:
            return self.starts_with(col, self.bind(node.value))
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

    def where(self, query: Query) -> str | None:
        """The condition of the query's filter (binding its parameters), or None without one."""
        return None if query.filter is None else self.filter(query.filter)

    def from_where(self, query: Query, *, where: str | None) -> list[str]:
        """The FROM clause and, when there is a filter, the WHERE clause."""
        parts = [f"FROM {self.relation}"]
        if where is not None:
            parts.append(f"WHERE {where}")
        return parts

    def tail(self, query: Query, *, where: str | None) -> str:
        """FROM, WHERE, GROUP BY, ORDER BY and LIMIT; binds parameters in text order."""
        parts = self.from_where(query, where=where)
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

    def select_columns(self, query: Query) -> list[str]:
        """One select item per scope, in order, under its output name."""
        return [f"{self.scope(s)} AS {self.quote_identifier(s.output_name)}" for s in query.scopes]

    def compile(self, query: Query, select: Sequence[str]) -> CompiledQuery:
        if not query.scopes:
            raise ValueError("a query needs at least one scope")
        # Parameters bind in text order: WHERE's come before LIMIT's.
        sql = "SELECT " + ", ".join(select) + " " + self.tail(query, where=self.where(query))
        return CompiledQuery(sql=sql, params=self.params)
