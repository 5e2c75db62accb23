"""Unit tests of the SQL compiler: text shape, bound values, results against a reference."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import math
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dataset_export.core.catalog import RENTAL_LISTINGS, Aggregate, Column, ColumnType, FilterOp
from dataset_export.core.errors import InvalidRequest
from dataset_export.core.query import (
    AllOf,
    AnyOf,
    Condition,
    Direction,
    FilterNode,
    Negation,
    OrderKey,
    Query,
    Scope,
    parse_dataset,
)
from dataset_export.engine.sql.compiler import columns_read, output_type
from dataset_export.engine.sql.duckdb_dialect import (
    compile_export,
    compile_query,
    compile_row_group_counts,
    quote_identifier,
)
from dataset_export_tools.dataset.generate import generate_dataset
from dataset_export_tools.demo import SEED_DATASET

INFINITIES = (float("inf"), -float("inf"))
# Columns given nulls in the property-test file (the catalog only declares building_name).
NULLED = ("city", "bed", "bath", "sqft", "asking_rent", "listed_on", "is_active", "zip_code")
HOSTILE = [
    "'; DROP TABLE dataset; --",
    '" OR 1=1 --',
    "Robert'); --",
    "%",
    "_",
    "a%b_c",
    "?",
    "$1",
    "\\",
    "\x00",
    "line\nbreak",
    "Zürich 東京 🌅",
    "dataset",
    "SELECT",
]


def parse(dataset: Any) -> Query:
    return parse_dataset(dataset, RENTAL_LISTINGS, max_rows=1_000_000)


def col(name: str) -> Column:
    column = RENTAL_LISTINGS.get(name)
    assert column is not None
    return column


def where_sql(filters: Any) -> str:
    """The SQL text after WHERE for a query on city with these filters."""
    sql = compile_query(parse({"scopes": [{"column": "city"}], "filters": filters})).sql
    return sql.split(" WHERE ", 1)[1]


# --- Text shape ---------------------------------------------------------------------------


def test_seed_example_compiles_to_the_documented_sql() -> None:
    """The seed's example is a grouped, filtered, limited query with bound values."""
    compiled = compile_query(parse(SEED_DATASET))
    assert compiled.sql == (
        'SELECT "dataset"."street_address" AS "street_address", '
        'avg("dataset"."asking_rent") AS "avg_asking_rent" '
        'FROM "dataset" '
        'WHERE ("dataset"."msa" = ? AND "dataset"."bed" IN (?, ?, ?)) '
        'GROUP BY "dataset"."street_address" '
        "LIMIT ?"
    )
    assert compiled.params == ["Seattle, WA", 1, 2, 3, 10000]


def test_plain_query_has_no_group_by_and_uses_the_source_name() -> None:
    """A plain query selects its scopes under their names from the given source."""
    compiled = compile_query(parse({"scopes": [{"column": "city"}, {"column": "bed"}]}), "t1")
    assert compiled.sql == 'SELECT "t1"."city" AS "city", "t1"."bed" AS "bed" FROM "t1"'
    assert compiled.params == []


@pytest.mark.parametrize(
    ("column", "aggregate", "expression"),
    [
        ("asking_rent", "Avg", 'avg("dataset"."asking_rent")'),
        ("asking_rent", "Sum", 'sum("dataset"."asking_rent")'),
        ("sqft", "Sum", 'CAST(sum("dataset"."sqft") AS BIGINT)'),
        ("sqft", "Min", 'min("dataset"."sqft")'),
        ("listed_on", "Max", 'max("dataset"."listed_on")'),
        ("building_name", "Count", 'count("dataset"."building_name")'),
        ("city", "CountDistinct", 'count(DISTINCT "dataset"."city")'),
        ("sqft", "Median", 'median("dataset"."sqft")'),
    ],
)
def test_each_aggregate_compiles_to_its_function(
    column: str, aggregate: str, expression: str
) -> None:
    """Every aggregate maps to one DuckDB function, aliased to its output name."""
    compiled = compile_query(parse({"scopes": [{"column": column, "aggregate": aggregate}]}))
    name = f"{aggregate.lower()}_{column}"
    assert compiled.sql == f'SELECT {expression} AS "{name}" FROM "dataset"'  # noqa: S608


def test_group_by_lists_each_plain_column_once() -> None:
    """Plain scopes are the GROUP BY keys; a column exported twice is grouped once."""
    query = parse(
        {
            "scopes": [
                {"column": "msa"},
                {"column": "bed", "aggregate": "Count"},
                {"column": "msa", "alias": "metro"},
                {"column": "bed"},
            ]
        }
    )
    assert compile_query(query).sql.endswith(
        'FROM "dataset" GROUP BY "dataset"."msa", "dataset"."bed"'
    )


@pytest.mark.parametrize(
    ("leaf", "fragment", "params"),
    [
        ({"equals": "Austin"}, '"dataset"."city" = ?', ["Austin"]),
        ({"notEquals": "Austin"}, '"dataset"."city" <> ?', ["Austin"]),
        ({"in": ["A", "B"]}, '"dataset"."city" IN (?, ?)', ["A", "B"]),
        ({"notIn": ["A"]}, '"dataset"."city" NOT IN (?)', ["A"]),
        ({"contains": "50%_off"}, 'contains("dataset"."city", ?)', ["50%_off"]),
        ({"startsWith": "San"}, 'starts_with("dataset"."city", ?)', ["San"]),
        ({"isNull": True}, '"dataset"."city" IS NULL', []),
        ({"isNull": False}, '"dataset"."city" IS NOT NULL', []),
    ],
)
def test_each_text_operator_compiles_with_bound_values(
    leaf: dict[str, Any], fragment: str, params: list[Any]
) -> None:
    """Text operators are literal functions or comparisons; values are parameters."""
    compiled = compile_query(
        parse({"scopes": [{"column": "zip_code"}], "filters": [{"column": "city", "filter": leaf}]})
    )
    assert compiled.sql.split(" WHERE ", 1)[1] == fragment
    assert compiled.params == params


@pytest.mark.parametrize(
    ("leaf", "fragment", "params"),
    [
        ({"gt": 2}, '"dataset"."bed" > ?', [2]),
        ({"gte": 2.5}, '"dataset"."bed" >= ?', [2.5]),
        ({"lt": 3}, '"dataset"."bed" < ?', [3]),
        ({"lte": 3}, '"dataset"."bed" <= ?', [3]),
        ({"between": [1, 3]}, '"dataset"."bed" BETWEEN ? AND ?', [1, 3]),
    ],
)
def test_each_ordering_operator_compiles(
    leaf: dict[str, Any], fragment: str, params: list[Any]
) -> None:
    """Comparisons and between bind their bounds."""
    compiled = compile_query(
        parse({"scopes": [{"column": "city"}], "filters": [{"column": "bed", "filter": leaf}]})
    )
    assert compiled.sql.split(" WHERE ", 1)[1] == fragment
    assert compiled.params == params


def test_dates_are_bound_as_dates() -> None:
    """ISO date strings become datetime.date parameters."""
    compiled = compile_query(
        parse(
            {
                "scopes": [{"column": "city"}],
                "filters": [
                    {"column": "listed_on", "filter": {"between": ["2025-01-01", "2025-01-31"]}}
                ],
            }
        )
    )
    assert compiled.params == [dt.date(2025, 1, 1), dt.date(2025, 1, 31)]
    assert all(type(p) is dt.date for p in compiled.params)


def test_tree_filters_nest_with_parentheses_in_value_order() -> None:
    """and/or/not nest with explicit parentheses; parameters follow the text order."""
    fragment = where_sql(
        {
            "or": [
                {"not": {"column": "bed", "filter": {"equals": 1}}},
                {
                    "and": [
                        {"column": "state", "filter": {"in": ["WA", "OR"]}},
                        {"not": {"or": [{"column": "bath", "filter": {"gt": 2}}, None]}},
                        {"column": "is_active", "filter": {"equals": True}},
                    ]
                },
            ]
        }
    )
    assert fragment == (
        '((NOT ("dataset"."bed" = ?)) OR ("dataset"."state" IN (?, ?) AND '
        '(NOT ("dataset"."bath" > ?)) AND "dataset"."is_active" = ?))'
    )


def test_order_by_uses_expressions_and_nulls_last() -> None:
    """Ordering names outputs by their expressions, so an alias cannot shadow a column."""
    query = parse(
        {
            "scopes": [
                {"column": "city"},
                {"column": "asking_rent", "aggregate": "Avg", "alias": "bed"},
            ],
            "filters": [{"column": "bed", "filter": {"gte": 2}}],
            "orderBy": [{"column": "bed", "direction": "desc"}, {"column": "city"}],
            "limit": 5,
        }
    )
    compiled = compile_query(query)
    assert compiled.sql == (
        'SELECT "dataset"."city" AS "city", avg("dataset"."asking_rent") AS "bed" '
        'FROM "dataset" WHERE "dataset"."bed" >= ? GROUP BY "dataset"."city" '
        'ORDER BY avg("dataset"."asking_rent") DESC NULLS LAST, "dataset"."city" ASC NULLS LAST '
        "LIMIT ?"
    )
    assert compiled.params == [2, 5]


def test_plain_query_may_order_by_a_column_it_does_not_export() -> None:
    """A plain query may sort by any catalog column."""
    query = parse({"scopes": [{"column": "city"}], "orderBy": [{"column": "sqft"}]})
    assert compile_query(query).sql.endswith('ORDER BY "dataset"."sqft" ASC NULLS LAST')


def test_export_csv_renders_fields_in_sql() -> None:
    """The CSV export query renders one line per row with quoting only where needed."""
    query = parse(
        {
            "scopes": [
                {"column": "city"},
                {"column": "bed"},
                {"column": "asking_rent", "aggregate": "Avg"},
            ],
            "filters": [{"column": "msa", "filter": {"equals": "x"}}],
        }
    )
    compiled = compile_export(query, "csv")
    assert compiled.sql.startswith('SELECT concat(CASE WHEN contains("dataset"."city", \',\')')
    assert 'CAST("dataset"."bed" AS VARCHAR), \',\', CASE WHEN NOT isfinite(avg(' in compiled.sql
    assert compiled.sql.endswith(
        'chr(10)) AS "line" FROM "dataset" WHERE "dataset"."msa" = ? '
        'GROUP BY "dataset"."city", "dataset"."bed"'
    )
    assert compiled.params == ["x"]


def test_export_jsonl_packs_a_struct_in_scope_order() -> None:
    """The JSONL export query packs the outputs into a struct keyed by their names."""
    query = parse({"scopes": [{"column": "bath"}, {"column": "city", "alias": "town"}]})
    assert compile_export(query, "jsonl").sql == (
        'SELECT concat(to_json(struct_pack("bath" := CASE WHEN isfinite("dataset"."bath") '
        'THEN "dataset"."bath" END, "town" := "dataset"."city")), chr(10)) AS "line" '
        'FROM "dataset"'
    )


def test_output_types_follow_the_aggregate() -> None:
    """Counts are integers, averages and medians numbers, min/max keep the column type."""
    query = parse(
        {
            "scopes": [
                {"column": "city", "aggregate": "CountDistinct"},
                {"column": "sqft", "aggregate": "Avg"},
                {"column": "sqft", "aggregate": "Sum"},
                {"column": "bath", "aggregate": "Sum"},
                {"column": "sqft", "aggregate": "Median"},
                {"column": "listed_on", "aggregate": "Min"},
                {"column": "is_active"},
            ]
        }
    )
    assert [output_type(s) for s in query.scopes] == [
        ColumnType.INTEGER,
        ColumnType.NUMBER,
        ColumnType.INTEGER,
        ColumnType.NUMBER,
        ColumnType.NUMBER,
        ColumnType.DATE,
        ColumnType.BOOLEAN,
    ]


# --- Nothing a customer sends changes the SQL's shape --------------------------------------


@pytest.mark.parametrize("name", ['a"b', "a b", "", "1abc", "x;y", "é", "a" * 64, 'x" --'])
def test_unsafe_identifiers_are_refused(name: str) -> None:
    """Identifiers outside [A-Za-z_][A-Za-z0-9_]* never reach SQL text."""
    with pytest.raises(ValueError, match="identifier"):
        quote_identifier(name)
    scope = Scope(column=col("city"), aggregate=None, output_name=name)
    with pytest.raises(ValueError, match="identifier"):
        compile_query(Query(scopes=(scope,), filter=None, limit=None, order_by=()))
    good = Scope(column=col("city"), aggregate=None, output_name="city")
    with pytest.raises(ValueError, match="identifier"):
        compile_query(Query(scopes=(good,), filter=None, limit=None, order_by=()), source=name)


def test_a_datetime_is_never_bound_as_a_date() -> None:
    """A datetime sneaking into a hand-built query is refused."""
    leaf = Condition(col("listed_on"), FilterOp.EQUALS, dt.datetime(2025, 1, 1, 12, 0))
    scope = Scope(column=col("city"), aggregate=None, output_name="city")
    with pytest.raises(TypeError):
        compile_query(Query(scopes=(scope,), filter=leaf, limit=None, order_by=()))


_text_values = st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=40))


def _with_value(value: str) -> dict[str, Any]:
    return {
        "scopes": [{"column": "city"}, {"column": "asking_rent", "aggregate": "Max"}],
        "filters": {
            "or": [
                {"column": "building_name", "filter": {"contains": value}},
                {"not": {"column": "msa", "filter": {"startsWith": value}}},
                {"column": "city", "filter": {"in": [value, value]}},
                {"column": "state", "filter": {"notEquals": value}},
            ]
        },
        "orderBy": [{"column": "max_asking_rent", "direction": "desc"}],
        "limit": 7,
    }


@settings(max_examples=200, deadline=None)
@given(value=_text_values)
def test_hostile_values_never_change_the_sql_text(value: str) -> None:
    """Any string value compiles to the same SQL as a harmless one, and is bound verbatim."""
    try:
        hostile = parse(_with_value(value))
    except InvalidRequest:  # e.g. longer than the value limit: nothing to compile
        return
    benign = parse(_with_value("x"))
    for compile_ in (compile_query, lambda q: compile_export(q, "csv"),
                     lambda q: compile_export(q, "jsonl")):  # fmt: skip
        got, want = compile_(hostile), compile_(benign)
        assert got.sql == want.sql
        assert got.params == [value, value, value, value, value, 7]


@settings(max_examples=100, deadline=None)
@given(value=_text_values)
def test_row_group_counts_bind_every_value_in_text_order(value: str) -> None:
    """The count by row group keeps the filter's values and the bucket lists out of the text."""
    try:
        hostile = parse(_with_value(value))
    except InvalidRequest:
        return
    benign = parse(_with_value("x"))
    divide = [compile_row_group_counts(q, "dataset", width=4) for q in (hostile, benign)]
    assert divide[0].sql == divide[1].sql
    assert divide[0].params == [4] + [value] * 5  # "r // ?" comes first
    join = [
        compile_row_group_counts(q, "dataset", width=4, groups=[0, 0, 1], boundaries=[6, 6, 9])
        for q in (hostile, benign)
    ]
    assert join[0].sql == join[1].sql
    assert join[0].params == [value] * 5 + [[0, 1, 2], [0, 0, 1], [6, 6, 9], 4]
    for compiled in (*divide, *join):
        assert compiled.sql.count("?") == len(compiled.params)


@pytest.mark.parametrize(
    "buckets",
    [
        {"width": 0},
        {"width": True},
        {"width": 2, "groups": [0]},
        {"width": 2, "groups": [0, 1], "boundaries": [2]},
        {"width": 2, "groups": [], "boundaries": []},
        {"width": 2, "groups": [0, "1"], "boundaries": [2, 4]},
        {"width": 2, "groups": [0, -1], "boundaries": [2, 4]},
    ],
)
def test_row_group_counts_refuse_malformed_buckets(buckets: dict[str, Any]) -> None:
    """A width or bucket lists that are not non-negative integers of one length raise."""
    with pytest.raises(ValueError, match=r"bucket|groups"):
        compile_row_group_counts(parse({"scopes": [{"column": "city"}]}), "dataset", **buckets)


@settings(max_examples=200, deadline=None)
@given(alias=st.one_of(st.sampled_from(HOSTILE), st.text(max_size=70)))
def test_aliases_are_identifiers_or_refused(alias: str) -> None:
    """An alias either fails validation or appears only as one quoted identifier."""
    dataset = {"scopes": [{"column": "bed", "aggregate": "Sum", "alias": alias}]}
    try:
        query = parse(dataset)
    except InvalidRequest:
        return
    sql = compile_query(query).sql
    want = f'SELECT CAST(sum("dataset"."bed") AS BIGINT) AS "{alias}" FROM "dataset"'  # noqa: S608
    assert sql == want
    assert quote_identifier(alias) == f'"{alias}"'


# --- Results against an independent evaluation ---------------------------------------------


def write_listings(root: Path, rows: int) -> tuple[Path, list[dict[str, Any]]]:
    """A file of ``rows`` rows from the demo generator with extra nulls, and its rows as dicts."""
    generated = generate_dataset(rows, root / "generated.parquet", seed=7).path
    table = pq.read_table(generated)
    for i, name in enumerate(NULLED):
        column = table.column(name).combine_chunks()
        # Deterministic sprinkle of nulls, a different pattern per column.
        mask = pa.array([(row * 7 + i * 3) % 13 == 0 for row in range(table.num_rows)])
        table = table.set_column(
            table.schema.get_field_index(name),
            pa.field(name, column.type, nullable=True),
            pc.if_else(mask, pa.scalar(None, column.type), column),
        )
    path = root / "listings.parquet"
    pq.write_table(table, path, row_group_size=1_000)
    return path, table.to_pylist()


@pytest.fixture(scope="module")
def listings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A 2,500-row file from the demo generator with extra nulls, and its rows as dicts."""
    return write_listings(tmp_path_factory.mktemp("sql"), 2_500)


@pytest.fixture(scope="module")
def con(listings: tuple[Path, list[dict[str, Any]]]) -> Iterator[Any]:
    """A DuckDB connection with the view the compiler expects."""
    connection = duckdb.connect(":memory:", config={"threads": 1})
    connection.read_parquet(str(listings[0])).create_view("dataset")
    yield connection
    connection.close()


def _kleene_and(values: list[bool | None]) -> bool | None:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def _kleene_or(values: list[bool | None]) -> bool | None:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def ref_holds(node: FilterNode, row: dict[str, Any]) -> bool | None:
    """Three-valued evaluation of a filter tree on one row (None: unknown)."""
    if isinstance(node, AllOf):
        return _kleene_and([ref_holds(child, row) for child in node.children])
    if isinstance(node, AnyOf):
        return _kleene_or([ref_holds(child, row) for child in node.children])
    if isinstance(node, Negation):
        inner = ref_holds(node.child, row)
        return None if inner is None else not inner
    value, op, operand = row[node.column.name], node.op, node.value
    if op is FilterOp.IS_NULL:
        return (value is None) is operand
    if value is None:
        return None
    checks: dict[FilterOp, Any] = {
        FilterOp.EQUALS: lambda: value == operand,
        FilterOp.NOT_EQUALS: lambda: value != operand,
        FilterOp.IN: lambda: value in operand,  # type: ignore[operator]
        FilterOp.NOT_IN: lambda: value not in operand,  # type: ignore[operator]
        FilterOp.GT: lambda: value > operand,
        FilterOp.GTE: lambda: value >= operand,
        FilterOp.LT: lambda: value < operand,
        FilterOp.LTE: lambda: value <= operand,
        FilterOp.BETWEEN: lambda: operand[0] <= value <= operand[1],  # type: ignore[index]
        FilterOp.CONTAINS: lambda: operand in value,
        FilterOp.STARTS_WITH: lambda: value.startswith(operand),
    }
    return bool(checks[op]())


def ref_aggregate(aggregate: Aggregate, values: list[Any]) -> Any:
    """One aggregate over a group's values, with SQL's treatment of nulls."""
    present = [v for v in values if v is not None]
    if aggregate is Aggregate.COUNT:
        return len(present)
    if aggregate is Aggregate.COUNT_DISTINCT:
        return len(set(present))
    if not present:
        return None
    if aggregate is Aggregate.MIN:
        return min(present)
    if aggregate is Aggregate.MAX:
        return max(present)
    if aggregate is Aggregate.MEDIAN:
        return float(statistics.median(present))
    exact = sum(present) if isinstance(present[0], int) else math.fsum(present)
    return exact if aggregate is Aggregate.SUM else exact / len(present)


def ref_rows(query: Query, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The query's result rows computed in plain Python (no limit, no order)."""
    kept = [r for r in rows if query.filter is None or ref_holds(query.filter, r) is True]
    if not query.is_aggregate:
        return [tuple(r[s.column.name] for s in query.scopes) for r in kept]
    keys = [s.column.name for s in query.group_by]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in kept:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    if not keys and not groups:
        groups[()] = []  # an aggregate without GROUP BY always gives one row
    result = []
    for members in groups.values():
        first = members[0] if members else {}
        result.append(
            tuple(
                first.get(s.column.name)
                if s.aggregate is None
                else ref_aggregate(s.aggregate, [m[s.column.name] for m in members])
                for s in query.scopes
            )
        )
    return result


def canonical(value: Any) -> Any:
    """A hashable, float-tolerant stand-in for one value."""
    if isinstance(value, float):
        return round(value, 6) + 0.0
    return value


def _sort_key(row: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple((v is None, type(v).__name__ if v is not None else "", canonical(v))
                 for v in row)  # fmt: skip


def assert_same_values(got: tuple[Any, ...], want: tuple[Any, ...]) -> None:
    """Rows equal value by value, floats within a relative 1e-9."""
    assert same_values(got, want), (got, want)


def same_values(got: tuple[Any, ...], want: tuple[Any, ...]) -> bool:
    """Whether rows are equal value by value, floats within a relative 1e-9."""
    if len(got) != len(want):
        return False
    for g, w in zip(got, want, strict=True):
        if isinstance(g, float) or isinstance(w, float):
            if g is None or w is None or not math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9):
                return False
        elif g != w:
            return False
    return True


def _exact_part(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The row with its floats blanked: what must match exactly."""
    return tuple(None if isinstance(v, float) else v for v in row)


def _compare_order(
    a: tuple[Any, ...], b: tuple[Any, ...], positions: list[tuple[int, bool]]
) -> int:
    for index, descending in positions:
        x, y = a[index], b[index]
        if x is None or y is None:
            if x is None and y is None:
                continue
            return 1 if x is None else -1  # NULLS LAST in both directions
        if isinstance(x, float) and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9):
            continue
        if x != y:
            return (1 if x > y else -1) * (-1 if descending else 1)
    return 0


def check_result(query: Query, got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    """DuckDB's rows match the reference as a multiset, honouring order and limit."""
    names = query.output_names
    order = [(names.index(k.name), k.direction.value == "desc") for k in query.order_by
             if k.name in names]  # fmt: skip
    ordered_by_outputs = bool(query.order_by) and len(order) == len(query.order_by)
    expected_count = len(want) if query.limit is None else min(query.limit, len(want))
    assert len(got) == expected_count
    if ordered_by_outputs:
        compare = functools.partial(_compare_order, positions=order)
        for before, after in itertools.pairwise(got):
            assert compare(before, after) <= 0, (before, after)
        # The rows kept by a limit are the first ones in that order.
        best = sorted(want, key=functools.cmp_to_key(compare))[:expected_count]
        for g, w in zip(got, best, strict=True):
            assert compare(g, w) == 0, (g, w)
    if query.limit is None or expected_count == len(want):
        for g, w in zip(sorted(got, key=_sort_key), sorted(want, key=_sort_key), strict=True):
            assert_same_values(g, w)
    else:
        # Each kept row is one of the full result's, floats within the tolerance (rounding both
        # to a fixed number of places would split 34.72833549999999 from 34.7283355).
        pool: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for row in want:
            pool.setdefault(_exact_part(row), []).append(row)
        for row in got:
            candidates = pool.get(_exact_part(row), [])
            match = next((i for i, w in enumerate(candidates) if same_values(row, w)), None)
            assert match is not None, f"a limited result holds a row the full result lacks: {row}"
            candidates.pop(match)


def value_pools(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Per column, about 25 values that occur in ``rows`` (dates as ISO strings)."""
    pools: dict[str, list[Any]] = {}
    for column in RENTAL_LISTINGS:
        present = {r[column.name] for r in rows if r[column.name] is not None}
        seen = sorted((v for v in present if v == v and v not in INFINITIES), key=str)
        step = max(1, len(seen) // 25)
        values = seen[::step][:25]
        if column.type is ColumnType.DATE:
            values = [v.isoformat() for v in values]
        pools[column.name] = values
    pools["building_name"] += ["Smith, Jones & Co. Lofts", "Harbor\nView Lofts"]
    return pools


@pytest.fixture(scope="module")
def pools(listings: tuple[Path, list[dict[str, Any]]]) -> dict[str, list[Any]]:
    """Value pools of the property-test file."""
    return value_pools(listings[1])


@st.composite
def datasets(draw: st.DrawFn, pools: dict[str, list[Any]]) -> dict[str, Any]:
    """A random valid ``dataset`` object: scopes, a filter tree, maybe a limit and order."""
    columns = list(RENTAL_LISTINGS)
    scopes: list[dict[str, Any]] = []
    names: list[str] = []
    for i in range(draw(st.integers(1, 4))):
        column = draw(st.sampled_from(columns))
        scope: dict[str, Any] = {"column": column.name}
        if draw(st.integers(0, 9)) < 4:
            aggregate = draw(st.sampled_from(sorted(column.aggregates)))
            scope["aggregate"] = aggregate.value.upper()
            name = f"{aggregate.value.lower()}_{column.name}"
        else:
            name = column.name
        if name in names:
            scope["alias"] = name = f"out_{i}"
        scopes.append(scope)
        names.append(name)

    def value(column: Column) -> Any:
        if column.type is ColumnType.BOOLEAN:
            return draw(st.booleans())
        pool = pools[column.name]
        if column.type is ColumnType.NUMBER and draw(st.booleans()):
            return draw(st.floats(min_value=-10, max_value=5000, allow_nan=False))
        return draw(st.sampled_from(pool))

    def leaf() -> dict[str, Any]:
        column = draw(st.sampled_from(columns))
        op = draw(st.sampled_from(sorted(column.filter_ops)))
        operand: Any
        if op is FilterOp.IS_NULL:
            operand = draw(st.booleans())
        elif op in (FilterOp.IN, FilterOp.NOT_IN):
            operand = [value(column) for _ in range(draw(st.integers(1, 4)))]
        elif op is FilterOp.BETWEEN:
            low, high = value(column), value(column)
            operand = [min(low, high), max(low, high)]
        elif op in (FilterOp.CONTAINS, FilterOp.STARTS_WITH):
            text = draw(st.sampled_from(pools[column.name]))
            start = draw(st.integers(0, max(0, len(text) - 1)))
            start = 0 if op is FilterOp.STARTS_WITH else start
            operand = text[start : start + draw(st.integers(1, 6))] or "x"
            operand = draw(st.sampled_from([operand, operand, "%", "_", ", "]))
        else:
            operand = value(column)
        return {"column": column.name, "filter": {op.value: operand}}

    def tree(depth: int) -> Any:
        kind = draw(st.integers(0, 9 if depth < 3 else 4))
        if kind <= 4:
            return leaf()
        if kind <= 6:
            return {"not": tree(depth + 1)}
        key = "and" if kind == 7 else "or"
        return {key: [tree(depth + 1) for _ in range(draw(st.integers(1, 3)))]}

    dataset: dict[str, Any] = {"scopes": scopes}
    shape = draw(st.integers(0, 3))
    if shape == 1:
        dataset["filters"] = [tree(1) for _ in range(draw(st.integers(1, 3)))]
    elif shape >= 2:
        dataset["filters"] = tree(0)
    if draw(st.booleans()):
        dataset["limit"] = draw(st.integers(1, 40))
    if draw(st.booleans()):
        keys = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
        dataset["orderBy"] = [
            {"column": k, "direction": draw(st.sampled_from(["asc", "desc"]))} for k in keys
        ]
    return dataset


def test_reference_and_duckdb_agree_on_null_semantics(
    con: Any, listings: tuple[Path, list[dict[str, Any]]]
) -> None:
    """notEquals, notIn and not() exclude rows where the condition is unknown (a null column)."""
    rows = listings[1]
    city_known = sum(1 for r in rows if r["city"] is not None)
    both_known = sum(1 for r in rows if r["city"] is not None and r["bed"] is not None)
    either_known = sum(1 for r in rows if r["city"] is not None or r["bed"] is not None)
    assert both_known < city_known < len(rows)
    nowhere = {"column": "city", "filter": {"equals": "Nowhere"}}
    no_beds = {"column": "bed", "filter": {"equals": 99}}
    cases: list[tuple[Any, int]] = [
        ([{"column": "city", "filter": {"notEquals": "Nowhere"}}], city_known),
        ([{"column": "city", "filter": {"notIn": ["Nowhere"]}}], city_known),
        ({"not": nowhere}, city_known),
        ({"not": {"or": [nowhere, no_beds]}}, both_known),  # unknown OR false is unknown
        ({"not": {"and": [nowhere, no_beds]}}, either_known),  # false AND unknown is false
        ({"not": {"not": nowhere}}, 0),
        ([{"column": "city", "filter": {"isNull": True}}], len(rows) - city_known),
    ]
    for filters, expected in cases:
        query = parse({"scopes": [{"column": "property_id"}], "filters": filters})
        compiled = compile_query(query)
        got = con.sql(compiled.sql, params=compiled.params).fetchall()
        assert len(got) == expected == len(ref_rows(query, rows)), filters


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_queries_match_an_independent_evaluation(
    data: st.DataObject,
    con: Any,
    listings: tuple[Path, list[dict[str, Any]]],
    pools: dict[str, list[Any]],
) -> None:
    """Random valid queries give DuckDB the same rows as a plain-Python evaluation."""
    rows = listings[1]
    query = parse(data.draw(datasets(pools)))
    compiled = compile_query(query)
    got = con.sql(compiled.sql, params=compiled.params).fetchall()
    check_result(query, got, ref_rows(query, rows))


def test_a_limited_result_matches_floats_across_a_rounding_boundary() -> None:
    """An average off by its last bits is the reference's row even where 6 places split them."""
    query = parse(
        {"scopes": [{"column": "bed"}, {"column": "lat", "aggregate": "Avg"}], "limit": 1}
    )
    check_result(query, [(3, 34.72833549999999)], [(3, 34.7283355), (4, 35.5)])
    with pytest.raises(AssertionError, match="lacks"):
        check_result(query, [(3, 34.7283)], [(3, 34.7283355), (4, 35.5)])


def test_hand_built_order_key_must_name_something() -> None:
    """An order key that is neither an output nor a column is a programming error."""
    scope = Scope(column=col("city"), aggregate=Aggregate.COUNT, output_name="n")
    key = OrderKey(name="ghost", column=None, direction=Direction.ASC)
    with pytest.raises(ValueError, match="ghost"):
        compile_query(Query(scopes=(scope,), filter=None, limit=None, order_by=(key,)))


def test_columns_read_are_the_scopes_filter_and_order_columns_once_in_text_order() -> None:
    """Nested and negated filter columns count, repeats do not, output names are not columns."""
    query = parse(
        {
            "scopes": [{"column": "city"}, {"column": "sqft", "aggregate": "Avg"}],
            "filters": [
                {"or": [{"column": "bed", "filter": {"equals": 2}},
                        {"not": {"column": "msa", "filter": {"contains": "WA"}}}]},
                {"column": "city", "filter": {"startsWith": "S"}},
                {"column": "bath", "filter": {"gt": 1}},
            ],
            "orderBy": [{"column": "avg_sqft"}, {"column": "city"}],
        }
    )  # fmt: skip
    assert [c.name for c in columns_read(query)] == ["city", "sqft", "bed", "msa", "bath"]
