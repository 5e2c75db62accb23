"""Unit tests of the CSV and JSONL encoders and the gzip sink."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import math
import os
import zlib
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_export.core.catalog import Column, ColumnType
from dataset_export.core.formats import ExportFormat
from dataset_export.core.query import Query, Scope
from dataset_export.engine.gzip_sink import GzipSink, default_gzip_backend
from dataset_export.engine.render import (
    CsvEncoder,
    Encoder,
    JsonlEncoder,
    LinesEncoder,
    csv_field,
    csv_header,
    encoder_for,
)
from dataset_export.engine.sql.duckdb_dialect import compile_export

HOSTILE_TEXT = [
    "Smith, Jones & Co. Lofts",
    'The "Grand" Apartments',
    "Harbor\nView Lofts",
    "Mill Creek\r\nTownhomes",
    "carriage\rreturn",
    'Bayview "East", Tower 2',
    "Résidences du Lac",
    "東京 Tower",
    "Sunset 🌅 Villas",
    "back\\slash",
    "tab\there",
    "bell\x07 and nul\x00",
    "\u2028line separator",
    "",
    " leading and trailing ",
    '"',
    ",",
]


def sample_batch() -> pa.RecordBatch:
    """A batch with every exported type, nulls, hostile text and awkward floats."""
    n = len(HOSTILE_TEXT)
    floats = [2150.5, 784.0, 0.1, float("nan"), float("inf"), -float("inf"), None, 1e20, -0.0]
    floats += [1 / 3, 5e-324, 1e-7, 123456789.125, -42.0, 1.5, 2.0, 1e16]
    return pa.RecordBatch.from_arrays(
        [
            pa.array([*HOSTILE_TEXT[:-1], None], pa.string()),
            pa.array([i if i % 5 else None for i in range(n)], pa.int64()),
            pa.array(floats[:n], pa.float64()),
            pa.array([dt.date(2025, 1, 31) if i % 4 else None for i in range(n)], pa.date32()),
            pa.array([[True, False, None][i % 3] for i in range(n)], pa.bool_()),
        ],
        names=["text", "count", "rent", "listed_on", "is_active"],
    )


NAMES = ["text", "count", "rent", "listed_on", "is_active"]


def gzip_roundtrip(encoder: Encoder, batches: list[pa.RecordBatch], **sink: Any) -> bytes:
    """The decompressed bytes of a header plus ``batches`` written through a GzipSink."""
    out = io.BytesIO()
    with GzipSink(out, **sink) as gz:
        gz.write(encoder.header())
        for batch in batches:
            gz.write(encoder.encode(batch))
    assert gz.uncompressed_bytes == len(gzip.decompress(out.getvalue()))
    assert gz.compressed_bytes == len(out.getvalue())
    return gzip.decompress(out.getvalue())


def expected_cells(batch: pa.RecordBatch) -> list[list[str]]:
    """What each CSV cell must read back as (Python's csv module reads null as '')."""
    rows = []
    for row in batch.to_pylist():
        cells = []
        for value in row.values():
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                cells.append("")
            elif isinstance(value, bool):
                cells.append("true" if value else "false")
            elif isinstance(value, dt.date):
                cells.append(value.isoformat())
            else:
                cells.append(value if isinstance(value, str) else repr(value))
        rows.append(cells)
    return rows


def test_csv_round_trips_hostile_text_through_gzip_and_the_csv_module() -> None:
    """Commas, quotes, CR, LF, CRLF and non-ASCII survive gzip and Python's csv reader."""
    batch = sample_batch()
    text = gzip_roundtrip(CsvEncoder(NAMES), [batch, batch.slice(3, 5)]).decode("utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == NAMES
    want = expected_cells(batch) + expected_cells(batch.slice(3, 5))
    assert len(rows) == 1 + len(want)
    for got, expected in zip(rows[1:], want, strict=True):
        assert got[0] == expected[0]
        assert got[1] == expected[1]
        assert got[3:] == expected[3:]
        if expected[2]:
            assert float(got[2]) == float(expected[2])  # shortest text that reads back
        else:
            assert got[2] == ""


def test_csv_formats_values_as_documented() -> None:
    """Booleans true/false, ISO dates, floats with a fraction, empty nulls, text quoted only
    where needed, LF endings."""
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(["a", None, "", "Akron, OH", 'say "hi"']),
            pa.array([2150.5, float("nan"), 784.0, 1e-05, 1e16]),
            pa.array([True, None, False, True, True]),
            pa.array([dt.date(2025, 1, 31), None, dt.date(1999, 12, 1), None, None]),
        ],
        names=["s", "f", "b", "d"],
    )
    assert CsvEncoder(["s", "f", "b", "d"]).encode(batch).tobytes() == (
        b'a,2150.5,true,2025-01-31\n,,,\n"",784.0,false,1999-12-01\n'
        b'"Akron, OH",1e-05,true,\n"say ""hi""",1e+16,true,\n'
    )


def test_csv_header_quotes_only_where_needed() -> None:
    """Header names are RFC 4180 fields; a plain name is written bare."""
    assert csv_header(["street_address", "avg_asking_rent"]) == b"street_address,avg_asking_rent\n"
    assert csv_header(["a,b", 'say "hi"', "x\ny", ""]) == b'"a,b","say ""hi""","x\ny",""\n'
    assert csv_field("plain") == "plain"


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.text()), min_size=1, max_size=20))
def test_csv_round_trips_any_text(values: list[str | None]) -> None:
    """Any Unicode text (and null as an empty field) reads back through the csv module."""
    batch = pa.RecordBatch.from_arrays(
        [pa.array(values, pa.string()), pa.array(values)], ["a", "b"]
    )
    data = CsvEncoder(["a", "b"]).encode(batch).tobytes().decode("utf-8")
    rows = list(csv.reader(io.StringIO(data, newline="")))
    assert rows == [[v or "", v or ""] for v in values]


def test_jsonl_types_and_key_order() -> None:
    """Numbers stay numbers (floats as floats), NaN and inf become null, dates ISO strings."""
    batch = sample_batch()
    text = gzip_roundtrip(JsonlEncoder(NAMES), [batch]).decode("utf-8")
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert len(lines) == batch.num_rows
    for line, row in zip(lines, batch.to_pylist(), strict=True):
        obj = json.loads(line)
        assert list(obj) == NAMES
        assert obj["text"] == row["text"]
        assert obj["count"] == row["count"]
        assert obj["count"] is None or type(obj["count"]) is int
        rent = row["rent"]
        if rent is None or not math.isfinite(rent):
            assert obj["rent"] is None
        else:
            assert type(obj["rent"]) is float
            assert obj["rent"] == rent
        assert obj["listed_on"] == (row["listed_on"] and row["listed_on"].isoformat())
        assert obj["is_active"] is row["is_active"]
    assert '"rent":784.0,' in text
    assert '"text":"東京 Tower"' in text  # non-ASCII kept as UTF-8


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.text()), min_size=1, max_size=20),
    numbers=st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=20,
                     max_size=20),
)  # fmt: skip
def test_jsonl_text_is_escaped_exactly_like_duckdb_to_json(
    values: list[str | None], numbers: list[int | None]
) -> None:
    """Strings, integers and nulls are written byte for byte as DuckDB's to_json writes them,
    which reads back as the values."""
    numbers = numbers[: len(values)]
    batch = pa.RecordBatch.from_arrays(
        [pa.array(values, pa.string()), pa.array(numbers, pa.int64())], ["s", "n"]
    )
    got = JsonlEncoder(["s", "n"]).encode(batch).tobytes()
    assert got == duckdb_rendering(pa.Table.from_batches([batch]), ExportFormat.JSONL)
    rows = [json.loads(line) for line in got.decode("utf-8").split("\n")[:-1]]
    assert rows == [{"s": v, "n": n} for v, n in zip(values, numbers, strict=True)]


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20))
def test_jsonl_floats_read_back_exactly(values: list[float]) -> None:
    """Every finite double reads back as the same float; the others as null."""
    batch = pa.RecordBatch.from_arrays([pa.array(values, pa.float64())], ["x"])
    lines = JsonlEncoder(["x"]).encode(batch).tobytes().decode().splitlines()
    for line, value in zip(lines, values, strict=True):
        got = json.loads(line)["x"]
        if math.isfinite(value):
            assert type(got) is float
            assert got == value
        else:
            assert got is None


# --- the DuckDB rendering is the reference ---------------------------------------------------


def _column_type(kind: pa.DataType) -> ColumnType:
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return ColumnType.STRING
    if pa.types.is_integer(kind):
        return ColumnType.INTEGER
    if pa.types.is_floating(kind):
        return ColumnType.NUMBER
    if pa.types.is_date(kind):
        return ColumnType.DATE
    assert pa.types.is_boolean(kind), kind
    return ColumnType.BOOLEAN


def duckdb_rendering(table: pa.Table, fmt: ExportFormat) -> bytes:
    """The rows of ``table`` (in order, no header) as the DuckDB engine renders them: the lines
    ``compile_export`` makes DuckDB write, over the table's own column types."""
    scopes = tuple(
        Scope(Column(field.name, _column_type(field.type), "", nullable=True), None, field.name)
        for field in table.schema
    )
    compiled = compile_export(Query(scopes, None, None, ()), fmt, "t")
    con = duckdb.connect(":memory:", config={"threads": 1})  # one thread: rows stay in order
    try:
        con.register("t", table)
        lines = con.sql(compiled.sql, params=compiled.params).fetchall()
    finally:
        con.close()
    return "".join(line for (line,) in lines).encode("utf-8")


def encoded(encoder: Encoder, table: pa.Table, batch_rows: int) -> bytes:
    """The bytes ``encoder`` writes for ``table``'s rows in batches of ``batch_rows``."""
    return b"".join(bytes(encoder.encode(b)) for b in table.to_batches(max_chunksize=batch_rows))


def awkward_doubles() -> list[float | None]:
    """Doubles where renderings differ: every power of two (the lopsided rounding intervals,
    DuckDB's three misprints among them) with its neighbours and negatives, the edges of the
    ranges written without an exponent, random bit patterns, and rounded and huge values."""
    powers = [2.0**e for e in range(-1074, 1024)]
    values = powers + [-p for p in powers]
    values += [math.nextafter(p, math.inf) for p in powers]
    values += [math.nextafter(p, 0.0) for p in powers]
    for edge in (1e-6, 1e-5, 1e-4, 1e10, 1e15, 1e16, 1e21):
        values += [edge, math.nextafter(edge, 0.0), math.nextafter(edge, math.inf), -edge]
    values += [0.0, -0.0, 784.0, 2150.5, 0.1, 1 / 3, 123456789012345.0, 1234560000000.0]
    values += [float("nan"), float("inf"), -float("inf"), None, 5e-324, 1.7976931348623157e308]
    rng = np.random.default_rng(12)
    bits = rng.integers(0, 2**63, 40_000, dtype=np.int64).view(np.float64)
    values += bits.tolist() + (-bits[:5_000]).tolist()
    values += np.round(rng.uniform(-1e6, 1e6, 20_000), 2).tolist()
    values += (10.0 ** rng.uniform(-12, 25, 20_000)).round().tolist()
    return values


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_every_type_is_written_byte_for_byte_as_duckdb_writes_it(fmt: ExportFormat) -> None:
    """Doubles (DuckDB's misprints corrected), every integer width, dates BC to AD 10183,
    booleans, hostile text and nulls: the bytes equal the DuckDB rendering's, in any batches."""
    doubles = awkward_doubles()
    n = len(doubles)
    rng = np.random.default_rng(13)
    texts = [HOSTILE_TEXT[i % len(HOSTILE_TEXT)] if i % 3 else f"plain {i}" for i in range(n)]
    text = pa.array([None if i % 29 == 0 else t for i, t in enumerate(texts)], pa.string())
    days = rng.integers(-1_000_000, 3_000_000, n)
    days[:4] = [-719_163, -719_162, -719_528, 2_932_896]  # 1 BC, AD 1, 0 BC's start, 9999-12-31
    columns: dict[str, pa.Array] = {
        "d": pa.array(doubles, pa.float64(), from_pandas=False),
        "s": text,
        "i8": pa.array(rng.integers(-128, 128, n), pa.int8()),
        "i32": pa.array(rng.integers(-(2**31), 2**31, n), pa.int32()),
        "i64": pa.array([None if i % 7 == 0 else int(v) for i, v in
                         enumerate(rng.integers(-(2**63), 2**63 - 1, n))], pa.int64()),
        "u64": pa.array(rng.integers(0, 2**64 - 1, n, dtype=np.uint64), pa.uint64()),
        "day": pa.array(days.astype(np.int32), pa.date32()),
        "b": pa.array([None if i % 5 == 0 else bool(i % 2) for i in range(n)], pa.bool_()),
    }  # fmt: skip
    table = pa.table(columns)
    want = duckdb_rendering(table, fmt)
    encoder = encoder_for(fmt, table.column_names)
    for batch_rows in (n, 4_096, 7):
        if batch_rows == 7:
            table = table.slice(0, 3_000)
            want = duckdb_rendering(table, fmt)
        assert encoded(encoder, table, batch_rows) == want
    # One column: DuckDB writes a null as "" there.
    alone = pa.table({"s": text})
    assert encoded(encoder_for(fmt, ["s"]), alone, 1_000) == duckdb_rendering(alone, fmt)


def test_the_duckdb_rendering_writes_every_double_as_its_shortest_text() -> None:
    """DuckDB's CSV lines write each awkward double as Python's repr, its three misprinted
    powers of two included, and NaN, infinities and null as empty fields."""
    doubles = awkward_doubles()
    lines = duckdb_rendering(pa.table({"x": pa.array(doubles, pa.float64())}), ExportFormat.CSV)
    want = [
        '""' if v is None or not math.isfinite(v) else repr(v) for v in doubles
    ]  # one column: a null is ""
    assert lines.decode().split("\n")[:-1] == want


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_an_int64_is_written_as_the_int32_holding_the_same_value(fmt: ExportFormat) -> None:
    """BigQuery's Storage Read hands over INT64 where the Parquet file has int32: same bytes."""
    values = [0, -1, 2**31 - 1, -(2**31), None, 42]
    small = pa.table({"n": pa.array(values, pa.int32()), "x": pa.array([1.5] * 6)})
    wide = pa.table({"n": pa.array(values, pa.int64()), "x": pa.array([1.5] * 6)})
    encoder = encoder_for(fmt, ["n", "x"])
    assert encoded(encoder, small, 6) == encoded(encoder, wide, 6) == duckdb_rendering(small, fmt)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats()),
            st.one_of(st.none(), st.text()),
            st.one_of(st.none(), st.dates()),
            st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
            st.one_of(st.none(), st.booleans()),
        ),
        min_size=1,
        max_size=30,
    ),
    fmt=st.sampled_from(list(ExportFormat)),
)
def test_any_row_is_written_as_duckdb_writes_it(
    rows: list[tuple[Any, ...]], fmt: ExportFormat
) -> None:
    """Random doubles (NaN and infinities too), text, dates, integers and booleans: the
    encoders' bytes equal the DuckDB rendering's."""
    columns = list(zip(*rows, strict=True))
    types = [pa.float64(), pa.string(), pa.date32(), pa.int64(), pa.bool_()]
    table = pa.table(
        [pa.array(list(c), t, from_pandas=False) for c, t in zip(columns, types, strict=True)],
        names=["f", "s", "d", "i", "b"],
    )
    assert encoded(encoder_for(fmt, table.column_names), table, 8) == duckdb_rendering(table, fmt)


def test_empty_results_give_header_only_csv_and_empty_jsonl() -> None:
    """No rows: a CSV file is its header alone, a JSONL file is empty."""
    empty = sample_batch().slice(0, 0)
    assert gzip_roundtrip(CsvEncoder(NAMES), [empty]) == csv_header(NAMES)
    assert gzip_roundtrip(JsonlEncoder(NAMES), [empty]) == b""
    assert gzip_roundtrip(JsonlEncoder(NAMES), []) == b""


def test_encoders_check_the_batch_width() -> None:
    """A batch with a different number of columns than names is refused."""
    with pytest.raises(ValueError, match="columns"):
        CsvEncoder(["a"]).encode(sample_batch())
    with pytest.raises(ValueError, match="columns"):
        JsonlEncoder(["a"]).encode(sample_batch())
    with pytest.raises(ValueError, match="format"):
        encoder_for("xml", ["a"])  # type: ignore[arg-type]


def test_lines_encoder_passes_rendered_lines_through() -> None:
    """Rendered lines are written as they are, sliced batches included; nulls are refused."""
    lines = pa.array(["a,b\n", '"x\ny",1\n', "é,2\n", "last\n"])
    encoder = LinesEncoder(b"h1,h2\n")
    assert encoder.header() == b"h1,h2\n"
    batch = pa.RecordBatch.from_arrays([lines], ["line"])
    assert encoder.encode(batch).tobytes() == 'a,b\n"x\ny",1\né,2\nlast\n'.encode()
    assert encoder.encode(batch.slice(1, 2)).tobytes() == '"x\ny",1\né,2\n'.encode()
    large = pa.RecordBatch.from_arrays([lines.cast(pa.large_string())], ["line"])
    assert encoder.encode(large).tobytes() == encoder.encode(batch).tobytes()
    assert encoder.encode(batch.slice(0, 0)).tobytes() == b""
    with pytest.raises(ValueError, match="null"):
        encoder.encode(pa.RecordBatch.from_arrays([pa.array(["a\n", None])], ["line"]))
    with pytest.raises(ValueError, match="one column"):
        encoder.encode(sample_batch())


@pytest.mark.parametrize("threaded", [True, False])
@pytest.mark.parametrize(("backend", "level"), [("isal", None), ("isal", 0), ("zlib", 6)])
def test_gzip_sink_writes_one_valid_gzip_stream(
    threaded: bool, backend: str, level: int | None
) -> None:
    """Every backend, level and threading mode produces one gzip member with the exact bytes."""
    chunks = [bytes(range(256)) * 100, b"", memoryview(b"hello\n" * 1000), b"tail"]
    out = io.BytesIO()
    with GzipSink(out, backend=backend, level=level, threaded=threaded) as sink:  # type: ignore[arg-type]
        for chunk in chunks:
            sink.write(chunk)
    data = out.getvalue()
    assert data[:2] == b"\x1f\x8b"
    assert gzip.decompress(data) == b"".join(bytes(c) for c in chunks)
    assert zlib.decompressobj(31).decompress(data)  # a single, complete member
    assert sink.uncompressed_bytes == sum(len(bytes(c)) for c in chunks)
    assert sink.compressed_bytes == len(data)


def test_gzip_sink_prefers_isal() -> None:
    """python-isal is installed in this project, so it is the default backend."""
    assert default_gzip_backend() == "isal"


def test_gzip_sink_is_deterministic() -> None:
    """The same bytes compress to the same file (no timestamp in the header)."""
    outs = []
    for _ in range(2):
        out = io.BytesIO()
        with GzipSink(out) as sink:
            sink.write(b"same content\n" * 1000)
        outs.append(out.getvalue())
    assert outs[0] == outs[1]


class FailingOutput(io.RawIOBase):
    """A destination that accepts some writes, then fails like a broken upload."""

    def __init__(self, fail_after: int) -> None:
        self.writes = 0
        self.fail_after = fail_after

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.writes += 1
        if self.writes > self.fail_after:
            raise OSError("upload broke")
        return len(data)


@pytest.mark.parametrize("threaded", [True, False])
def test_gzip_sink_raises_output_errors_to_the_writer(threaded: bool) -> None:
    """A failing destination surfaces as an error in the producer, never a silent loss."""
    noise = os.urandom(1 << 20)  # incompressible: every write produces output

    def export() -> None:
        out = FailingOutput(fail_after=1)
        with GzipSink(out, threaded=threaded, max_pending=1) as sink:  # type: ignore[arg-type]
            for _ in range(50):
                sink.write(noise)

    with pytest.raises(OSError, match="upload broke"):
        export()


@pytest.mark.parametrize("threaded", [True, False])
def test_gzip_sink_abort_leaves_an_incomplete_stream(threaded: bool) -> None:
    """An aborted sink writes no trailer, so the partial file never reads as complete."""
    out = io.BytesIO()
    sinks: list[GzipSink] = []

    def export() -> None:
        with GzipSink(out, threaded=threaded) as sink:
            sinks.append(sink)
            sink.write(os.urandom(1 << 20))
            raise RuntimeError("query failed")

    with pytest.raises(RuntimeError, match="query failed"):
        export()
    stream = zlib.decompressobj(31)
    stream.decompress(out.getvalue())
    assert not stream.eof  # no trailer: any gzip reader reports a truncated file
    if not threaded:  # the threaded sink may drop everything still queued
        assert out.getvalue()
    with pytest.raises(ValueError, match="closed"):
        sinks[0].write(b"more")
