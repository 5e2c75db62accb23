"""Deterministic generator of a realistic US rental-listings dataset, written as Parquet.

Determinism: rows are produced in fixed chunks of ``CHUNK_ROWS``; chunk ``i`` draws from its own
``numpy.random.default_rng([seed, i])``, so the same ``rows`` and ``seed`` give a byte-identical
file whatever the writer does with the batches.

Order: the output is sorted by ``msa`` without a sort. Each metro's share of ``rows`` is fixed up
front (largest-remainder allocation by population) and metros are laid out in name order, so a
chunk knows which metros its global row range covers without seeing any other chunk. Memory stays
at about one chunk plus one row group, and each row group spans a narrow ``msa`` range that the
query engine can prune with Parquet statistics.

Speed: everything is vectorised with numpy and pyarrow.compute (no per-row Python), and the next
chunk is generated in a worker thread while the current one is encoded, which roughly halves the
wall time on two cores.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataset_export_tools.dataset.metros import METROS, Metro

DEFAULT_SEED = 20261127
DEFAULT_ROW_GROUP_ROWS = 131_072
# Part of the output's identity: changing it changes every file generated from a seed.
CHUNK_ROWS = 131_072
# property_id is 'P' + 9 digits, so at most 10**9 distinct ids exist.
MAX_ROWS = 10**9

FIRST_LISTED = date(2024, 1, 1)
LAST_LISTED = date(2026, 11, 26)

PROPERTY_TYPES = ("apartment", "condo", "townhouse", "single_family")
_APT, _CONDO, _TOWN, _SFH = range(4)
_PROPERTY_TYPE_POOL = pa.array(PROPERTY_TYPES, pa.string())
_TYPE_SHARES = np.array([0.60, 0.12, 0.09, 0.19])

# Bedroom mix per property type (rows follow PROPERTY_TYPES, columns are 0..5 beds).
_BED_SHARES = np.array(
    [
        [0.14, 0.42, 0.33, 0.09, 0.015, 0.005],
        [0.05, 0.35, 0.42, 0.15, 0.025, 0.005],
        [0.00, 0.08, 0.37, 0.42, 0.11, 0.02],
        [0.00, 0.03, 0.17, 0.45, 0.27, 0.08],
    ]
)
_SQFT_BY_BED = np.array([500.0, 720.0, 1020.0, 1320.0, 1750.0, 2250.0])
_SQFT_TYPE_FACTOR = np.array([1.0, 1.06, 1.12, 1.28])
_RENT_BY_BED = np.array([0.80, 1.0, 1.32, 1.65, 1.95, 2.25])
_RENT_TYPE_FACTOR = np.array([1.0, 1.04, 1.03, 1.06])

# Multiplier coprime with 10**9: row index -> property_id is a bijection that does not look serial.
_ID_MULTIPLIER = 387_420_489

_STREET_NAMES = (
    "Main", "Pine", "Maple", "Oak", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park",
    "Walnut", "Spruce", "Chestnut", "Willow", "Birch", "Jefferson", "Lincoln", "Madison",
    "Franklin", "Jackson", "Adams", "Monroe", "Union", "Church", "Market", "Mill", "River",
    "Spring", "Highland", "Sunset", "Ridge", "Meadow", "Forest", "Valley", "Center", "Broad",
    "Front", "Water", "Bridge", "School", "College", "Prospect", "Grant", "Harrison", "Hickory",
    "Magnolia", "Dogwood", "Laurel", "Sycamore", "Poplar", "Aspen", "Juniper", "Holly",
    "Cherry", "Orchard", "Railroad", "Liberty", "Garden", "Fairview", "Greenwood", "Lakeview",
    "Riverside", "Summit", "Woodland", "Beacon", "Harbor", "Mission", "Alder", "Bayview",
    "Cypress", "1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th", "11th",
    "12th", "14th", "15th", "23rd", "42nd", "Martin Luther King Jr", "Old Mill", "Canyon",
    "Desert View", "Prairie", "Peachtree", "Colonial", "King", "Queen", "Pleasant",
)  # fmt: skip
_STREET_SUFFIXES = ("St", "Ave", "Rd", "Dr", "Blvd", "Ln", "Way", "Pl", "Ct", "Pkwy")
_STREET_SUFFIX_SHARES = np.array([0.30, 0.22, 0.12, 0.10, 0.06, 0.06, 0.05, 0.04, 0.03, 0.02])

_MAX_HOUSE_NUMBER = 29_999
_UNIT_LETTERS = "ABCDEFGH"
_MAX_APT_FLOOR = 30
_MAX_UNIT_NUMBER = 600

_BUILDING_STEMS = (
    "Pine Ridge", "Edison", "Harbor View", "Maple Grove", "Cedar Park", "Lakeshore", "Riverside",
    "Summit", "Highland", "Willow Creek", "Parkside", "Union", "Foundry", "Mercer", "Hawthorne",
    "Brookstone", "Sterling", "Meridian", "Aspen", "Birchwood", "Bayview", "Crescent",
    "Granite", "Oakmont", "Silverleaf", "Stonegate", "Westgate", "Eastlake", "Northpoint",
    "Southgate", "Canal Street", "Liberty", "Heritage", "Madison", "Jefferson", "Lincoln",
    "Monroe", "Franklin", "Arbor", "Alder", "Juniper", "Magnolia", "Sycamore", "Linden",
    "Cypress", "Evergreen", "Tidewater", "Ironworks", "Mill Creek", "Copper Beech", "Fox Run",
    "Quarry", "Vista", "Horizon", "Beacon", "Landmark", "Belmont", "Ashford", "Windsor",
    "Kensington",
)  # fmt: skip
# Name patterns per property type; "{}" is a stem. Townhouses and houses rarely carry a name.
_BUILDING_FORMS = (
    ("The {}", "{} Apartments", "{} Lofts", "{} Flats", "{} Residences", "{} Commons",
     "{} Place", "{} Tower", "{} Court", "{} Village"),
    ("The {}", "{} Condominiums", "{} Lofts", "{} Tower", "{} Residences", "{} Place"),
    ("{} Townhomes", "{} Row", "The Townes at {}", "{} Commons"),
)  # fmt: skip
# A deterministic sprinkle of names that break naive CSV/JSON writers, for export tests.
HOSTILE_BUILDING_NAMES = (
    "Smith, Jones & Co. Lofts",
    'The "Grand" Apartments',
    "Harbor\nView Lofts",
    "Mill Creek\r\nTownhomes",
    'Bayview "East", Tower 2',
    "Résidences du Lac",
    "Niño Lofts",
    "東京 Tower",
    "Café Élan, Building B",
    "Zürich Haus",
    "Sunset 🌅 Villas",
    "O'Brien Court",
)
_HOSTILE_SHARE = 0.001

_NO_DICTIONARY = frozenset({"property_id", "street_address", "effective_rent", "lat", "lon"})
_BYTE_STREAM_SPLIT = ("lat", "lon")


def arrow_schema() -> pa.Schema:
    """The Arrow schema of the generated file, in catalog order (RENTAL_LISTINGS)."""
    return pa.schema(
        [
            pa.field("property_id", pa.string(), nullable=False),
            pa.field("street_address", pa.string(), nullable=False),
            pa.field("city", pa.string(), nullable=False),
            pa.field("state", pa.string(), nullable=False),
            pa.field("zip_code", pa.string(), nullable=False),
            pa.field("msa", pa.string(), nullable=False),
            pa.field("building_name", pa.string(), nullable=True),
            pa.field("property_type", pa.string(), nullable=False),
            pa.field("number_units", pa.int32(), nullable=False),
            pa.field("year_built", pa.int32(), nullable=False),
            pa.field("bed", pa.int32(), nullable=False),
            pa.field("bath", pa.float64(), nullable=False),
            pa.field("sqft", pa.int32(), nullable=False),
            pa.field("asking_rent", pa.float64(), nullable=False),
            pa.field("effective_rent", pa.float64(), nullable=False),
            pa.field("lat", pa.float64(), nullable=False),
            pa.field("lon", pa.float64(), nullable=False),
            pa.field("listed_on", pa.date32(), nullable=False),
            pa.field("is_active", pa.bool_(), nullable=False),
        ]
    )


@dataclass(frozen=True)
class GenerateResult:
    """What generate_dataset wrote and how long it took."""

    rows: int
    path: Path
    seconds: float
    bytes: int


IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

# Categorical draws index an inverse-CDF table with a 12-bit integer: one gather per draw instead
# of a search, at the price of quantising shares to 1/4096.
_CDF_BITS = 12
_CDF_SIZE = 1 << _CDF_BITS
# At most this many five-digit ZIP codes per city and prefix.
_MAX_ZIPS_PER_PREFIX = 25


def _inverse_cdf(shares: Sequence[float] | FloatArray) -> IntArray:
    """Table mapping a uniform integer in [0, _CDF_SIZE) to a category index."""
    weights = np.asarray(shares, dtype=np.float64)
    cumulative = np.cumsum(weights / weights.sum())
    grid = (np.arange(_CDF_SIZE) + 0.5) / _CDF_SIZE
    picks = np.searchsorted(cumulative, grid, side="right")
    return np.minimum(picks, len(weights) - 1).astype(np.int64)


@dataclass(frozen=True)
class _Tables:
    """Lookup tables derived once from METROS and the word lists."""

    msa: pa.Array
    metro_weight: FloatArray
    metro_lat: FloatArray
    metro_lon: FloatArray
    metro_rent: FloatArray
    metro_lat_spread: FloatArray
    metro_lon_spread: FloatArray
    metro_city_cdf: IntArray  # flattened (metros, _CDF_SIZE) -> flat city index
    city_name: pa.Array
    city_state: pa.Array
    city_zip_first: IntArray
    city_zip_count: IntArray
    zip_codes: pa.Array
    type_cdf: IntArray
    bed_cdf: IntArray  # flattened (property types, _CDF_SIZE)
    street_cdf: IntArray
    house_numbers: pa.Array
    streets: pa.Array
    units: pa.Array
    building_names: pa.Array
    building_form_first: IntArray  # per named type: first pool index
    building_form_count: IntArray
    hostile_first: int


def _zip_codes(metros: Sequence[Metro]) -> tuple[list[int], list[int], list[str]]:
    """Give every city its own five-digit ZIP codes under its prefixes, shared with no city."""
    cities = [city for metro in metros for city in metro.cities]
    users: dict[str, list[int]] = {}
    for index, city in enumerate(cities):
        for prefix in city.zip3:
            users.setdefault(prefix, []).append(index)
    # Cities sharing a prefix interleave its suffixes 01..99, so a code maps back to one city.
    suffixes: dict[tuple[int, str], list[int]] = {}
    for prefix, indices in users.items():
        for rank, index in enumerate(indices):
            mine = list(range(1 + rank, 100, len(indices)))[:_MAX_ZIPS_PER_PREFIX]
            suffixes[index, prefix] = mine
    first: list[int] = []
    count: list[int] = []
    codes: list[str] = []
    for index, city in enumerate(cities):
        first.append(len(codes))
        codes += [f"{prefix}{s:02d}" for prefix in city.zip3 for s in suffixes[index, prefix]]
        count.append(len(codes) - first[-1])
    return first, count, codes


@functools.cache
def _tables() -> _Tables:
    metros = sorted(METROS, key=lambda m: m.name)
    city_cdf: list[IntArray] = []
    names: list[str] = []
    states: list[str] = []
    for metro in metros:
        # Principal cities get most listings; suburbs share the rest with falling weights.
        shares = [1.0 / (rank + 1) for rank in range(len(metro.cities))]
        city_cdf.append(len(names) + _inverse_cdf(shares))
        names += [c.name for c in metro.cities]
        states += [c.state for c in metro.cities]
    zip_first, zip_count, zip_codes = _zip_codes(metros)

    streets = [f" {n} {s}" for n in _STREET_NAMES for s in _STREET_SUFFIXES]
    street_shares = np.outer(np.ones(len(_STREET_NAMES)), _STREET_SUFFIX_SHARES).ravel()
    # Index 0 means "no unit"; then Apt <floor><letter>, then Unit <n>.
    units = [""]
    units += [f" Apt {f}{c}" for f in range(1, _MAX_APT_FLOOR + 1) for c in _UNIT_LETTERS]
    units += [f" Unit {n}" for n in range(1, _MAX_UNIT_NUMBER + 1)]

    pool: list[str] = []
    form_first: list[int] = []
    form_count: list[int] = []
    for forms in _BUILDING_FORMS:
        form_first.append(len(pool))
        pool += [form.format(stem) for form in forms for stem in _BUILDING_STEMS]
        form_count.append(len(pool) - form_first[-1])
    hostile_first = len(pool)
    pool += HOSTILE_BUILDING_NAMES

    population = np.array([m.weight for m in metros])
    lat = np.array([m.lat for m in metros])
    # Bigger metros sprawl further from their centre; a degree of longitude shrinks with cos(lat).
    spread = 0.03 + 0.012 * np.sqrt(population)
    return _Tables(
        msa=pa.array([m.name for m in metros], pa.string()),
        metro_weight=population / population.sum(),
        metro_lat=lat,
        metro_lon=np.array([m.lon for m in metros]),
        metro_rent=np.array([m.base_rent_1bed for m in metros]),
        metro_lat_spread=spread,
        metro_lon_spread=spread / np.cos(np.radians(lat)),
        metro_city_cdf=np.concatenate(city_cdf),
        city_name=pa.array(names, pa.string()),
        city_state=pa.array(states, pa.string()),
        city_zip_first=np.array(zip_first, dtype=np.int64),
        city_zip_count=np.array(zip_count, dtype=np.int64),
        zip_codes=pa.array(zip_codes, pa.string()),
        type_cdf=_inverse_cdf(_TYPE_SHARES),
        bed_cdf=np.concatenate([_inverse_cdf(shares) for shares in _BED_SHARES]),
        street_cdf=_inverse_cdf(street_shares),
        house_numbers=pa.array([str(i) for i in range(_MAX_HOUSE_NUMBER + 1)], pa.string()),
        streets=pa.array(streets, pa.string()),
        units=pa.array(units, pa.string()),
        building_names=pa.array(pool, pa.string()),
        building_form_first=np.array(form_first, dtype=np.int64),
        building_form_count=np.array(form_count, dtype=np.int64),
        hostile_first=hostile_first,
    )


def _metro_bounds(rows: int) -> IntArray:
    """First global row of each metro (plus a final ``rows``), by largest-remainder allocation."""
    quota = _tables().metro_weight * rows
    counts = np.floor(quota).astype(np.int64)
    short = rows - int(counts.sum())
    # Stable sort: equal remainders go to the earlier metro, so the allocation is reproducible.
    order = np.argsort(-(quota - counts), kind="stable")
    counts[order[:short]] += 1
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def _property_ids(row: IntArray, seed: int) -> pa.Array:
    """'P' + 9 digits from a bijection of the global row index, as one fixed-width buffer."""
    n = len(row)
    value = ((row * _ID_MULTIPLIER + seed % MAX_ROWS) % MAX_ROWS).astype(np.uint32)
    data = np.empty((n, 10), dtype=np.uint8)
    data[:, 0] = ord("P")
    # uint32 division is several times faster than int64 and 10**9 fits.
    for column in range(9, 0, -1):
        quotient = value // 10
        data[:, column] = value - quotient * 10 + ord("0")
        value = quotient
    offsets = np.arange(0, (n + 1) * 10, 10, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def _take(pool: pa.Array, indices: IntArray, mask: npt.NDArray[np.bool_] | None = None) -> Any:
    return pc.take(pool, pa.array(indices.astype(np.int32), mask=mask))


def _pick(rng: np.random.Generator, counts: IntArray) -> IntArray:
    """A uniform index below each of ``counts`` (float32 is exact enough and twice as fast)."""
    return (rng.random(len(counts), dtype=np.float32) * counts).astype(np.int64)


def _metro_of_rows(bounds: IntArray, first_row: int, n: int) -> IntArray:
    """Metro index of rows ``first_row .. first_row + n``: runs, since rows are sorted by metro."""
    first = int(np.searchsorted(bounds, first_row, side="right")) - 1
    last = int(np.searchsorted(bounds, first_row + n - 1, side="right")) - 1
    starts = np.maximum(bounds[first : last + 1], first_row)
    ends = np.minimum(bounds[first + 1 : last + 2], first_row + n)
    return np.repeat(np.arange(first, last + 1, dtype=np.int64), ends - starts)


def _chunk(
    rng: np.random.Generator, first_row: int, n: int, bounds: IntArray, seed: int
) -> pa.RecordBatch:
    """Generate rows ``first_row .. first_row + n``; draws happen in a fixed order."""
    t = _tables()
    metro = _metro_of_rows(bounds, first_row, n)

    def cdf_draw() -> IntArray:
        return rng.integers(0, _CDF_SIZE, n)

    def uniform() -> npt.NDArray[np.float32]:
        return rng.random(n, dtype=np.float32)

    city = np.take(t.metro_city_cdf, metro * _CDF_SIZE + cdf_draw())
    zip_index = t.city_zip_first[city] + _pick(rng, t.city_zip_count[city])

    ptype = np.take(t.type_cdf, cdf_draw())
    is_sfh = ptype == _SFH
    median_units = np.array([60.0, 40.0, 12.0, 1.0])[ptype]
    units_sigma = np.array([1.2, 1.0, 0.8, 0.0])[ptype]
    units_max = np.array([600, 400, 80, 1])[ptype]
    units_min = np.where(is_sfh, 1, 2)
    number_units = np.clip(
        np.rint(median_units * np.exp(units_sigma * rng.standard_normal(n))), units_min, units_max
    ).astype(np.int64)

    # Listings skew recent; older ones are more likely to be off the market by now.
    n_days = (LAST_LISTED - FIRST_LISTED).days + 1
    day_share = rng.random(n) ** 0.85
    day = np.minimum((day_share * n_days).astype(np.int64), n_days - 1)
    listed_on = (day + (FIRST_LISTED - date(1970, 1, 1)).days).astype(np.int32)
    listed_year = 2024 + (day >= 366) + (day >= 731)
    is_active = uniform() < 0.45 + 0.5 * day_share

    # Building age is exponential (skewed recent); big apartment blocks are newer still.
    age_scale = np.array([36.0, 30.0, 25.0, 45.0])[ptype]
    age_scale = np.where((ptype == _APT) & (number_units >= 100), 18.0, age_scale)
    year_built = np.clip(2026 - (rng.exponential(1.0, n) * age_scale).astype(np.int64), 1900, None)
    year_built = np.minimum(year_built, listed_year)

    bed = np.take(t.bed_cdf, ptype * _CDF_SIZE + cdf_draw())
    half_baths = np.rint(2 * (0.6 + 0.55 * bed) + 0.8 * rng.standard_normal(n))
    bath = np.clip(half_baths, 2, 2 * np.maximum(bed, 1) + 1) / 2

    expected_sqft = _SQFT_BY_BED[bed] * _SQFT_TYPE_FACTOR[ptype]
    size_noise = np.exp(0.14 * rng.standard_normal(n))
    sqft = np.clip(np.rint(expected_sqft * size_noise / 5) * 5, 250, 8000).astype(np.int64)

    age_factor = 0.88 + 0.2 * np.clip((year_built - 1950) / 76, 0, 1)
    trend = np.exp(np.log(1.03) * (day - 540) / 365.25)  # about 3% a year, 1.0 in mid-2025
    asking_rent = np.maximum(
        np.rint(
            t.metro_rent[metro]
            * _RENT_BY_BED[bed]
            * _RENT_TYPE_FACTOR[ptype]
            * size_noise**0.35
            * age_factor
            * trend
            * np.exp(0.12 * rng.standard_normal(n))
        ),
        350.0,
    )
    concession = np.where(uniform() < 0.2, 0.08 * rng.random(n), 0.0)
    effective_rent = np.minimum(np.round(asking_rent * (1 - concession), 2), asking_rent)

    lat = np.round(t.metro_lat[metro] + t.metro_lat_spread[metro] * rng.standard_normal(n), 6)
    lon = np.round(t.metro_lon[metro] + t.metro_lon_spread[metro] * rng.standard_normal(n), 6)

    house_number = np.clip(np.rint(np.exp(rng.normal(6.2, 1.1, n))), 1, _MAX_HOUSE_NUMBER)
    street = np.take(t.street_cdf, cdf_draw())
    # Units stay within the building: a floor or unit number it could really have.
    has_unit = uniform() < np.array([0.6, 0.6, 0.1, 0.0], np.float32)[ptype]
    apt_style = uniform() < 0.6
    floor = _pick(rng, np.clip((number_units + 7) // 8, 1, _MAX_APT_FLOOR))
    letter = rng.integers(0, len(_UNIT_LETTERS), n)
    unit_number = _pick(rng, np.minimum(number_units, _MAX_UNIT_NUMBER))
    unit = np.where(
        apt_style,
        1 + floor * len(_UNIT_LETTERS) + letter,
        1 + _MAX_APT_FLOOR * len(_UNIT_LETTERS) + unit_number,
    )
    unit = np.where(has_unit, unit, 0)
    street_address = pc.binary_join_element_wise(
        _take(t.house_numbers, house_number.astype(np.int64)),
        _take(t.streets, street),
        _take(t.units, unit),
        "",
    )

    named_share = np.array([0.4, 0.85, 0.15, 0.0])[ptype]
    named_share = np.where((ptype == _APT) & (number_units >= 20), 0.95, named_share)
    named = uniform() < named_share
    form_type = np.minimum(ptype, _TOWN)  # single-family rows are never named
    building = t.building_form_first[form_type] + _pick(rng, t.building_form_count[form_type])
    hostile = uniform() < _HOSTILE_SHARE
    hostile_pick = t.hostile_first + rng.integers(0, len(HOSTILE_BUILDING_NAMES), n)
    building = np.where(hostile, hostile_pick, building)

    return pa.RecordBatch.from_arrays(
        [
            _property_ids(np.arange(first_row, first_row + n, dtype=np.int64), seed),
            street_address,
            _take(t.city_name, city),
            _take(t.city_state, city),
            _take(t.zip_codes, zip_index),
            _take(t.msa, metro),
            _take(t.building_names, building, mask=~named),
            _take(_PROPERTY_TYPE_POOL, ptype),
            pa.array(number_units.astype(np.int32)),
            pa.array(year_built.astype(np.int32)),
            pa.array(bed.astype(np.int32)),
            pa.array(bath),
            pa.array(sqft.astype(np.int32)),
            pa.array(asking_rent),
            pa.array(effective_rent),
            pa.array(lat),
            pa.array(lon),
            pa.array(listed_on).view(pa.date32()),
            pa.array(is_active),
        ],
        schema=arrow_schema(),
    )


def generate_batches(rows: int, seed: int = DEFAULT_SEED) -> Iterator[pa.RecordBatch]:
    """Yield the dataset's rows in order, one batch of at most CHUNK_ROWS rows at a time."""
    # Validate here, not inside the generator, so bad arguments fail at the call.
    if not 0 <= rows <= MAX_ROWS:
        raise ValueError(f"rows must be between 0 and {MAX_ROWS}, got {rows}")
    if seed < 0:
        raise ValueError(f"seed must not be negative, got {seed}")
    return _batches(rows, seed, _metro_bounds(rows))


def _batches(rows: int, seed: int, bounds: IntArray) -> Iterator[pa.RecordBatch]:
    for chunk_index in range(math.ceil(rows / CHUNK_ROWS)):
        first = chunk_index * CHUNK_ROWS
        rng = np.random.default_rng([seed, chunk_index])
        yield _chunk(rng, first, min(CHUNK_ROWS, rows - first), bounds, seed)


def _prefetch(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Generate the next batch in a worker thread while the caller encodes the current one."""
    # numpy and Arrow release the GIL in their kernels, so generation and zstd overlap on 2 cores.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataset-gen") as pool:
        ahead = pool.submit(next, batches, None)
        while (batch := ahead.result()) is not None:
            ahead = pool.submit(next, batches, None)
            yield batch


def _write_parquet(batches: Iterator[pa.RecordBatch], path: str, row_group_rows: int) -> None:
    schema = arrow_schema()
    with pq.ParquetWriter(
        path,
        schema,
        compression="zstd",
        # Measured per column: dictionaries pay off for repeated values only; byte-stream-split
        # makes coordinates smaller and faster to compress than plain or dictionary encoding.
        use_dictionary=[name for name in schema.names if name not in _NO_DICTIONARY],
        column_encoding=dict.fromkeys(_BYTE_STREAM_SPLIT, "BYTE_STREAM_SPLIT"),
        # Declares the msa order in every row group, for engines that can exploit it.
        sorting_columns=[pq.SortingColumn(schema.get_field_index("msa"))],
    ) as writer:
        # Row groups may straddle batches: re-slice so every group but the last is full size.
        pending: list[pa.RecordBatch] = []
        pending_rows = 0
        for batch in batches:
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= row_group_rows:
                table = pa.Table.from_batches(pending, schema)
                full = pending_rows - pending_rows % row_group_rows
                writer.write_table(table.slice(0, full), row_group_size=row_group_rows)
                pending = table.slice(full).to_batches()
                pending_rows -= full
        if pending_rows:
            writer.write_table(pa.Table.from_batches(pending, schema), row_group_rows)


def generate_dataset(
    rows: int,
    out: Path,
    *,
    seed: int = DEFAULT_SEED,
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
) -> GenerateResult:
    """Write ``rows`` listings to ``out`` as zstd Parquet, atomically (temp file, then rename).

    Memory stays near ``CHUNK_ROWS + row_group_rows`` rows whatever ``rows`` is.
    """
    if row_group_rows < 1:
        raise ValueError(f"row_group_rows must be positive, got {row_group_rows}")
    batches = generate_batches(rows, seed)  # validates rows before any file is created
    out = Path(out)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    started = time.perf_counter()
    try:
        _write_parquet(_prefetch(batches), str(tmp), row_group_rows)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - started
    return GenerateResult(rows=rows, path=out, seconds=seconds, bytes=out.stat().st_size)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m dataset_export_tools.dataset.generate --rows N --out PATH``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, required=True, help="number of listings")
    parser.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--row-group-rows", type=int, default=DEFAULT_ROW_GROUP_ROWS)
    args = parser.parse_args(argv)
    result = generate_dataset(
        args.rows, args.out, seed=args.seed, row_group_rows=args.row_group_rows
    )
    rate = result.rows / result.seconds if result.seconds > 0 else float("inf")
    print(
        f"wrote {result.rows:,} rows to {result.path} in {result.seconds:.3f} s "
        f"({rate:,.0f} rows/s, {result.bytes:,} bytes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
