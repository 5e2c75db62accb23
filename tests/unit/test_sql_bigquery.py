"""Unit tests of the GoogleSQL dialect: golden text per operator and aggregate, typed parameters,
table paths and the safety rules (each construct checked against BigQuery's documentation, as
bigquery_dialect.py's docstring cites)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_export.core.catalog import RENTAL_LISTINGS, Aggregate, Column, ColumnType, FilterOp
from dataset_export.core.errors import InvalidRequest
from dataset_export.core.query import Condition, Direction, OrderKey, Query, Scope, parse_dataset
from dataset_export.core.source import parse_bigquery_table
from dataset_export.engine.sql import duckdb_dialect
from dataset_export.engine.sql.bigquery_dialect import (
    RESERVED_COLUMN_PREFIXES,
    ArrayParameter,
    ScalarParameter,
    check_column_name,
    compile_query,
    parameter_type,
    quote_identifier,
    quote_table,
)
from dataset_export_tools.demo import SEED_DATASET
from tests.unit.test_sql import HOSTILE, _with_value

TABLE = "my-project.listings.rental_listings"
FROM = "FROM `my-project.listings.rental_listings` AS `dataset`"


def parse(dataset: Any) -> Query:
    return parse_dataset(dataset, RENTAL_LISTINGS, max_rows=1_000_000)


def col(name: str) -> Column:
    column = RENTAL_LISTINGS.get(name)
    assert column is not None
    return column


def compiled(dataset: Any) -> tuple[str, list[Any]]:
    result = compile_query(parse(dataset), TABLE)
    return result.sql, result.params


def where(filters: Any, column: str = "zip_code") -> tuple[str, list[Any]]:
    """The text after WHERE, and the parameters, for a query on ``column`` with these filters."""
    sql, params = compiled({"scopes": [{"column": column}], "filters": filters})
    return sql.split(" WHERE ", 1)[1], params


def S(name: str, kind: str, value: Any) -> ScalarParameter:
    return ScalarParameter(name, kind, value)


def A(name: str, kind: str, *values: Any) -> ArrayParameter:
    return ArrayParameter(name, kind, values)


# --- Statement shape ----------------------------------------------------------------------


def test_seed_example_compiles_to_googlesql_with_named_typed_parameters() -> None:
    """The seed's example: backticks, the table path under an alias, @p parameters, IN UNNEST."""
    sql, params = compiled(SEED_DATASET)
    assert sql == (
        "SELECT `dataset`.`street_address` AS `street_address`, "
        "AVG(`dataset`.`asking_rent`) AS `avg_asking_rent` "
        f"{FROM} "
        "WHERE (`dataset`.`msa` = @p0 AND `dataset`.`bed` IN UNNEST(@p1)) "
        "GROUP BY `dataset`.`street_address` "
        "LIMIT @p2"
    )
    assert params == [S("p0", "STRING", "Seattle, WA"), A("p1", "INT64", 1, 2, 3),
                      S("p2", "INT64", 10000)]  # fmt: skip


def test_plain_query_selects_qualified_columns_without_group_by() -> None:
    """A plain query selects its scopes under their names and binds nothing."""
    sql, params = compiled({"scopes": [{"column": "city"}, {"column": "bed"}]})
    assert sql == f"SELECT `dataset`.`city` AS `city`, `dataset`.`bed` AS `bed` {FROM}"
    assert params == []


@pytest.mark.parametrize(
    ("column", "aggregate", "expression"),
    [
        ("asking_rent", "Avg", "AVG(`dataset`.`asking_rent`)"),
        ("sqft", "Avg", "AVG(`dataset`.`sqft`)"),
        ("asking_rent", "Sum", "SUM(`dataset`.`asking_rent`)"),
        ("sqft", "Sum", "SUM(`dataset`.`sqft`)"),  # INT64 already: no cast
        ("sqft", "Min", "MIN(`dataset`.`sqft`)"),
        ("listed_on", "Max", "MAX(`dataset`.`listed_on`)"),
        ("building_name", "Count", "COUNT(`dataset`.`building_name`)"),
        ("city", "CountDistinct", "COUNT(DISTINCT `dataset`.`city`)"),
    ],
)
def test_each_aggregate_compiles_to_its_function(
    column: str, aggregate: str, expression: str
) -> None:
    """Every aggregate but Median maps to one GoogleSQL aggregate, aliased to its output name."""
    sql, _ = compiled({"scopes": [{"column": column, "aggregate": aggregate}]})
    name = f"{aggregate.lower()}_{column}"
    assert sql == f"SELECT {expression} AS `{name}` {FROM}"


def test_median_without_keys_is_a_window_over_all_filtered_rows() -> None:
    """A global Median: PERCENTILE_CONT over () in a subquery that filters, ANY_VALUE outside."""
    sql, params = compiled(
        {
            "scopes": [{"column": "sqft", "aggregate": "Median"}],
            "filters": [{"column": "city", "filter": {"equals": "Austin"}}],
        }
    )
    assert sql == (
        "SELECT ANY_VALUE(`dataset`.`median_0`) AS `median_sqft` "
        "FROM (SELECT PERCENTILE_CONT(CAST(`dataset`.`sqft` AS FLOAT64), 0.5) OVER () "
        "AS `median_0` FROM `my-project.listings.rental_listings` AS `dataset` "
        "WHERE `dataset`.`city` = @p0) AS `dataset`"
    )
    assert params == [S("p0", "STRING", "Austin")]


def test_median_with_keys_partitions_by_them_beside_the_other_aggregates() -> None:
    """Median, Avg and Count by msa: one window partitioned by the key, the rest grouped outside;
    a FLOAT64 median is not cast; order and limit stay outside."""
    sql, params = compiled(
        {
            "scopes": [
                {"column": "msa"},
                {"column": "asking_rent", "aggregate": "Median"},
                {"column": "asking_rent", "aggregate": "Avg"},
                {"column": "city", "aggregate": "Count"},
            ],
            "filters": [{"column": "bed", "filter": {"gte": 2}}],
            "orderBy": [{"column": "median_asking_rent", "direction": "desc"}],
            "limit": 5,
        }
    )
    assert sql == (
        "SELECT `dataset`.`msa` AS `msa`, "
        "ANY_VALUE(`dataset`.`median_0`) AS `median_asking_rent`, "
        "AVG(`dataset`.`asking_rent`) AS `avg_asking_rent`, "
        "COUNT(`dataset`.`city`) AS `count_city` "
        "FROM (SELECT `dataset`.`msa` AS `msa`, `dataset`.`asking_rent` AS `asking_rent`, "
        "`dataset`.`city` AS `city`, "
        "PERCENTILE_CONT(`dataset`.`asking_rent`, 0.5) OVER (PARTITION BY `dataset`.`msa`) "
        "AS `median_0` "
        "FROM `my-project.listings.rental_listings` AS `dataset` "
        "WHERE `dataset`.`bed` >= @p0) AS `dataset` "
        "GROUP BY `dataset`.`msa` "
        "ORDER BY ANY_VALUE(`dataset`.`median_0`) DESC NULLS LAST "
        "LIMIT @p1"
    )
    assert params == [S("p0", "INT64", 2), S("p1", "INT64", 5)]


def test_median_partitions_a_float_key_by_its_exact_text() -> None:
    """PARTITION BY takes no FLOAT64: a number key partitions by %.17g of it, -0 made 0."""
    sql, _ = compiled(
        {
            "scopes": [
                {"column": "bath"},
                {"column": "bed"},
                {"column": "sqft", "aggregate": "Median"},
                {"column": "lat", "aggregate": "Median"},
                {"column": "sqft", "aggregate": "Median", "alias": "again"},
            ]
        }
    )
    over = (
        "OVER (PARTITION BY FORMAT('%.17g', IF(`dataset`.`bath` = 0, 0.0, `dataset`.`bath`)), "
        "`dataset`.`bed`)"
    )
    assert sql == (
        "SELECT `dataset`.`bath` AS `bath`, `dataset`.`bed` AS `bed`, "  # noqa: S608
        "ANY_VALUE(`dataset`.`median_0`) AS `median_sqft`, "
        "ANY_VALUE(`dataset`.`median_1`) AS `median_lat`, "
        "ANY_VALUE(`dataset`.`median_0`) AS `again` "
        "FROM (SELECT `dataset`.`bath` AS `bath`, `dataset`.`bed` AS `bed`, "
        f"PERCENTILE_CONT(CAST(`dataset`.`sqft` AS FLOAT64), 0.5) {over} AS `median_0`, "
        f"PERCENTILE_CONT(`dataset`.`lat`, 0.5) {over} AS `median_1` "
        "FROM `my-project.listings.rental_listings` AS `dataset`) AS `dataset` "
        "GROUP BY `dataset`.`bath`, `dataset`.`bed`"
    )
    # %.17g is what tells doubles apart: 16 digits would merge these two.
    assert ("%.17g" % 0.1) != ("%.17g" % 0.10000000000000002)  # noqa: UP031
    assert ("%.16g" % 0.1) == ("%.16g" % 0.10000000000000002)  # noqa: UP031


def test_median_columns_are_named_apart_from_the_columns_they_sit_beside() -> None:
    """A source column called median_0 does not collide with the window column."""
    odd = Column("median_0", ColumnType.INTEGER, "a column with an unlucky name")
    query = Query(
        scopes=(
            Scope(column=odd, aggregate=None, output_name="median_0"),
            Scope(column=col("sqft"), aggregate=Aggregate.MEDIAN, output_name="m"),
        ),
        filter=None,
        limit=None,
        order_by=(),
    )
    sql = compile_query(query, TABLE).sql
    assert "AS `_median_0` FROM" in sql
    assert sql.startswith(
        "SELECT `dataset`.`median_0` AS `median_0`, ANY_VALUE(`dataset`.`_median_0`) AS `m` "
    )


def test_group_by_lists_each_plain_column_once() -> None:
    """Plain scopes are the GROUP BY keys; a column exported twice is grouped once."""
    sql, _ = compiled(
        {
            "scopes": [
                {"column": "msa"},
                {"column": "bed", "aggregate": "Count"},
                {"column": "msa", "alias": "metro"},
                {"column": "bed"},
            ]
        }
    )
    assert sql.endswith(f"{FROM} GROUP BY `dataset`.`msa`, `dataset`.`bed`")


# --- Operators ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leaf", "fragment", "params"),
    [
        ({"equals": "Austin"}, "`dataset`.`city` = @p0", [S("p0", "STRING", "Austin")]),
        ({"notEquals": "Austin"}, "`dataset`.`city` <> @p0", [S("p0", "STRING", "Austin")]),
        ({"in": ["A", "B"]}, "`dataset`.`city` IN UNNEST(@p0)", [A("p0", "STRING", "A", "B")]),
        ({"notIn": ["A"]}, "`dataset`.`city` NOT IN UNNEST(@p0)", [A("p0", "STRING", "A")]),
        (
            {"contains": "50%_off"},
            "STRPOS(`dataset`.`city`, @p0) > 0",
            [S("p0", "STRING", "50%_off")],
        ),
        (
            {"startsWith": "San"},
            "STARTS_WITH(`dataset`.`city`, @p0)",
            [S("p0", "STRING", "San")],
        ),
        ({"isNull": True}, "`dataset`.`city` IS NULL", []),
        ({"isNull": False}, "`dataset`.`city` IS NOT NULL", []),
    ],
)
def test_each_text_operator_compiles_with_typed_parameters(
    leaf: dict[str, Any], fragment: str, params: list[Any]
) -> None:
    """Text operators are STRPOS, STARTS_WITH, comparisons or IN UNNEST; values are STRING."""
    assert where([{"column": "city", "filter": leaf}]) == (fragment, params)


@pytest.mark.parametrize(
    ("leaf", "fragment", "params"),
    [
        ({"gt": 2}, "`dataset`.`bed` > @p0", [S("p0", "INT64", 2)]),
        ({"gte": 2.5}, "`dataset`.`bed` >= @p0", [S("p0", "FLOAT64", 2.5)]),
        ({"lt": 3}, "`dataset`.`bed` < @p0", [S("p0", "INT64", 3)]),
        ({"lte": 3}, "`dataset`.`bed` <= @p0", [S("p0", "INT64", 3)]),
        (
            {"between": [1, 3]},
            "`dataset`.`bed` BETWEEN @p0 AND @p1",
            [S("p0", "INT64", 1), S("p1", "INT64", 3)],
        ),
        ({"in": [1, 2]}, "`dataset`.`bed` IN UNNEST(@p0)", [A("p0", "INT64", 1, 2)]),
    ],
)
def test_each_ordering_operator_compiles(
    leaf: dict[str, Any], fragment: str, params: list[Any]
) -> None:
    """Comparisons and between bind their bounds as INT64 or FLOAT64, as the value is."""
    assert where([{"column": "bed", "filter": leaf}], column="city") == (fragment, params)


def test_booleans_and_dates_are_typed() -> None:
    """A boolean is BOOL (not INT64), a date a DATE parameter holding a datetime.date."""
    fragment, params = where(
        [
            {"column": "is_active", "filter": {"equals": True}},
            {"column": "listed_on", "filter": {"between": ["2025-01-01", "2025-01-31"]}},
            {"column": "listed_on", "filter": {"notIn": ["2025-02-01"]}},
        ]
    )
    assert fragment == (
        "(`dataset`.`is_active` = @p0 AND `dataset`.`listed_on` BETWEEN @p1 AND @p2 AND "
        "`dataset`.`listed_on` NOT IN UNNEST(@p3))"
    )
    assert params == [
        S("p0", "BOOL", True),
        S("p1", "DATE", dt.date(2025, 1, 1)),
        S("p2", "DATE", dt.date(2025, 1, 31)),
        A("p3", "DATE", dt.date(2025, 2, 1)),
    ]
    assert all(type(p.value) is dt.date for p in params[1:3])


def test_a_list_mixing_integers_and_fractions_is_one_array_per_type() -> None:
    """No integer is rounded to a double: ints and floats go in arrays of their own types."""
    big = 2**53 + 1  # not a double
    fragment, params = where([{"column": "sqft", "filter": {"in": [1, 2.5, big]}}])
    assert fragment == "(`dataset`.`sqft` IN UNNEST(@p0) OR `dataset`.`sqft` IN UNNEST(@p1))"
    assert params == [A("p0", "INT64", 1, big), A("p1", "FLOAT64", 2.5)]
    fragment, _ = where([{"column": "sqft", "filter": {"notIn": [1, 2.5]}}])
    assert fragment == (
        "(`dataset`.`sqft` NOT IN UNNEST(@p0) AND `dataset`.`sqft` NOT IN UNNEST(@p1))"
    )


def test_tree_filters_nest_with_parentheses_in_value_order() -> None:
    """and/or/not nest with explicit parentheses; parameters are numbered in text order."""
    fragment, params = where(
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
        "((NOT (`dataset`.`bed` = @p0)) OR (`dataset`.`state` IN UNNEST(@p1) AND "
        "(NOT (`dataset`.`bath` > @p2)) AND `dataset`.`is_active` = @p3))"
    )
    assert [p.name for p in params] == ["p0", "p1", "p2", "p3"]


def test_order_by_uses_expressions_and_nulls_last_in_both_directions() -> None:
    """Ordering names outputs by their expressions, so an alias cannot shadow a column."""
    sql, params = compiled(
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
    assert sql == (
        "SELECT `dataset`.`city` AS `city`, AVG(`dataset`.`asking_rent`) AS `bed` "
        f"{FROM} WHERE `dataset`.`bed` >= @p0 GROUP BY `dataset`.`city` "
        "ORDER BY AVG(`dataset`.`asking_rent`) DESC NULLS LAST, "
        "`dataset`.`city` ASC NULLS LAST LIMIT @p1"
    )
    assert params == [S("p0", "INT64", 2), S("p1", "INT64", 5)]


def test_plain_query_may_order_by_a_column_it_does_not_export() -> None:
    """A plain query may sort by any catalog column."""
    sql, _ = compiled({"scopes": [{"column": "city"}], "orderBy": [{"column": "sqft"}]})
    assert sql.endswith("ORDER BY `dataset`.`sqft` ASC NULLS LAST")


def test_the_duckdb_dialect_is_unchanged_by_the_placeholder_hooks() -> None:
    """DuckDB still binds positional ? values, one per list element."""
    result = duckdb_dialect.compile_query(parse(SEED_DATASET))
    assert '"dataset"."bed" IN (?, ?, ?)' in result.sql
    assert result.params == ["Seattle, WA", 1, 2, 3, 10000]


# --- Table paths, identifiers and values -------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["dwe-test.listings.rental_listings", "abcdef.d.t", "a23456789012345678901234567890.D_1.T-2"],
)
def test_valid_table_paths_are_quoted_whole(path: str) -> None:
    """A valid project.dataset.table is kept as given and quoted as one backticked path."""
    parsed = parse_bigquery_table(path)
    assert str(parsed) == path
    assert quote_table(parsed) == f"`{path}`"
    scope = Scope(column=col("city"), aggregate=None, output_name="city")
    sql = compile_query(Query(scopes=(scope,), filter=None, limit=None, order_by=()), path).sql
    assert f"FROM `{path}` AS `dataset`" in sql


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("listings.rental_listings", "PROJECT.DATASET.TABLE"),
        ("a.b.c.d", "PROJECT.DATASET.TABLE"),
        ("example.com:proj.listings.t", "domain-scoped"),
        ("example:proj.listings.t", "domain-scoped"),
        ("My-Project.listings.t", "project ID"),
        ("proj.listings.t", "project ID"),  # 4 characters: under 6
        ("project-.listings.t", "project ID"),
        ("1project.listings.t", "project ID"),
        ("a" * 31 + ".listings.t", "project ID"),
        ("my-project.list-ings.t", "dataset ID"),
        ("my-project.listings`.t", "dataset ID"),
        ("my-project..t", "PROJECT.DATASET.TABLE"),
        ("my-project.listings.", "PROJECT.DATASET.TABLE"),
        ("my-project.listings.t`; DROP TABLE x; --", "table ID"),
        ("my-project.listings.t u", "table ID"),
        ("my-project.listings.t\\", "table ID"),
    ],
)
def test_invalid_table_paths_are_refused(path: str, problem: str) -> None:
    """Every part is checked against BigQuery's naming rules (core.source) before it reaches
    SQL text."""
    scope = Scope(column=col("city"), aggregate=None, output_name="city")
    with pytest.raises(ValueError, match=problem):
        compile_query(Query(scopes=(scope,), filter=None, limit=None, order_by=()), path)


@pytest.mark.parametrize("name", ["a`b", "a b", "", "1abc", "x;y", "é", "a" * 64, "x` --"])
def test_unsafe_identifiers_are_refused(name: str) -> None:
    """Identifiers outside [A-Za-z_][A-Za-z0-9_]* never reach SQL text."""
    with pytest.raises(ValueError, match="identifier"):
        quote_identifier(name)
    scope = Scope(column=col("city"), aggregate=None, output_name=name)
    with pytest.raises(ValueError, match="identifier"):
        compile_query(Query(scopes=(scope,), filter=None, limit=None, order_by=()), TABLE)


@pytest.mark.parametrize(
    "alias",
    ["_TABLE_x", "_file_name", "_PARTITIONTIME", "__root__", "_ColIdentifier", "_CHANGE_TYPE"],
)
def test_output_names_with_a_prefix_bigquery_reserves_are_refused(alias: str) -> None:
    """An output becomes a table column (CTAS), so BigQuery's reserved prefixes are refused."""
    with pytest.raises(ValueError, match="reserves"):
        check_column_name(alias)
    with pytest.raises(ValueError, match="reserves"):
        compiled({"scopes": [{"column": "city", "alias": alias}]})
    assert check_column_name("_tables") == "_tables"  # a prefix only when it is the prefix


def test_a_datetime_is_never_bound_as_a_date() -> None:
    """A datetime sneaking into a hand-built query is refused, alone or in a list."""
    scope = Scope(column=col("city"), aggregate=None, output_name="city")
    moment = dt.datetime(2025, 1, 1, 12, 0)
    for leaf in (
        Condition(col("listed_on"), FilterOp.EQUALS, moment),
        Condition(col("listed_on"), FilterOp.IN, (dt.date(2025, 1, 1), moment)),
    ):
        with pytest.raises(TypeError):
            compile_query(Query(scopes=(scope,), filter=leaf, limit=None, order_by=()), TABLE)
    with pytest.raises(TypeError):
        parameter_type(moment)


def test_hand_built_order_key_must_name_something() -> None:
    """An order key that is neither an output nor a column is a programming error."""
    scope = Scope(column=col("city"), aggregate=Aggregate.COUNT, output_name="n")
    key = OrderKey(name="ghost", column=None, direction=Direction.ASC)
    with pytest.raises(ValueError, match="ghost"):
        compile_query(Query(scopes=(scope,), filter=None, limit=None, order_by=(key,)), TABLE)


_text_values = st.one_of(st.sampled_from([*HOSTILE, "`", "@p0", "\\`"]), st.text(min_size=1))


@settings(max_examples=200, deadline=None)
@given(value=_text_values)
def test_hostile_values_never_change_the_sql_text(value: str) -> None:
    """Any string value compiles to the same GoogleSQL as a harmless one, bound verbatim."""
    try:
        hostile = parse(_with_value(value))
    except InvalidRequest:  # e.g. longer than the value limit: nothing to compile
        return
    got = compile_query(hostile, TABLE)
    want = compile_query(parse(_with_value("x")), TABLE)
    assert got.sql == want.sql
    assert got.params == [
        S("p0", "STRING", value),
        S("p1", "STRING", value),
        A("p2", "STRING", value, value),
        S("p3", "STRING", value),
        S("p4", "INT64", 7),
    ]


@settings(max_examples=200, deadline=None)
@given(alias=st.one_of(st.sampled_from([*HOSTILE, "`x`", "_TABLE_"]), st.text(max_size=70)))
def test_aliases_are_identifiers_or_refused(alias: str) -> None:
    """An alias either fails validation or appears only as one backticked identifier."""
    dataset = {"scopes": [{"column": "bed", "aggregate": "Sum", "alias": alias}]}
    try:
        query = parse(dataset)
    except InvalidRequest:
        return
    if alias.upper().startswith(RESERVED_COLUMN_PREFIXES):
        with pytest.raises(ValueError, match="reserves"):
            compile_query(query, TABLE)
        return
    sql = compile_query(query, TABLE).sql
    assert sql == f"SELECT SUM(`dataset`.`bed`) AS `{alias}` {FROM}"
