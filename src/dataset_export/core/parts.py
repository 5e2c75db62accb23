"""Exports of any size: which queries split into parts, the plan, and the parts' object names.

An export whose rows can be split runs as parts: each part is a range of the dataset's rows
(whole Parquet row groups, ``[start, stop)`` in file row numbers), run by any instance from its
own Pub/Sub message into its own temporary object ``tmp/<queryUUID>/part-NNNNN-aK`` (part N,
attempt K), an independent gzip member. The part that finishes last composes them, in order,
into the export's object (concatenated gzip members are one gzip file, RFC 1952). The CSV header
is a member of its own, ``tmp/<queryUUID>/header``, written once by the composer.

Pure: no Google import, no environment, no I/O. The engine counts the rows each row group
contributes (``ExportEngine.row_groups``); ``plan_parts`` turns those counts into parts.

Which queries split (``single_part_reason``). A part runs the whole query over its own range of
file rows, and the file is the parts' outputs concatenated in order. That is the single export's
result exactly when the query is a plain filtered scan: a row is kept or not by looking at that
row alone, so the rows the parts keep are, together, the rows the whole file keeps, and without
``orderBy`` any order of them is correct. Every other shape runs as one part:

- An aggregate over the whole table yields one row; parts would yield one row each, and no
  concatenation of them is the answer (Median and CountDistinct do not even combine from
  partial results).
- A grouped aggregate: a group's rows may lie in several parts (the file is sorted by ``msa``
  only, and a group by ``bed`` spans every row group), and each part would write its own row
  for the group. It could split only where no group key value crosses a cut, which the plan
  cannot prove for keys in general.
- ``orderBy``: the concatenation is ordered only if every row of part k sorts before every row
  of part k + 1, which ranges of file rows do not give (not even for ``msa``, the file's sort
  key: ties are broken by the other keys and rows with equal ``msa`` cross row groups).
- ``limit`` (without ``orderBy``, any ``limit`` rows are correct): each part running the query
  would write up to ``limit`` rows of its own, so n parts write up to n times too many. It is
  splittable in principle, since the plan knows each row group's matching count: cover only
  the groups up to the ``limit``-th matching row and give the last part the remainder as its
  own limit. That needs a per-part limit in the plan and in the engine, which parts do not have
  yet; a limit is at most ``EXPORT_MAX_ROWS`` rows, which one part writes well inside the
  function's time limit.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .errors import DatasetChanged
from .query import Query

DEFAULT_PART_ROWS: Final = 2_000_000
"""Target rows per part (EXPORT_PART_ROWS); see bench/README.md for the measurement."""
DEFAULT_MAX_PARTS: Final = 100
"""At most this many parts per export (EXPORT_MAX_PARTS)."""
MAX_PARTS_LIMIT: Final = 1024
"""The largest EXPORT_MAX_PARTS: two compose rounds of 32 sources hold 32 * 32 objects (a CSV
export's header member makes 1025, composed in three rounds; compose calls are metadata-only)."""
TMP_PREFIX: Final = "tmp/"


def tmp_prefix(query_uuid: str) -> str:
    """The folder of an export's temporary objects (parts, header, intermediate composites)."""
    return f"{TMP_PREFIX}{query_uuid}/"


def part_object_name(query_uuid: str, index: int, attempt: int) -> str:
    """The temporary object attempt ``attempt`` of part ``index`` writes
    (``tmp/<queryUUID>/part-00007-a1``): each attempt has its own, so a worker that outlived its
    lease can never replace or delete the object another attempt recorded."""
    return f"{tmp_prefix(query_uuid)}part-{index:05d}-a{attempt}"


def single_object_name(query_uuid: str, attempt: int) -> str:
    """The temporary object attempt ``attempt`` of an export run as one part writes
    (``tmp/<queryUUID>/single-a1``); checked, it gets the export's name as a composite does."""
    return f"{tmp_prefix(query_uuid)}single-a{attempt}"


def composed_object_name(query_uuid: str) -> str:
    """The temporary composite of every part, checked before it gets the export's name."""
    return f"{tmp_prefix(query_uuid)}composed"


def header_object_name(query_uuid: str) -> str:
    """The temporary object holding the CSV header's gzip member."""
    return f"{tmp_prefix(query_uuid)}header"


@dataclass(frozen=True)
class RowGroupCount:
    """One row group of the dataset file and how many of its rows the query's filter keeps."""

    start: int  # the group's first file row number
    stop: int  # one past its last
    matching: int


@dataclass(frozen=True)
class PartSpec:
    """One part of a plan: what the part reads, and the rows the plan expects there.

    DuckDB reads the file rows ``[start, stop)`` (``stop`` None: to the end; ``PartSpec(0)``
    is the whole file); BigQuery reads one stream of the result's read session. ``expected_rows``
    is None where the engine cannot know a part's rows before reading it (a stream).
    """

    index: int
    start: int = 0
    stop: int | None = None
    expected_rows: int | None = None
    stream: str | None = None


@dataclass(frozen=True)
class ExportPlan:
    """How an export runs: its parts in order (one: it runs where it was planned), the rows of
    the whole result when the engine knows them (checked against the file at the end), the
    engine, and why it is a single part when it must be."""

    parts: list[PartSpec]
    rows: int | None
    engine: str
    single_part_reason: str | None = None


def single_part_reason(query: Query) -> str | None:
    """Why ``query`` must run as one part (it aggregates, orders or limits), or None when its
    rows may be split into ranges of the file and the parts' outputs concatenated (the module
    docstring says why each shape is or is not split)."""
    if query.is_aggregate:
        return "it aggregates"
    if query.order_by:
        return "it is ordered"
    if query.limit is not None:
        return "it has a limit"
    return None


def plan_parts(
    groups: Sequence[RowGroupCount], *, target_rows: int, max_parts: int
) -> list[PartSpec]:
    """Contiguous ranges of whole row groups, in file order, about ``target_rows`` matching rows
    each and at most ``max_parts`` of them; a single part when the matching rows fit one.

    ``groups`` are the file's row groups in file order, contiguous. The plan has
    ``n = clamp(ceil(total / target_rows), 1, max_parts)`` parts, and never more than there are
    groups with a matching row, so every part expects at least one row (with no matching row at
    all, one part covers everything). Cut k is placed at the group boundary whose cumulative
    matching count is nearest to ``k * total / n``, moved only as far as needed to leave every
    part a matching group; zero-matching groups stay with the part before them (or the first).
    The parts cover ``[groups[0].start, groups[-1].stop)`` with no gap or overlap.
    """
    if isinstance(target_rows, bool) or not isinstance(target_rows, int) or target_rows < 1:
        raise ValueError(f"target_rows must be a positive integer, got {target_rows!r}")
    if isinstance(max_parts, bool) or not isinstance(max_parts, int) or max_parts < 1:
        raise ValueError(f"max_parts must be a positive integer, got {max_parts!r}")
    _check_groups(groups)
    if not groups:  # a file without row groups: one part that reads nothing
        return [PartSpec(index=0, start=0, stop=0, expected_rows=0)]
    first, last = groups[0].start, groups[-1].stop
    matching = [i for i, group in enumerate(groups) if group.matching > 0]
    prefix = [0]  # prefix[j]: the matching rows of the first j matching groups
    for i in matching:
        prefix.append(prefix[-1] + groups[i].matching)
    total = prefix[-1]
    if total == 0:
        return [PartSpec(index=0, start=first, stop=last, expected_rows=0)]
    m = len(matching)
    n = min(max(1, -(-total // target_rows)), max_parts, m)
    cuts = [0]  # part k holds matching groups cuts[k] .. cuts[k + 1] - 1
    for k in range(1, n):
        # The prefix nearest to k * total / n, in integers: compare prefix * n with k * total.
        ideal = k * total
        j = bisect.bisect_left(prefix, ideal, key=lambda rows: rows * n)
        if j == len(prefix) or (j > 0 and ideal - prefix[j - 1] * n <= prefix[j] * n - ideal):
            j -= 1
        cuts.append(min(max(j, cuts[-1] + 1), m - (n - k)))
    cuts.append(m)
    starts = [first] + [groups[matching[c]].start for c in cuts[1:-1]]
    stops = [*starts[1:], last]
    return [
        PartSpec(
            index=k,
            start=starts[k],
            stop=stops[k],
            expected_rows=prefix[cuts[k + 1]] - prefix[cuts[k]],
        )
        for k in range(n)
    ]


def _check_groups(groups: Sequence[RowGroupCount]) -> None:
    """ValueError unless the groups are contiguous, in file order, with plausible counts."""
    previous: RowGroupCount | None = None
    for i, group in enumerate(groups):
        if not 0 <= group.start <= group.stop:
            raise ValueError(f"row group {i} has start {group.start} and stop {group.stop}")
        if not 0 <= group.matching <= group.stop - group.start:
            raise ValueError(
                f"row group {i} has {group.matching} matching rows among {group.stop - group.start}"
            )
        if previous is not None and group.start != previous.stop:
            raise ValueError(
                f"row groups must be contiguous and in file order: group {i} starts at "
                f"{group.start}, the one before it stops at {previous.stop}"
            )
        previous = group


def check_rows(planned: int | None, found: int) -> None:
    """``DatasetChanged`` unless the rows found are the rows the plan counted (when it did)."""
    if planned is not None and found != planned:
        raise DatasetChanged(
            f"the dataset changed while the export ran: the plan counted {planned} rows, the "
            f"export found {found}; submit the export again"
        )
