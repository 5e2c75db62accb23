"""Unit tests for the synthetic rental-listings generator."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dataset_export.core.catalog import RENTAL_LISTINGS, ColumnType
from dataset_export_tools.dataset import generate
from dataset_export_tools.dataset.generate import (
    CHUNK_ROWS,
    MAX_ROWS,
    PROPERTY_TYPES,
    arrow_schema,
    generate_batches,
    generate_dataset,
    main,
)
from dataset_export_tools.dataset.metros import METROS

SMALL = 20_000
SAMPLE = 200_000

ARROW_TYPE_FOR = {
    ColumnType.STRING: pa.string(),
    ColumnType.INTEGER: pa.int32(),
    ColumnType.NUMBER: pa.float64(),
    ColumnType.DATE: pa.date32(),
    ColumnType.BOOLEAN: pa.bool_(),
}


@pytest.fixture(scope="module")
def sample_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 200k-row file written with the defaults."""
    return generate_dataset(SAMPLE, tmp_path_factory.mktemp("dataset") / "listings.parquet").path


@pytest.fixture(scope="module")
def sample(sample_path: Path) -> pa.Table:
    """The 200k-row file read back whole."""
    return pq.read_table(sample_path)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy())


def test_schema_matches_catalog() -> None:
    """arrow_schema() has the catalog's columns, in order, with matching types and nullability."""
    schema = arrow_schema()
    assert schema.names == RENTAL_LISTINGS.names()
    for column in RENTAL_LISTINGS:
        field = schema.field(column.name)
        assert field.type == ARROW_TYPE_FOR[column.type], column.name
        assert field.nullable == column.nullable, column.name


def test_file_schema_is_arrow_schema(sample: pa.Table) -> None:
    """The written file reads back with exactly the published schema."""
    assert sample.schema.equals(arrow_schema(), check_metadata=False)
    assert sample.num_rows == SAMPLE


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    """Two runs with the same rows and seed write byte-identical files."""
    first = generate_dataset(SMALL, tmp_path / "a.parquet", seed=7)
    second = generate_dataset(SMALL, tmp_path / "b.parquet", seed=7)
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.rows == SMALL
    assert first.bytes == first.path.stat().st_size


def test_different_seed_differs(tmp_path: Path) -> None:
    """Another seed gives other data."""
    a = pq.read_table(generate_dataset(SMALL, tmp_path / "a.parquet", seed=1).path)
    b = pq.read_table(generate_dataset(SMALL, tmp_path / "b.parquet", seed=2).path)
    assert not a.column("asking_rent").equals(b.column("asking_rent"))
    assert not a.column("property_id").equals(b.column("property_id"))


def test_file_holds_exactly_the_batches(tmp_path: Path) -> None:
    """The writer re-slices row groups but keeps every generated row, in order."""
    rows = CHUNK_ROWS + 1234
    path = generate_dataset(rows, tmp_path / "x.parquet", seed=3, row_group_rows=5000).path
    expected = pa.Table.from_batches(list(generate_batches(rows, seed=3)), arrow_schema())
    assert pq.read_table(path).equals(expected)


def test_batches_bounded_by_chunk_size() -> None:
    """Batches never exceed CHUNK_ROWS, so memory stays flat whatever the row count."""
    sizes = [b.num_rows for b in generate_batches(2 * CHUNK_ROWS + 5)]
    assert sizes == [CHUNK_ROWS, CHUNK_ROWS, 5]


def test_row_groups_sized_as_asked(tmp_path: Path) -> None:
    """Every row group but the last holds row_group_rows, including across batch boundaries."""
    rows = CHUNK_ROWS + 10_000
    path = generate_dataset(rows, tmp_path / "x.parquet", row_group_rows=7_000).path
    metadata = pq.ParquetFile(path).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes[:-1] == [7_000] * (len(sizes) - 1)
    assert 0 < sizes[-1] <= 7_000
    assert sum(sizes) == rows


def test_default_row_groups_and_zstd(sample_path: Path) -> None:
    """Defaults give row groups of 131072 rows compressed with zstd."""
    metadata = pq.ParquetFile(sample_path).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [
        131_072,
        SAMPLE - 131_072,
    ]
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    msa_index = arrow_schema().get_field_index("msa")
    assert metadata.row_group(0).sorting_columns == (pq.SortingColumn(msa_index),)


def test_sorted_by_msa_for_pruning(sample: pa.Table) -> None:
    """Rows are sorted by msa, so row-group statistics cover narrow msa ranges."""
    msa = sample.column("msa").to_pylist()
    assert msa == sorted(msa)
    assert set(msa) == {m.name for m in METROS}


def test_property_ids_unique_and_well_formed(sample: pa.Table) -> None:
    """property_id is 'P' plus nine digits and never repeats."""
    ids = sample.column("property_id")
    assert pc.all(pc.match_substring_regex(ids, r"^P\d{9}$")).as_py()
    assert pc.count_distinct(ids).as_py() == SAMPLE


def test_numeric_ranges(sample: pa.Table) -> None:
    """Beds, baths, sizes, years, rents and dates stay in their documented ranges."""
    bed = _column(sample, "bed")
    bath = _column(sample, "bath")
    assert bed.min() == 0
    assert bed.max() == 5
    assert np.all(bath * 2 == np.round(bath * 2))
    assert np.all(bath >= 1)
    assert np.all(bath <= np.maximum(bed, 1) + 0.5)
    assert np.all(_column(sample, "sqft") >= 250)
    year = _column(sample, "year_built")
    assert year.min() >= 1900
    assert year.max() <= 2026
    assert np.median(year) > 1975  # skewed recent
    listed = sample.column("listed_on")
    assert pc.min(listed).as_py().isoformat() >= "2024-01-01"
    assert pc.max(listed).as_py().isoformat() <= "2026-11-26"
    assert 0.65 < np.mean(_column(sample, "is_active")) < 0.75


def test_rents_consistent(sample: pa.Table) -> None:
    """Effective rent never exceeds asking rent; about a fifth carry a 0-8% concession."""
    asking = _column(sample, "asking_rent")
    effective = _column(sample, "effective_rent")
    assert np.all(effective <= asking)
    assert np.all(effective >= asking * 0.92 - 0.01)
    assert np.all(np.round(asking, 2) == asking)
    assert np.all(np.round(effective, 2) == effective)
    assert 0.17 < np.mean(effective < asking) < 0.23


def test_units_and_names_by_property_type(sample: pa.Table) -> None:
    """Houses have one unit and no name; apartments have 2-600 units and mostly a name."""
    ptype = sample.column("property_type")
    assert set(ptype.unique().to_pylist()) == set(PROPERTY_TYPES)
    units = _column(sample, "number_units")
    named = pc.is_valid(sample.column("building_name")).to_numpy(zero_copy_only=False)
    kind = np.asarray(ptype.to_pylist())
    houses = kind == "single_family"
    apartments = kind == "apartment"
    assert 0.5 < np.mean(apartments) < 0.7
    assert np.all(units[houses] == 1)
    assert units[apartments].min() >= 2
    assert units[apartments].max() <= 600
    assert not named[houses].any()
    assert np.mean(named[kind == "townhouse"]) < 0.3
    assert np.mean(named[apartments]) > 0.7


def test_locations_match_metros(sample: pa.Table) -> None:
    """City, state, ZIP prefix and coordinates all belong to the row's metro."""
    cities = {(m.name, c.name, c.state): c.zip3 for m in METROS for c in m.cities}
    centre = {m.name: (m.lat, m.lon) for m in METROS}
    seen = sample.group_by(["msa", "city", "state", "zip_code"]).aggregate(
        [("lat", "mean"), ("lon", "mean")]
    )
    for row in seen.to_pylist():
        key = (row["msa"], row["city"], row["state"])
        assert key in cities, key
        assert re.fullmatch(r"\d{5}", row["zip_code"])
        assert row["zip_code"][:3] in cities[key], row
        lat, lon = centre[row["msa"]]
        assert abs(row["lat_mean"] - lat) < 0.5
        assert abs(row["lon_mean"] - lon) < 0.5


def test_leading_zero_zips_kept(sample: pa.Table) -> None:
    """Boston ZIP codes start with 0 and stay five characters long."""
    boston = sample.filter(pc.equal(sample.column("msa"), "Boston, MA"))
    zips = boston.column("zip_code").to_pylist()
    assert zips
    assert all(len(z) == 5 for z in zips)
    assert sum(z.startswith("0") for z in zips) / len(zips) > 0.9


def _median_one_bed(table: pa.Table, msa: str) -> float:
    mask = pc.and_(pc.equal(table.column("msa"), msa), pc.equal(table.column("bed"), 1))
    return float(np.median(table.filter(mask).column("asking_rent").to_numpy()))


def test_seattle_priced_above_cheap_metro(sample: pa.Table) -> None:
    """Seattle's median one-bed is around $2,000 and well above Wichita's."""
    seattle = _median_one_bed(sample, "Seattle, WA")
    assert 1700 < seattle < 2400
    assert seattle > 1.5 * _median_one_bed(sample, "Wichita, KS")


def test_rent_grows_with_beds(sample: pa.Table) -> None:
    """Average asking rent and size rise with every extra bedroom."""
    by_bed = sample.group_by("bed").aggregate([("asking_rent", "mean"), ("sqft", "mean")])
    by_bed = by_bed.sort_by("bed")
    assert np.all(np.diff(by_bed.column("asking_rent_mean").to_numpy()) > 0)
    assert np.all(np.diff(by_bed.column("sqft_mean").to_numpy()) > 0)


def test_csv_hostile_building_names_present(sample: pa.Table) -> None:
    """A few building names carry commas, quotes, newlines and non-ASCII text."""
    names = [n for n in sample.column("building_name").unique().to_pylist() if n is not None]
    for needle in (",", '"', "\n", "\r\n"):
        assert any(needle in n for n in names), repr(needle)
    assert any(not n.isascii() for n in names)
    hostile = pc.is_in(sample.column("building_name"), pa.array(generate.HOSTILE_BUILDING_NAMES))
    assert 0.0003 < pc.mean(hostile.cast(pa.int8())).as_py() < 0.002


def test_zero_rows_writes_empty_file(tmp_path: Path) -> None:
    """Zero rows still give a readable file with the schema."""
    result = generate_dataset(0, tmp_path / "empty.parquet")
    table = pq.read_table(result.path)
    assert table.num_rows == 0
    assert table.schema.equals(arrow_schema(), check_metadata=False)


def test_bad_arguments_fail_at_the_call() -> None:
    """generate_batches checks its arguments before the first batch is asked for."""
    with pytest.raises(ValueError, match="rows must be"):
        generate_batches(-5)
    with pytest.raises(ValueError, match="seed must not be negative"):
        generate_batches(10, seed=-1)


@pytest.mark.parametrize("rows", [-1, MAX_ROWS + 1])
def test_rejects_impossible_row_counts(tmp_path: Path, rows: int) -> None:
    """Row counts outside 0..10**9 are refused before any file appears."""
    with pytest.raises(ValueError, match="rows must be"):
        generate_dataset(rows, tmp_path / "x.parquet")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash mid-write keeps the previous file intact and removes the temp file."""
    out = tmp_path / "listings.parquet"
    out.write_bytes(b"previous")

    def broken(batches: object, path: str, row_group_rows: int) -> None:
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(generate, "_write_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        generate_dataset(SMALL, out)
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_overwrites_atomically(tmp_path: Path) -> None:
    """An existing output is replaced and no temp file is left behind."""
    out = tmp_path / "listings.parquet"
    out.write_bytes(b"previous")
    generate_dataset(1_000, out)
    assert pq.read_table(out).num_rows == 1_000
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_cli_reports_rate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The command line writes the file and prints rows per second."""
    out = tmp_path / "cli.parquet"
    assert main(["--rows", "5000", "--out", str(out), "--seed", "9"]) == 0
    assert pq.read_metadata(out).num_rows == 5000
    assert "rows/s" in capsys.readouterr().out


def test_metros_table_is_sane() -> None:
    """About a hundred distinct real metros with valid states, ZIP prefixes and weights."""
    names = [m.name for m in METROS]
    assert 90 <= len(names) <= 130
    assert len(set(names)) == len(names)
    assert {"Seattle, WA", "New York, NY", "Los Angeles, CA"} <= set(names)
    for metro in METROS:
        assert metro.name.endswith(f", {metro.state}")
        assert metro.weight > 0
        assert metro.base_rent_1bed > 0
        assert metro.cities
        assert -180 < metro.lon < -60
        assert 18 < metro.lat < 72
        for city in metro.cities:
            assert re.fullmatch(r"[A-Z]{2}", city.state)
            assert all(re.fullmatch(r"\d{3}", z) for z in city.zip3)
