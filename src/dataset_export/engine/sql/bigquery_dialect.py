"""The GoogleSQL dialect: a validated ``Query`` as BigQuery SQL text plus typed named parameters.

The walk, the safety rules and the semantics every dialect keeps are in ``compiler.py``; this
module spells them for BigQuery. It is written, not translated from the DuckDB SQL: sqlglot turns
``contains`` into the case-insensitive ``CONTAINS_SUBSTR`` and keeps ``MEDIAN``, which BigQuery
lacks. Each construct below was checked against BigQuery's own documentation (linked), and
``tests/unit/test_sql_bigquery.py`` pins its text. The BigQuery emulator the tests also run on
executes these statements through DuckDB and accepts non-GoogleSQL: a result there shows the
semantics match, not that BigQuery accepts the text.

- The source is a table path ``project.dataset.table``, a ``core.source.BigQueryTable`` (each
  ID checked there against BigQuery's naming rules, the table ID kept to ASCII letters, digits,
  ``_`` and ``-``), quoted whole in backticks and read under the alias ``dataset``: ``FROM
  `my-project.listings.rental_listings` AS `dataset```; every column is qualified with that alias
  (``dataset.bed``), so no output alias, and no column named like the table, changes what a name
  refers to.
  Identifiers are quoted with backticks; output names also follow BigQuery's column-name rules
  (the statement's outputs become a table's columns), so the prefixes BigQuery reserves
  (``_TABLE_``, ``_FILE_``, ``_PARTITION`` ...) are refused.
  https://cloud.google.com/bigquery/docs/reference/standard-sql/lexical#table_names
  https://cloud.google.com/bigquery/docs/reference/standard-sql/lexical#quoted_identifiers
  https://cloud.google.com/resource-manager/docs/creating-managing-projects#before_you_begin
  https://cloud.google.com/bigquery/docs/datasets#dataset-naming
  https://cloud.google.com/bigquery/docs/tables#table_naming
  https://cloud.google.com/bigquery/docs/schemas#column_names
- Values are named query parameters ``@p0``, ``@p1`` ... in text order, each with its GoogleSQL
  type: ``STRING``, ``INT64``, ``FLOAT64``, ``BOOL``, ``DATE`` (a ``datetime.date``). The
  statement carries ``QueryParameter`` descriptions, which the BigQuery adapter turns into
  ``ScalarQueryParameter`` / ``ArrayQueryParameter``; this module imports nothing from Google.
  https://cloud.google.com/bigquery/docs/parameterized-queries
  https://cloud.google.com/bigquery/docs/reference/standard-sql/lexical#named_query_parameters
- ``in`` / ``notIn`` are ``col IN UNNEST(@p)`` / ``col NOT IN UNNEST(@p)`` with one ARRAY
  parameter of the values' type. A list mixing integers and fractions (a numeric column) is split
  into one array per type, ``(col IN UNNEST(@p0) OR col IN UNNEST(@p1))`` (``NOT IN`` joined with
  ``AND``), so no integer is rounded to a double. ``IN UNNEST`` is ``IN (SELECT element FROM
  UNNEST(array))``: NULL for a null column, as ``IN`` lists are.
  https://cloud.google.com/bigquery/docs/reference/standard-sql/operators#in_operators
- ``contains`` is ``STRPOS(col, @p) > 0`` (0 when absent, NULL for a null column) and
  ``startsWith`` is ``STARTS_WITH(col, @p)``; both literal and case-sensitive, as long as the
  source columns have no case-insensitive collation (a table's default collation would change
  them; the tables this project loads have none).
  https://cloud.google.com/bigquery/docs/reference/standard-sql/string_functions#strpos
  https://cloud.google.com/bigquery/docs/reference/standard-sql/string_functions#starts_with
  https://cloud.google.com/bigquery/docs/reference/standard-sql/lexical#case_sensitivity
- Aggregates: ``AVG`` (FLOAT64), ``SUM`` (INT64 for integer columns, an error on overflow, as
  DuckDB's cast to BIGINT), ``MIN``, ``MAX``, ``COUNT(col)``, ``COUNT(DISTINCT col)`` (exact).
  https://cloud.google.com/bigquery/docs/reference/standard-sql/aggregate_functions
- Median: BigQuery has no exact median aggregate (``APPROX_QUANTILES`` is approximate). The
  exact one is the navigation function ``PERCENTILE_CONT(x, 0.5) OVER (PARTITION BY keys)``
  (linear interpolation, nulls ignored; integers cast to FLOAT64 first so it returns FLOAT64). A
  query with a Median reads a subquery: the inner SELECT filters and computes each median per
  row over the group's partition, the outer one groups as usual and takes ``ANY_VALUE`` of the
  median column (one value per partition, so any row's is the group's), beside the other
  aggregates over the same filtered rows. Without group keys the window is ``OVER ()`` and an
  empty input still gives one row (median null, counts 0). ``PARTITION BY`` cannot take a
  floating-point expression, so a FLOAT64 key partitions by ``FORMAT('%.17g', ...)`` of its
  value with -0 made 0: 17 significant digits tell every double apart, so the partitions are
  exactly the groups GROUP BY makes.
  https://cloud.google.com/bigquery/docs/reference/standard-sql/navigation_functions#percentile_cont
  https://cloud.google.com/bigquery/docs/reference/standard-sql/window-function-calls
  https://cloud.google.com/bigquery/docs/reference/standard-sql/data-types#groupable_data_types
  https://cloud.google.com/bigquery/docs/reference/standard-sql/aggregate_functions#any_value
  https://cloud.google.com/bigquery/docs/reference/standard-sql/string_functions#format_string
- ``ORDER BY expr ASC|DESC NULLS LAST``, and ``LIMIT @p`` (an INT64 parameter).
  https://cloud.google.com/bigquery/docs/reference/standard-sql/query-syntax#order_by_clause
  https://cloud.google.com/bigquery/docs/reference/standard-sql/query-syntax#limit_and_offset_clause

Known difference from DuckDB, outside the contract: non-finite doubles. BigQuery sorts NaN first
(after nulls in ascending order) where DuckDB sorts it last, and their MIN/MAX treat NaN apart.
A window over one huge partition (a Median without group keys over billions of rows) runs on
one worker in BigQuery and may exceed its resources.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from dataset_export.core.catalog import Aggregate, Column, ColumnType
from dataset_export.core.query import Query, Scalar
from dataset_export.core.source import BigQueryTable, parse_bigquery_table

from .compiler import CompiledQuery, SqlCompiler, check_identifier, check_value

#: The alias every column is qualified with.
ALIAS = "dataset"

BigQueryType: TypeAlias = Literal["STRING", "INT64", "FLOAT64", "BOOL", "DATE"]

# https://cloud.google.com/bigquery/docs/schemas#column_names (compared ignoring case: BigQuery's
# column names are case-insensitive).
RESERVED_COLUMN_PREFIXES = (
    "_TABLE_",
    "_FILE_",
    "_PARTITION",
    "_ROW_TIMESTAMP",
    "__ROOT__",
    "_COLIDENTIFIER",
    "_CHANGE_SEQUENCE_NUMBER",
    "_CHANGE_TYPE",
    "_CHANGE_TIMESTAMP",
)

_AGGREGATE_FUNCTIONS = {
    Aggregate.AVG: "AVG({})",
    Aggregate.SUM: "SUM({})",
    Aggregate.MIN: "MIN({})",
    Aggregate.MAX: "MAX({})",
    Aggregate.COUNT: "COUNT({})",
    Aggregate.COUNT_DISTINCT: "COUNT(DISTINCT {})",
}


@dataclass(frozen=True)
class ScalarParameter:
    """``@name``, one value of a GoogleSQL type (``ScalarQueryParameter(name, type, value)``)."""

    name: str
    type: BigQueryType
    value: Scalar


@dataclass(frozen=True)
class ArrayParameter:
    """``@name``, an ARRAY of one GoogleSQL type (``ArrayQueryParameter(name, type, values)``)."""

    name: str
    type: BigQueryType
    values: tuple[Scalar, ...]


QueryParameter: TypeAlias = ScalarParameter | ArrayParameter


def quote_table(table: BigQueryTable) -> str:
    """The whole path in backticks, as GoogleSQL reads a table path (its IDs, checked by
    ``core.source``, hold nothing a backtick-quoted path would need escaped)."""
    return f"`{table}`"


def quote_identifier(name: str) -> str:
    """``name`` in backticks; ValueError unless it is a plain identifier (defence in depth)."""
    return f"`{check_identifier(name)}`"


def check_column_name(name: str) -> str:
    """``name`` itself; ValueError when BigQuery reserves its prefix for a table's columns."""
    folded = name.upper()
    for prefix in RESERVED_COLUMN_PREFIXES:
        if folded.startswith(prefix):
            raise ValueError(
                f"output name {name!r} starts with {prefix}, which BigQuery reserves; "
                "choose another alias"
            )
    return check_identifier(name)


def parameter_type(value: Scalar) -> BigQueryType:
    """The GoogleSQL type a checked value is bound as."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, str):
        return "STRING"
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return "DATE"
    raise TypeError(f"unsupported filter value type {type(value).__name__}")


class BigQueryCompiler(SqlCompiler):
    """``SqlCompiler`` with GoogleSQL's spellings, for one query over one table."""

    def __init__(self, table: str | BigQueryTable, query: Query) -> None:
        super().__init__(ALIAS)
        path = table if isinstance(table, BigQueryTable) else parse_bigquery_table(table)
        self.table = quote_table(path)
        self.relation = f"{self.table} AS {self.source}"
        # A Median reads a subquery: the columns the outer query refers to, and one window
        # column per median'd column, named apart from them.
        self.medians: dict[str, str] = {}
        self.median_columns: list[Column] = []
        self.inner: list[Column] = []
        self.partition: list[Column] = list(
            {s.column.name: s.column for s in query.group_by}.values()
        )
        median_columns = {
            s.column.name: s.column for s in query.scopes if s.aggregate is Aggregate.MEDIAN
        }
        if median_columns:
            referenced = {s.column.name: s.column for s in query.group_by}
            for s in query.scopes:
                if s.aggregate is not None and s.aggregate is not Aggregate.MEDIAN:
                    referenced.setdefault(s.column.name, s.column)
            for key in query.order_by:
                if key.column is not None:
                    referenced.setdefault(key.column.name, key.column)
            self.inner = list(referenced.values())
            for i, name in enumerate(median_columns):
                inner_name = f"median_{i}"
                while inner_name in referenced:
                    inner_name = f"_{inner_name}"
                self.medians[name] = check_identifier(inner_name)
            self.median_columns = list(median_columns.values())

    def quote_identifier(self, name: str) -> str:
        return quote_identifier(name)

    def aggregate(self, aggregate: Aggregate, column: Column, ref: str) -> str:
        if aggregate is Aggregate.MEDIAN:
            # One value per partition (= group): any row's is the group's.
            return f"ANY_VALUE({self.source}.{quote_identifier(self.medians[column.name])})"
        return _AGGREGATE_FUNCTIONS[aggregate].format(ref)

    def contains(self, ref: str, value: str) -> str:
        return f"STRPOS({ref}, {value}) > 0"

    def starts_with(self, ref: str, value: str) -> str:
        return f"STARTS_WITH({ref}, {value})"

    def placeholder(self, value: Scalar) -> str:
        name = f"p{len(self.params)}"
        self.params.append(ScalarParameter(name, parameter_type(value), value))
        return f"@{name}"

    def in_list(self, ref: str, values: Sequence[object], *, negated: bool) -> str:
        by_type: dict[BigQueryType, list[Scalar]] = {}
        for value in values:
            checked = check_value(value)
            by_type.setdefault(parameter_type(checked), []).append(checked)
        tests = []
        for kind, members in by_type.items():
            name = f"p{len(self.params)}"
            self.params.append(ArrayParameter(name, kind, tuple(members)))
            tests.append(f"{ref} {'NOT IN' if negated else 'IN'} UNNEST(@{name})")
        if len(tests) == 1:
            return tests[0]
        return "(" + (" AND " if negated else " OR ").join(tests) + ")"

    def select_columns(self, query: Query) -> list[str]:
        for scope in query.scopes:
            check_column_name(scope.output_name)
        return super().select_columns(query)

    def partition_key(self, column: Column) -> str:
        """A PARTITION BY expression that groups rows as GROUP BY groups ``column``."""
        ref = self.column(column)
        if column.type is ColumnType.NUMBER:
            # PARTITION BY takes no FLOAT64; %.17g tells every double apart, and -0 = 0 as in
            # GROUP BY (NaNs all print "nan", one group as in GROUP BY; NULL stays NULL).
            return f"FORMAT('%.17g', IF({ref} = 0, 0.0, {ref}))"
        return ref

    def from_where(self, query: Query, *, where: str | None) -> list[str]:
        if not self.medians:
            return super().from_where(query, where=where)
        over = ", ".join(self.partition_key(c) for c in self.partition)
        window = f"OVER (PARTITION BY {over})" if over else "OVER ()"
        items = [f"{self.column(c)} AS {quote_identifier(c.name)}" for c in self.inner]
        for column in self.median_columns:
            value = self.column(column)
            if column.type is not ColumnType.NUMBER:
                value = f"CAST({value} AS FLOAT64)"
            name = quote_identifier(self.medians[column.name])
            items.append(f"PERCENTILE_CONT({value}, 0.5) {window} AS {name}")
        # Identifiers are checked and quoted, values are parameters (module docstring).
        inner = f"SELECT {', '.join(items)} FROM {self.relation}"  # noqa: S608
        if where is not None:
            inner += f" WHERE {where}"
        return [f"FROM ({inner}) AS {self.source}"]


def compile_query(query: Query, table: str | BigQueryTable) -> CompiledQuery:
    """The query as GoogleSQL over ``project.dataset.table``, one column per scope, in order;
    ``params`` are ``QueryParameter`` descriptions, in text order."""
    compiler = BigQueryCompiler(table, query)
    return compiler.compile(query, compiler.select_columns(query))
