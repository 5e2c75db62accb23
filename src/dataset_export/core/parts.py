"""Exports of any size: which queries split into parts, the plan, and the parts' object names.

An export whose rows can be split runs as parts: each part is a range of the dataset's rows
(whole Parquet row groups, ``[start, stop)`` in file row numbers), run by any instance from its
own Pub/Sub message into its own temporary object ``tmp/<queryUUID>/part-NNNNN``, an independent
gzip member. The part that finishes last composes them, in order, into the export's object
(concatenated gzip members are one gzip file, RFC 1952). The CSV header is a member of its own,
``tmp/<queryUUID>/header``, written once by the composer.

Pure: no Google import, no environment, no I/O. The engine counts the rows each row group
contributes (``ExportEngine.row_groups``); ``plan_parts`` turns those counts into parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from .query import Query

DEFAULT_PART_ROWS: Final = 2_000_000
"""Target rows per part (EXPORT_PART_ROWS); see bench/README.md for the measurement."""
DEFAULT_MAX_PARTS: Final = 100
"""At most this many parts per export (EXPORT_MAX_PARTS)."""
MAX_PARTS_LIMIT: Final = 1024
"""The largest EXPORT_MAX_PARTS: two compose rounds of 32 sources hold 32 * 32 parts."""
TMP_PREFIX: Final = "tmp/"


def tmp_prefix(query_uuid: str) -> str:
    """The folder of an export's temporary objects (parts, header, intermediate composites)."""
    return f"{TMP_PREFIX}{query_uuid}/"


def part_object_name(query_uuid: str, index: int) -> str:
    """The temporary object part ``index`` writes (``tmp/<queryUUID>/part-00007``)."""
    return f"{tmp_prefix(query_uuid)}part-{index:05d}"


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
    """One part of a plan: the file rows ``[start, stop)`` and the rows the plan expects there."""

    index: int
    start: int
    stop: int
    expected_rows: int


def single_part_reason(query: Query) -> str | None:
    """Why ``query`` must run as one part (it aggregates, orders or limits), or None when its
    rows may be split into ranges of the file and the parts' outputs concatenated."""
    raise NotImplementedError


def plan_parts(
    groups: Sequence[RowGroupCount], *, target_rows: int, max_parts: int
) -> list[PartSpec]:
    """Contiguous ranges of whole row groups, in file order, about ``target_rows`` matching rows
    each and at most ``max_parts`` of them; a single part when the matching rows fit one."""
    raise NotImplementedError
