"""The Arrow-batch renderer: record batches to the bytes of a CSV or JSONL export, batch by batch.

Every encoder works batch by batch, so memory stays bounded by a few batches whatever the number
of rows. An encoder has ``header() -> bytes`` (written once, first) and ``encode(batch)`` giving
the bytes of that batch's rows, as ``bytes`` or a ``memoryview`` over an Arrow buffer (no copy).

Why it is engine code and not a test helper: an engine that hands over Arrow batches instead of
rendered lines (BigQuery's Storage Read API, ``adapters/bigquery_engine.py``) renders them here,
and ``run_export(render="arrow")`` formats the DuckDB result's columns with it too (the tests
cross-check that path against the DuckDB-rendered one byte for byte, and bench/engine_bench.py
times it).

The reference is the DuckDB rendering (``sql/duckdb_dialect.compile_export``): the file must be
the same bytes whichever engine ran the query, so every value is written as DuckDB writes it,
and whatever Arrow type carries it (an INT64 from BigQuery where the Parquet file has an int32
gives the same digits). Checked against DuckDB 2.0 (``tests/unit/test_writers.py``, and whole
exports in ``tests/unit/test_duckdb_engine.py``) for text, every integer width, doubles (every
power of two with its neighbours, random bit patterns, rounded, huge and tiny values; 800k of
them once by hand), dates from 769 BC to AD 10183 and booleans. DuckDB's CSV misprints three
doubles, which its dialect corrects (``sql/duckdb_dialect.MISPRINTED_POWERS``). Two exceptions,
neither of which BigQuery produces: a FLOAT (float32) in CSV, where DuckDB writes about 0.7% of
values with more digits than needed (its shortest-digits search gives up on them; both texts
read back as the same float32), and DECIMAL, written as Arrow casts it to text (DuckDB's
``to_json`` writes narrow decimals as doubles).

Output formats (DESIGN.md, "The export file"):

- CSV (``CsvEncoder``): RFC 4180, UTF-8, a header row of the output names, one record per row,
  fields separated by ``,``, records ended by LF (``\\n``, as DuckDB, pandas and Polars write;
  RFC 4180 readers accept it). A null is an empty field; an empty string is ``""``; text is
  quoted (inner quotes doubled) only when it holds ``,`` ``"`` CR or LF. Booleans are
  ``true``/``false``, dates ISO-8601 (``2025-01-31``; before year 1 ``0044-03-15 (BC)``),
  integers as digits, floats as the shortest digits that read back as the same double, as
  Python's ``repr`` lays them out: ``2150.5``, ``784.0``, ``1e-05``, ``1e+16`` (an exponent
  outside [1e-4, 1e16)). NaN and infinities are written as empty fields (null). In a one-column
  file a null is written ``""`` so that its row is not a blank line, which many readers (pandas
  among them) skip.
- JSONL (``JsonlEncoder``): one JSON object per line (LF), keys in scope order, numbers as
  numbers (floats keep a fraction or exponent: ``784.0``, ``0.00001``, and an exponent outside
  [1e-6, 1e21): ``1e-7``, ``1e21``; NaN and infinities become ``null``), dates as ISO-8601
  strings, booleans ``true``/``false``, null as ``null``, strings escaped as DuckDB's
  ``to_json`` escapes them (``\\"``, ``\\\\``, ``\\n`` and the other short escapes,
  ``\\u001F`` for the other control characters; non-ASCII kept as UTF-8). An empty result is
  an empty file.
- ``LinesEncoder``: batches holding one text column of already rendered lines (each ending in
  LF), as ``sql/duckdb_dialect.compile_export`` makes DuckDB produce them; the bytes are passed
  on as-is.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from dataset_export.core.formats import ExportFormat

from .gzip_sink import Chunk, GzipBackend, GzipSink

_CSV_SPECIAL = frozenset(',"\r\n')
_CSV_SPECIAL_BYTE = np.zeros(256, dtype=np.bool_)
_CSV_SPECIAL_BYTE[[ord(c) for c in _CSV_SPECIAL]] = True
# Bytes that force JSON escaping: control characters, the quote and the backslash.
_JSON_ESCAPE_BYTE = np.zeros(256, dtype=np.bool_)
_JSON_ESCAPE_BYTE[:0x20] = True
_JSON_ESCAPE_BYTE[[ord('"'), ord("\\")]] = True
_JSON_SHORT_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"}
_EMPTY = memoryview(b"")


class Encoder(Protocol):
    """Turns record batches into the bytes of an export file, header first."""

    def header(self) -> bytes:
        """Bytes that start the file (before any row); may be empty."""
        ...

    def encode(self, batch: pa.RecordBatch) -> Chunk:
        """The bytes of ``batch``'s rows."""
        ...


def csv_field(text: str) -> str:
    """One RFC 4180 field: quoted (inner quotes doubled) only when it holds , " CR or LF."""
    if _CSV_SPECIAL.isdisjoint(text) and text:
        return text
    return '"' + text.replace('"', '""') + '"'


def csv_header(names: Sequence[str]) -> bytes:
    """The CSV header row for ``names``, LF-terminated."""
    return (",".join(csv_field(name) for name in names) + "\n").encode("utf-8")


def header_member(
    names: Sequence[str],
    fmt: ExportFormat,
    *,
    backend: GzipBackend | None = None,
    level: int | None = None,
) -> bytes:
    """The CSV header line as a gzip member of its own (``b""`` for JSONL, which has none):
    written once for an export run as parts, before their members, whichever engine ran them."""
    if fmt not in tuple(ExportFormat):
        raise ValueError(f"unknown export format {fmt!r}")
    if fmt != ExportFormat.CSV:
        return b""
    buffer = io.BytesIO()
    with GzipSink(buffer, backend=backend, level=level, threaded=False) as sink:
        sink.write(csv_header(names))
    return buffer.getvalue()


def _text_bytes(array: pa.Array) -> npt.NDArray[np.uint8]:
    """The UTF-8 bytes of a string array's values, back to back (a view, no copy)."""
    return _offsets_and_bytes(array)[1]


def _offsets_and_bytes(
    array: pa.Array,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint8]]:
    """A string array's value offsets (``len + 1`` of them, into its data buffer) and the bytes
    of its values, back to back (views, no copy)."""
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offsets_buffer, data_buffer = array.buffers()
    if offsets_buffer is None or len(array) == 0:
        return np.zeros(len(array) + 1, dtype=np.int64), np.empty(0, dtype=np.uint8)
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type, count=len(array) + 1,
                            offset=array.offset * np.dtype(offset_type).itemsize)  # fmt: skip
    if data_buffer is None:
        return offsets.astype(np.int64), np.empty(0, dtype=np.uint8)
    data: npt.NDArray[np.uint8] = np.frombuffer(data_buffer, dtype=np.uint8)
    return offsets.astype(np.int64), data[int(offsets[0]) : int(offsets[-1])]


def _plain_text(array: pa.Array) -> pa.Array:
    """``array`` as a string or large_string array (dictionaries and views decoded)."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        return array
    return pc.cast(array, pa.large_string())


def _finite_or_null(array: pa.Array) -> pa.Array:
    """A float array with NaN and infinities replaced by null."""
    finite = pc.is_finite(array)
    if pc.all(finite).as_py() is not False:
        return array
    return pc.if_else(finite, array, pa.scalar(None, array.type))


def _check_width(batch: pa.RecordBatch, names: Sequence[str]) -> None:
    if batch.num_columns != len(names):
        raise ValueError(f"batch has {batch.num_columns} columns, the encoder {len(names)} names")


class CsvEncoder:
    """RFC 4180 CSV from Arrow record batches, each field formatted as DuckDB's lines format it."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)

    def header(self) -> bytes:
        """The header row (output names)."""
        return csv_header(self.names)

    def encode(self, batch: pa.RecordBatch) -> Chunk:
        """The CSV records of ``batch``, LF-terminated."""
        _check_width(batch, self.names)
        if batch.num_rows == 0:
            return _EMPTY
        # A lone null field would be a blank line, which many readers skip: write "".
        missing = '""' if batch.num_columns == 1 else ""
        fields = []
        for column in batch.columns:
            text = _csv_text(column)
            fields.append(pc.fill_null(text, missing) if text.null_count else text)
        if any(pa.types.is_large_string(f.type) for f in fields):
            fields = [pc.cast(f, pa.large_string()) for f in fields]
        # A join with a separator is faster than one that interleaves literal commas.
        fields[-1] = pc.binary_join_element_wise(fields[-1], "\n", "")
        return _text_bytes(pc.binary_join_element_wise(*fields, ",")).data


class JsonlEncoder:
    """JSON Lines from Arrow record batches, built column-wise with Arrow compute kernels."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._keys = [json.dumps(name, ensure_ascii=False) + ":" for name in self.names]

    def header(self) -> bytes:
        """JSONL has no header."""
        return b""

    def encode(self, batch: pa.RecordBatch) -> Chunk:
        """One JSON object per row of ``batch``, each ending in LF."""
        _check_width(batch, self.names)
        if batch.num_rows == 0:
            return _EMPTY
        parts: list[Any] = []
        for i, (key, column) in enumerate(zip(self._keys, batch.columns, strict=True)):
            text, quoted = _json_text(column)
            literal = ("{" if i == 0 else ",") + key
            if quoted and text.null_count == 0:
                parts += [literal + '"', text, '"']
                continue
            if quoted:
                text = pc.binary_join_element_wise('"', text, '"', "")
            if text.null_count:
                text = pc.fill_null(text, "null")
            parts += [literal, text]
        parts.append("}\n")
        return _text_bytes(_join(parts)).data


def _join(parts: list[Any]) -> pa.Array:
    """The row-wise concatenation of text arrays and literal strings (adjacent ones merged)."""
    merged: list[Any] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        else:
            merged.append(part)
    arrays = [part for part in merged if not isinstance(part, str)]
    if any(pa.types.is_large_string(a.type) for a in arrays):
        merged = [p if isinstance(p, str) else pc.cast(p, pa.large_string()) for p in merged]
    return pc.binary_join_element_wise(*merged, "")


def _csv_text(column: pa.Array) -> pa.Array:
    """A column's values as CSV fields (null stays null), formatted as DuckDB's CAST formats
    them; text is quoted only when it needs to be."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.dictionary_decode()
        kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return _csv_quote(_plain_text(column))
    if pa.types.is_floating(kind):
        return _float_text(column, json=False)
    if pa.types.is_date(kind):
        return _date_text(column)
    if pa.types.is_null(kind):
        return pa.nulls(len(column), pa.string())
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return pc.cast(column, pa.string())
    raise TypeError(f"cannot write Arrow type {kind} as CSV")


def _csv_quote(text: pa.Array) -> pa.Array:
    """Text as RFC 4180 fields: quoted (quotes doubled) when it holds , " CR or LF or is empty,
    which keeps an empty string (``""``) apart from null (an empty field)."""
    offsets, data = _offsets_and_bytes(text)
    special = _CSV_SPECIAL_BYTE[data]
    if not special.any():
        needs = offsets[1:] == offsets[:-1]  # only the empty strings
    else:
        # Whether each value holds a special byte: an OR over its bytes. reduceat gives an
        # empty value the byte at its start instead, but empty values are quoted anyway; the
        # extra byte lets a value start at the end (trailing empty values).
        starts = offsets[:-1] - offsets[0]
        empty = offsets[1:] == offsets[:-1]
        needs = np.logical_or.reduceat(np.append(special, False), starts) | empty
    if text.null_count:
        needs &= np.asarray(text.is_valid())
    if not needs.any():
        return text  # the common case costs a scan of the bytes
    every = bool(needs.all())
    mask = None if every else pa.array(needs)
    chosen = text if mask is None else text.filter(mask)
    if (data == ord('"')).any():
        chosen = pc.replace_substring(chosen, '"', '""')
    quoted = pc.binary_join_element_wise('"', chosen, '"', "")
    return quoted if mask is None else pc.replace_with_mask(text, mask, quoted)


def _float_text(column: pa.Array, *, json: bool) -> pa.Array:
    """Finite floats as DuckDB writes them (``CAST(x AS VARCHAR)`` for CSV, ``to_json`` for
    JSON), NaN, infinities and nulls as null.

    Both write the shortest digits that read back as the same value, which is what Arrow's
    cast to text writes too; they differ in where they switch to an exponent and how they write
    it (``_digits_text``). Most values lie in the positional range of both, where Arrow's text
    needs at most a ``.0``; the others are laid out again from Arrow's digits, one by one.
    """
    if json and not pa.types.is_float64(column.type):
        column = pc.cast(column, pa.float64())  # to_json writes a FLOAT as the DOUBLE it is
    elif pa.types.is_float16(column.type):
        column = pc.cast(column, pa.float32())
    column = _finite_or_null(column)
    if column.null_count == len(column):
        return pa.nulls(len(column), pa.string())
    text = pc.cast(column, pa.string())
    width = column.type.byte_width
    values = np.frombuffer(column.buffers()[1], dtype=np.dtype(f"<f{width}"), count=len(column),
                           offset=column.offset * width)  # fmt: skip
    low, high = (np.asarray(bound, dtype=values.dtype) for bound in _POSITIONAL_RANGE[json])
    magnitude = np.abs(values)
    positional = ((magnitude >= low) & (magnitude < high)) | (magnitude == 0)
    positional &= ~np.asarray(pc.fill_null(pc.match_substring(text, "e"), True))
    if column.null_count:
        valid = np.asarray(column.is_valid())
        again = ~positional & valid
        positional &= valid
    else:
        again = ~positional
    # Arrow writes an integral value without a fraction, DuckDB with ".0".
    with np.errstate(invalid="ignore"):  # null slots may hold anything
        integral = values == np.trunc(values)
    fixed = _append(text, positional & integral, ".0")
    if not again.any():
        return fixed
    mask = pa.array(again)
    slow = text.filter(mask).to_pylist()
    replacements = pa.array([_relayout(value, json=json) for value in slow], pa.string())
    return pc.replace_with_mask(fixed, mask, replacements)


def _append(text: pa.Array, where: npt.NDArray[np.bool_], suffix: str) -> pa.Array:
    """``text`` with ``suffix`` added to the values ``where`` says."""
    if not where.any():
        return text
    if where.all():
        return pc.binary_join_element_wise(text, suffix, "")
    mask = pa.array(where)
    return pc.replace_with_mask(
        text, mask, pc.binary_join_element_wise(text.filter(mask), suffix, "")
    )


# Where each rendering writes a number without an exponent: [low, high) in magnitude, and zero.
_POSITIONAL_RANGE = {False: (1e-4, 1e16), True: (1e-6, 1e21)}


def _relayout(text: str, *, json: bool) -> str:
    """Arrow's text of a finite float (``1.23456e+12``, ``0.00001``, ``-784``) as DuckDB
    writes the same digits (``_digits_text``)."""
    sign = "-" if text.startswith("-") else ""
    mantissa, _, exponent = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # The value is 0.<digits> * 10**point.
    point = len(whole) + int(exponent or 0) - (len(whole) + len(fraction) - len(digits))
    digits = digits.rstrip("0")
    return sign + (_digits_text(digits, point, json=json) if digits else "0.0")


def _digits_text(digits: str, point: int, *, json: bool) -> str:
    """The number ``0.<digits> * 10**point`` (digits without leading or trailing zeros) as
    DuckDB writes it.

    CSV (``CAST(x AS VARCHAR)``, as Python's ``repr``): positional for ``-3 <= point <= 16``
    (magnitudes in [1e-4, 1e16)), else ``d.ddde+XX`` with a signed exponent of at least two
    digits (``1e-05``, ``1e+16``). JSON (``to_json``): positional for ``-5 <= point <= 21``
    ([1e-6, 1e21)), else ``d.ddde-X`` with no plus sign and no padding (``1e-7``, ``1e21``).
    Positional text keeps a fraction: ``784.0``, ``0.0001``.
    """
    count = len(digits)
    low, high = (-5, 21) if json else (-3, 16)
    if low <= point <= high:
        if point <= 0:
            return "0." + "0" * -point + digits
        if point >= count:
            return digits + "0" * (point - count) + ".0"
        return digits[:point] + "." + digits[point:]
    exponent = point - 1
    head = digits[0] + ("." + digits[1:] if count > 1 else "")
    if json:
        return f"{head}e{exponent}"
    return f"{head}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"


_FIRST_DAY_AD = dt.date(1, 1, 1)


def _date_text(column: pa.Array) -> pa.Array:
    """Dates as DuckDB writes them: ISO-8601 (``2025-01-31``), and before year 1 the year
    counted back with ``(BC)`` after it (``0044-03-15 (BC)``, where Arrow writes ``-0043``)."""
    if not pa.types.is_date32(column.type):
        column = pc.cast(column, pa.date32())
    text = pc.cast(column, pa.string())
    bc = pc.fill_null(pc.less(column, pa.scalar(_FIRST_DAY_AD, pa.date32())), False)
    if not pc.any(bc).as_py():
        return text
    slow = text.filter(bc).to_pylist()
    replacements = [f"{1 - int(value[:-6]):04d}{value[-6:]} (BC)" for value in slow]
    return pc.replace_with_mask(text, bc, pa.array(replacements, pa.string()))


def _json_text(column: pa.Array) -> tuple[pa.Array, bool]:
    """A column's values as JSON text (null stays null), formatted as DuckDB's ``to_json``
    formats them; True when they need quotes."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.dictionary_decode()
        kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return _json_escape(_plain_text(column)), True
    if pa.types.is_floating(kind):
        return _float_text(column, json=True), False
    if pa.types.is_date(kind):
        return _date_text(column), True
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return pc.cast(column, pa.string()), False
    if pa.types.is_null(kind):
        return pa.nulls(len(column), pa.string()), False
    raise TypeError(f"cannot write Arrow type {kind} as JSON")


def _json_escape(text: pa.Array) -> pa.Array:
    """Escape a string array's values for JSON as DuckDB's ``to_json`` does: ``\\"`` and
    ``\\\\``, the short escapes of BS, TAB, LF, FF and CR, ``\\u00XX`` (upper-case hex) for
    the other control characters; everything else, non-ASCII included, as it is."""
    data = _text_bytes(text)
    flagged = data[_JSON_ESCAPE_BYTE[data]]
    if flagged.size == 0:
        return text
    present = set(np.unique(flagged).tolist())
    # Backslashes first, so the escapes added below are not escaped again.
    for byte in sorted(present, key=lambda b: b != ord("\\")):
        char = chr(byte)
        if byte == ord("\\"):
            replacement = "\\\\"
        elif byte == ord('"'):
            replacement = '\\"'
        else:
            replacement = _JSON_SHORT_ESCAPES.get(byte, f"\\u{byte:04X}")
        text = pc.replace_substring(text, char, replacement)
    return text


class LinesEncoder:
    """Pass-through for batches of one text column whose values are complete lines."""

    def __init__(self, header: bytes = b"") -> None:
        self._header = header

    def header(self) -> bytes:
        """The fixed header given at construction."""
        return self._header

    def encode(self, batch: pa.RecordBatch) -> Chunk:
        """The lines' bytes exactly as rendered (no copy for string and large_string)."""
        if batch.num_columns != 1:
            raise ValueError(f"expected one column of rendered lines, got {batch.num_columns}")
        lines = batch.column(0)
        if lines.null_count:
            raise ValueError("a rendered line is null")
        return _text_bytes(_plain_text(lines)).data


def encoder_for(fmt: ExportFormat, names: Sequence[str]) -> Encoder:
    """The Arrow encoder of an export format."""
    if fmt == ExportFormat.CSV:
        return CsvEncoder(names)
    if fmt == ExportFormat.JSONL:
        return JsonlEncoder(names)
    raise ValueError(f"unknown export format {fmt!r}")
