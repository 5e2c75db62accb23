"""Unit tests of the parts planner: which queries split, and the plan's invariants."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.parts import (
    PartSpec,
    RowGroupCount,
    composed_object_name,
    header_object_name,
    part_object_name,
    plan_parts,
    single_part_reason,
)
from dataset_export.core.query import Query, parse_dataset


def parse(dataset: Any) -> Query:
    return parse_dataset(dataset, RENTAL_LISTINGS, max_rows=1_000_000)


def groups_of(sizes: list[int], matching: list[int] | None = None) -> list[RowGroupCount]:
    """Contiguous row groups from 0 with these sizes (all rows matching unless given)."""
    groups, start = [], 0
    for i, size in enumerate(sizes):
        groups.append(RowGroupCount(start, start + size, size if matching is None else matching[i]))
        start += size
    return groups


PLAIN = {"scopes": [{"column": "property_id"}, {"column": "city"}]}
FILTER = [{"column": "msa", "filter": {"equals": "Seattle, WA"}}]


@pytest.mark.parametrize(
    ("dataset", "reason"),
    [
        (PLAIN, None),
        ({**PLAIN, "filters": FILTER}, None),
        ({"scopes": [{"column": "sqft", "aggregate": "Avg"}]}, "it aggregates"),
        (
            {"scopes": [{"column": "city"}, {"column": "sqft", "aggregate": "Median"}]},
            "it aggregates",
        ),
        ({**PLAIN, "orderBy": [{"column": "city"}]}, "it is ordered"),
        ({**PLAIN, "limit": 10}, "it has a limit"),
        (
            {**PLAIN, "filters": FILTER, "limit": 10, "orderBy": [{"column": "city"}]},
            "it is ordered",
        ),
    ],
)
def test_only_a_plain_filtered_scan_splits(dataset: Any, reason: str | None) -> None:
    """Aggregates, orders and limits run as one part and say why; plain scans split."""
    assert single_part_reason(parse(dataset)) == reason


def test_the_demo_dataset_splits_into_five_balanced_parts_of_whole_row_groups() -> None:
    """1M rows in 131,072-row groups at 200,000 rows a part: five parts on group boundaries."""
    groups = groups_of([131_072] * 7 + [82_496])
    parts = plan_parts(groups, target_rows=200_000, max_parts=100)
    assert parts == [
        PartSpec(0, 0, 262_144, 262_144),
        PartSpec(1, 262_144, 393_216, 131_072),
        PartSpec(2, 393_216, 655_360, 262_144),
        PartSpec(3, 655_360, 786_432, 131_072),
        PartSpec(4, 786_432, 1_000_000, 213_568),
    ]


def test_few_matching_rows_are_one_part_and_no_matching_row_is_one_part_over_all() -> None:
    """A selective filter that fits the target is one part; zero matches still cover the file."""
    groups = groups_of([100] * 6, [0, 0, 7, 9, 0, 0])
    assert plan_parts(groups, target_rows=1_000, max_parts=10) == [PartSpec(0, 0, 600, 16)]
    empty = groups_of([100] * 3, [0, 0, 0])
    assert plan_parts(empty, target_rows=1, max_parts=10) == [PartSpec(0, 0, 300, 0)]
    assert plan_parts([], target_rows=1, max_parts=10) == [PartSpec(0, 0, 0, 0)]


def test_parts_never_outnumber_the_groups_with_matching_rows_or_max_parts() -> None:
    """Two matching groups give at most two parts, however small the target; max_parts caps."""
    groups = groups_of([100] * 5, [0, 50, 0, 50, 0])
    assert plan_parts(groups, target_rows=1, max_parts=10) == [
        PartSpec(0, 0, 300, 50),
        PartSpec(1, 300, 500, 50),
    ]
    assert len(plan_parts(groups_of([10] * 50), target_rows=1, max_parts=7)) == 7


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ([RowGroupCount(0, 10, 10), RowGroupCount(5, 20, 10)], "contiguous"),
        ([RowGroupCount(10, 20, 10), RowGroupCount(0, 10, 10)], "contiguous"),
        ([RowGroupCount(0, 10, 10), RowGroupCount(12, 20, 8)], "contiguous"),
        ([RowGroupCount(0, 10, 11)], "11 matching rows among 10"),
        ([RowGroupCount(0, 10, -1)], "matching"),
        ([RowGroupCount(10, 5, 0)], "start 10 and stop 5"),
    ],
)
def test_malformed_groups_are_refused(groups: list[RowGroupCount], message: str) -> None:
    """Groups out of order, overlapping, with gaps or impossible counts raise ValueError."""
    with pytest.raises(ValueError, match=message):
        plan_parts(groups, target_rows=5, max_parts=4)


@pytest.mark.parametrize("options", [{"target_rows": 0}, {"max_parts": 0}, {"target_rows": True}])
def test_bad_settings_are_refused(options: dict[str, Any]) -> None:
    """target_rows and max_parts below 1 (or not integers) raise ValueError."""
    settings: dict[str, Any] = {"target_rows": 10, "max_parts": 10, **options}
    with pytest.raises(ValueError, match="positive integer"):
        plan_parts(groups_of([10]), **settings)


@st.composite
def row_groups(draw: st.DrawFn) -> list[RowGroupCount]:
    """Contiguous groups from an arbitrary start, sizes 0-1000, matching counts within them."""
    start = draw(st.integers(0, 10_000))
    groups = []
    for size in draw(st.lists(st.integers(0, 1_000), min_size=1, max_size=60)):
        kind = draw(st.sampled_from(["none", "all", "some"]))
        matching = {"none": 0, "all": size}.get(kind) or draw(st.integers(0, size))
        groups.append(RowGroupCount(start, start + size, matching))
        start += size
    return groups


@given(groups=row_groups(), target_rows=st.integers(1, 5_000), max_parts=st.integers(1, 40))
def test_every_plan_covers_the_file_in_balanced_contiguous_parts(
    groups: list[RowGroupCount], target_rows: int, max_parts: int
) -> None:
    """Coverage, contiguity, group boundaries, the count bounds, the row sum and the balance."""
    parts = plan_parts(groups, target_rows=target_rows, max_parts=max_parts)
    total = sum(g.matching for g in groups)
    matching_groups = sum(1 for g in groups if g.matching > 0)
    assert [p.index for p in parts] == list(range(len(parts)))
    assert parts[0].start == groups[0].start
    assert parts[-1].stop == groups[-1].stop
    assert all(a.stop == b.start for a, b in itertools.pairwise(parts))
    boundaries = {g.start for g in groups} | {groups[-1].stop}
    assert all(p.start in boundaries and p.stop in boundaries for p in parts)
    if total == 0:
        assert parts == [PartSpec(0, groups[0].start, groups[-1].stop, 0)]
        return
    ceil = -(-total // target_rows)
    assert len(parts) == min(ceil, max_parts, matching_groups)
    assert sum(p.expected_rows for p in parts) == total
    for part in parts:
        inside = [g for g in groups if part.start <= g.start and g.stop <= part.stop]
        assert part.expected_rows == sum(g.matching for g in inside) > 0
    # Each part is within one row group's matching rows of the ideal share.
    largest = max(g.matching for g in groups)
    ideal = total / len(parts)
    assert all(abs(p.expected_rows - ideal) <= largest for p in parts)


@given(size=st.integers(1, 500), count=st.integers(1, 200), target_rows=st.integers(1, 30_000))
def test_equal_groups_are_cut_within_half_a_group_of_the_ideal(
    size: int, count: int, target_rows: int
) -> None:
    """Equal full groups: each cut lies within half a group of k * total / n."""
    parts = plan_parts(groups_of([size] * count), target_rows=target_rows, max_parts=1_000)
    total, n = size * count, len(parts)
    for k, part in enumerate(parts[1:], start=1):
        assert abs(part.start - k * total / n) <= size / 2


def test_object_names_are_under_the_export_temporary_prefix() -> None:
    """Parts, the header and the composite live under tmp/<queryUUID>/; each attempt of a part
    has its own object, numbered with five digits and the attempt."""
    assert part_object_name("q-1", 7, 1) == "tmp/q-1/part-00007-a1"
    assert part_object_name("q-1", 7, 2) != part_object_name("q-1", 7, 1)
    assert header_object_name("q-1") == "tmp/q-1/header"
    assert composed_object_name("q-1") == "tmp/q-1/composed"
