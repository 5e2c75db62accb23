"""Unit tests of the query model: every validation rule, and the shapes it accepts."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dataset_export.core.catalog import RENTAL_LISTINGS, Aggregate, FilterOp
from dataset_export.core.errors import InvalidRequest
from dataset_export.core.query import AllOf, AnyOf, Condition, Negation, parse_dataset
from dataset_export_tools.demo import SEED_DATASET


def parse(dataset: Any, max_rows: int = 1_000_000) -> Any:
    return parse_dataset(dataset, RENTAL_LISTINGS, max_rows=max_rows)


def rejects(dataset: Any, field: str, *words: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        parse(dataset)
    assert caught.value.field == field, caught.value.message
    for word in words:
        assert word in caught.value.message, caught.value.message
    return caught.value


def test_seed_example_parses_with_group_by_and_output_names() -> None:
    """The seed's own example is a grouped query with the documented output names."""
    query = parse(SEED_DATASET)
    assert query.output_names == ("street_address", "avg_asking_rent")
    assert query.is_aggregate
    assert [s.column.name for s in query.group_by] == ["street_address"]
    assert query.limit == 10000
    assert isinstance(query.filter, AllOf)
    msa, bed = query.filter.children
    assert msa == Condition(RENTAL_LISTINGS.get("msa"), FilterOp.EQUALS, "Seattle, WA")  # type: ignore[arg-type]
    assert isinstance(bed, Condition)
    assert bed.value == (1, 2, 3)


def test_plain_query_has_no_group_by() -> None:
    """Without aggregates nothing is grouped."""
    query = parse({"scopes": [{"column": "city"}, {"column": "bed"}]})
    assert not query.is_aggregate
    assert query.group_by == ()
    assert query.filter is None


@pytest.mark.parametrize(
    ("spelling", "aggregate"),
    [
        ("avg", Aggregate.AVG),
        ("SUM", Aggregate.SUM),
        ("countdistinct", Aggregate.COUNT_DISTINCT),
        ("Median", Aggregate.MEDIAN),
        ("mIn", Aggregate.MIN),
    ],
)
def test_aggregates_are_case_insensitive(spelling: str, aggregate: Aggregate) -> None:
    """Aggregate names match in any case and name the output column in lower case."""
    query = parse({"scopes": [{"column": "sqft", "aggregate": spelling}]})
    assert query.scopes[0].aggregate is aggregate
    assert query.output_names == (f"{aggregate.value.lower()}_sqft",)


def test_alias_names_the_output() -> None:
    """An alias replaces the derived output name."""
    query = parse({"scopes": [{"column": "asking_rent", "aggregate": "Avg", "alias": "rent"}]})
    assert query.output_names == ("rent",)


def test_tree_filters_and_nulls_are_ignored() -> None:
    """and/or/not trees parse; null entries vanish; one-child groups collapse."""
    query = parse(
        {
            "scopes": [{"column": "city"}],
            "filters": {
                "and": [
                    None,
                    {
                        "or": [
                            {"column": "bed", "filter": {"gte": 2}},
                            {"column": "is_active", "filter": {"equals": True}},
                        ]
                    },
                    {"not": {"column": "state", "filter": {"in": ["CA", "NY"]}}},
                ]
            },
        }
    )
    assert isinstance(query.filter, AllOf)
    either, negated = query.filter.children
    assert isinstance(either, AnyOf)
    assert isinstance(negated, Negation)


def test_public_docs_and_of_null_means_no_filter() -> None:
    """``{"and": [null]}`` from the public API reference, and any empty ``and``, filter nothing."""
    for filters in (
        {"and": [None]},
        {"and": []},
        [None, None],
        [],
        {"and": [{"and": []}, [None]]},
        None,
    ):
        assert parse({"scopes": [{"column": "city"}], "filters": filters}).filter is None, filters


def test_an_empty_and_beside_a_condition_leaves_the_condition() -> None:
    """Inside an ``and``, a branch without conditions adds nothing."""
    bed = {"column": "bed", "filter": {"equals": 2}}
    query = parse({"scopes": [{"column": "city"}], "filters": {"and": [{"and": []}, bed]}})
    column = RENTAL_LISTINGS.get("bed")
    assert column is not None
    assert query.filter == Condition(column, FilterOp.EQUALS, 2)


BED = {"column": "bed", "filter": {"equals": 2}}


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"or": []}, "dataset.filters.or"),
        ({"or": [None]}, "dataset.filters.or"),
        ({"or": [None, None]}, "dataset.filters.or"),
        ([{"or": []}], "dataset.filters[0].or"),
        ({"and": [{"or": []}]}, "dataset.filters.and[0].or"),
        ({"and": [BED, {"or": [None]}]}, "dataset.filters.and[1].or"),
        ({"not": {"or": []}}, "dataset.filters.not.or"),
        ({"or": [BED, {"or": []}]}, "dataset.filters.or[1].or"),
        ({"not": None}, "dataset.filters.not"),
        ({"not": {"and": []}}, "dataset.filters.not"),
        ({"not": {"and": [None]}}, "dataset.filters.not"),
        ({"not": []}, "dataset.filters.not"),
        ({"not": {"not": None}}, "dataset.filters.not.not"),
        ({"or": [BED, {"and": []}]}, "dataset.filters.or[1]"),
        ({"or": [[None], BED]}, "dataset.filters.or[0]"),
        ({"or": [{"and": [None]}]}, "dataset.filters.or[0]"),
    ],
)
def test_or_and_not_without_a_condition_are_refused(filters: Any, field: str) -> None:
    """An ``or`` or ``not`` with no condition left once nulls are dropped is a 400 at its field."""
    error = rejects({"scopes": [{"column": "city"}], "filters": filters}, field)
    assert "no condition" in error.message


@pytest.mark.parametrize(
    ("filters", "field"),
    [({}, "dataset.filters"), ({"not": {}}, "dataset.filters.not"), ([{}], "dataset.filters[0]")],
)
def test_an_empty_filter_object_is_refused(filters: Any, field: str) -> None:
    """``{}`` where a filter belongs is a 400 that says what a filter looks like."""
    rejects({"scopes": [{"column": "city"}], "filters": filters}, field, "empty object", "column")


@pytest.mark.parametrize(
    ("scopes", "first", "second"),
    [
        ([{"column": "city"}, {"column": "state", "alias": "CITY"}], "city", "CITY"),
        (
            [
                {"column": "msa"},
                {"column": "asking_rent", "aggregate": "Avg"},
                {"column": "sqft", "aggregate": "Max", "alias": "AVG_ASKING_RENT"},
            ],
            "avg_asking_rent",
            "AVG_ASKING_RENT",
        ),
        ([{"column": "bed", "alias": "Beds"}, {"column": "bath", "alias": "beds"}], "Beds", "beds"),
    ],
)
def test_output_names_must_differ_ignoring_case(
    scopes: list[dict[str, Any]], first: str, second: str
) -> None:
    """Two output names that differ only in case are a 400 naming both scopes."""
    last = len(scopes) - 1
    error = rejects({"scopes": scopes}, f"dataset.scopes[{last}]", first, second)
    assert f"dataset.scopes[{last - 1}]" in error.message
    assert "ignoring case" in error.message


def test_several_operators_in_one_filter_all_hold() -> None:
    """``{"gte": 1000, "lte": 2000}`` is a range: both conditions hold."""
    query = parse(
        {
            "scopes": [{"column": "city"}],
            "filters": [{"column": "asking_rent", "filter": {"gte": 1000, "lte": 2000}}],
        }
    )
    assert isinstance(query.filter, AllOf)
    assert [c.op for c in query.filter.children] == [FilterOp.GTE, FilterOp.LTE]  # type: ignore[union-attr]


def test_dates_become_dates_and_between_keeps_order() -> None:
    """Date values are ISO strings turned into dates; between takes [low, high]."""
    query = parse(
        {
            "scopes": [{"column": "city"}],
            "filters": [
                {"column": "listed_on", "filter": {"between": ["2025-01-01", "2025-06-30"]}}
            ],
        }
    )
    assert isinstance(query.filter, Condition)
    assert query.filter.value == (dt.date(2025, 1, 1), dt.date(2025, 6, 30))


@pytest.mark.parametrize(
    ("dataset", "field", "words"),
    [
        (
            {"scopes": [{"column": "city"}, {"column": "rentt"}]},
            "dataset.scopes[1].column",
            ("unknown column 'rentt'",),
        ),
        (
            {"scopes": [{"column": "asking_rnt"}]},
            "dataset.scopes[0].column",
            ("did you mean 'asking_rent'",),
        ),
        ({"scopes": []}, "dataset.scopes", ("at least one column",)),
        ({}, "dataset.scopes", ("required",)),
        ({"scopes": {"column": "city"}}, "dataset.scopes", ("must be a list",)),
        ({"scopes": ["city"]}, "dataset.scopes[0]", ("must be an object",)),
        ({"scopes": [{"column": 3}]}, "dataset.scopes[0].column", ("a string",)),
        (
            {"scopes": [{"column": "city", "aggregate": "Avg"}]},
            "dataset.scopes[0].aggregate",
            ("does not apply", "string column 'city'", "Count"),
        ),
        (
            {"scopes": [{"column": "listed_on", "aggregate": "Sum"}]},
            "dataset.scopes[0].aggregate",
            ("does not apply",),
        ),
        (
            {"scopes": [{"column": "is_active", "aggregate": "Avg"}]},
            "dataset.scopes[0].aggregate",
            ("does not apply",),
        ),
        (
            {"scopes": [{"column": "sqft", "aggregate": "Mean"}]},
            "dataset.scopes[0].aggregate",
            ("unknown aggregate 'Mean'",),
        ),
        ({"scopes": [{"column": "sqft", "alias": "1st"}]}, "dataset.scopes[0].alias", ("letters",)),
        (
            {"scopes": [{"column": "sqft", "alias": "a; DROP TABLE x"}]},
            "dataset.scopes[0].alias",
            ("letters",),
        ),
        (
            {"scopes": [{"column": "bed"}, {"column": "bed"}]},
            "dataset.scopes[1]",
            ("appears twice", "alias"),
        ),
        (
            {"scopes": [{"column": "bed", "agregate": "Avg"}]},
            "dataset.scopes[0].agregate",
            ("unknown field", "did you mean 'aggregate'"),
        ),
        ({"scopes": [{"column": "bed"}], "extra": 1}, "dataset.extra", ("unknown field 'extra'",)),
        ({"scopes": [{"column": "bed"}], "limit": 0}, "dataset.limit", ("positive",)),
        ({"scopes": [{"column": "bed"}], "limit": -5}, "dataset.limit", ("positive",)),
        ({"scopes": [{"column": "bed"}], "limit": 2.5}, "dataset.limit", ("whole number",)),
        ({"scopes": [{"column": "bed"}], "limit": "10"}, "dataset.limit", ("whole number",)),
        ({"scopes": [{"column": "bed"}], "limit": True}, "dataset.limit", ("whole number",)),
        (
            {"scopes": [{"column": "bed"}], "limit": 1_000_001},
            "dataset.limit",
            ("maximum of 1000000",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "bed", "filter": {"contains": "2"}}],
            },
            "dataset.filters[0].filter.contains",
            ("does not fit integer column 'bed'",),
        ),
        (
            {"scopes": [{"column": "bed"}], "filters": [{"column": "city", "filter": {"gt": "A"}}]},
            "dataset.filters[0].filter.gt",
            ("does not fit string column",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "is_active", "filter": {"in": [True]}}],
            },
            "dataset.filters[0].filter.in",
            ("does not fit boolean",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "bed", "filter": {"equalz": 2}}],
            },
            "dataset.filters[0].filter.equalz",
            ("unknown filter operator", "did you mean 'equals'"),
        ),
        (
            {"scopes": [{"column": "bed"}], "filters": [{"column": "bed", "filter": {}}]},
            "dataset.filters[0].filter",
            ("must name an operator",),
        ),
        (
            {"scopes": [{"column": "bed"}], "filters": [{"column": "bed"}]},
            "dataset.filters[0].filter",
            ("required",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "bed", "filter": {"equals": "two"}}],
            },
            "dataset.filters[0].filter.equals",
            ("must be a number", "a string"),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "bed", "filter": {"equals": True}}],
            },
            "dataset.filters[0].filter.equals",
            ("must be a number", "a boolean"),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "city", "filter": {"equals": 5}}],
            },
            "dataset.filters[0].filter.equals",
            ("must be a string",),
        ),
        (
            {"scopes": [{"column": "bed"}], "filters": [{"column": "bed", "filter": {"in": []}}]},
            "dataset.filters[0].filter.in",
            ("non-empty list",),
        ),
        (
            {"scopes": [{"column": "bed"}], "filters": [{"column": "bed", "filter": {"in": 3}}]},
            "dataset.filters[0].filter.in",
            ("non-empty list",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "bed", "filter": {"in": [1, "x"]}}],
            },
            "dataset.filters[0].filter.in[1]",
            ("must be a number",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "bed", "filter": {"between": [1]}}],
            },
            "dataset.filters[0].filter.between",
            ("two values",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "bed", "filter": {"between": [3, 1]}}],
            },
            "dataset.filters[0].filter.between",
            ("low value above",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "bed", "filter": {"isNull": "yes"}}],
            },
            "dataset.filters[0].filter.isNull",
            ("true or false",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "listed_on", "filter": {"gt": "31/01/2025"}}],
            },
            "dataset.filters[0].filter.gt",
            ("ISO-8601",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "city", "filter": {"contains": ""}}],
            },
            "dataset.filters[0].filter.contains",
            ("must not be empty",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": [{"column": "bed", "filter": {"equals": 2**70}}],
            },
            "dataset.filters[0].filter.equals",
            ("64-bit",),
        ),
        (
            {"scopes": [{"column": "bed"}], "filters": {"and": {"column": "bed"}}},
            "dataset.filters.and",
            ("must be a list",),
        ),
        (
            {"scopes": [{"column": "bed"}], "filters": {"and": [], "or": []}},
            "dataset.filters",
            ("exactly one of",),
        ),
        (
            {
                "scopes": [{"column": "bed"}],
                "filters": {"or": [{"column": "nope", "filter": {"equals": 1}}]},
            },
            "dataset.filters.or[0].column",
            ("unknown column 'nope'",),
        ),
        (
            {"scopes": [{"column": "bed"}], "filters": "msa = 'x'"},
            "dataset.filters",
            ("must be an object",),
        ),
        (
            {"scopes": [{"column": "bed"}], "orderBy": [{"column": "city"}], "filters": None},
            None,
            (),
        ),
        (
            {
                "scopes": [{"column": "bed"}, {"column": "sqft", "aggregate": "Avg"}],
                "orderBy": [{"column": "city"}],
            },
            "dataset.orderBy[0].column",
            ("not an exported column",),
        ),
        (
            {"scopes": [{"column": "bed"}], "orderBy": [{"column": "bed", "direction": "up"}]},
            "dataset.orderBy[0].direction",
            ("'asc' or 'desc'",),
        ),
        ("scopes", "dataset", ("must be an object",)),
    ],
)
def test_invalid_datasets_name_the_field(
    dataset: Any, field: str | None, words: tuple[str, ...]
) -> None:
    """Each invalid dataset is a 400 that names the field and the problem."""
    if field is None:
        parse(dataset)  # plain queries may order by any catalog column
        return
    rejects(dataset, field, *words)


def test_deep_nesting_is_refused() -> None:
    """A filter tree deeper than the limit is a 400, not a recursion crash."""
    node: Any = {"column": "bed", "filter": {"equals": 1}}
    for _ in range(40):
        node = {"not": node}
    rejects(
        {"scopes": [{"column": "bed"}], "filters": node},
        "dataset.filters" + ".not" * 17,
        "nests deeper",
    )


def test_too_many_in_values_are_refused() -> None:
    """``in`` lists are bounded."""
    rejects(
        {
            "scopes": [{"column": "bed"}],
            "filters": [{"column": "bed", "filter": {"in": list(range(1001))}}],
        },
        "dataset.filters[0].filter.in",
        "at most 1000",
    )


def test_order_by_aggregate_output_and_direction() -> None:
    """An aggregate query may order by its outputs, in either direction, any case."""
    query = parse(
        {
            "scopes": [{"column": "msa"}, {"column": "asking_rent", "aggregate": "Median"}],
            "orderBy": [{"column": "median_asking_rent", "direction": "DESC"}, {"column": "msa"}],
        }
    )
    assert [(k.name, k.direction.value) for k in query.order_by] == [
        ("median_asking_rent", "desc"),
        ("msa", "asc"),
    ]
    assert query.order_by[0].column is None
