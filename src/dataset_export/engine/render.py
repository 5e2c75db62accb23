"""The Arrow-batch renderer: record batches to the bytes of a CSV or JSONL export, batch by batch.

Every encoder works batch by batch, so memory stays bounded by a few batches whatever the number
of rows. An encoder has ``header() -> bytes`` (written once, first) and ``encode(batch)`` giving
the bytes of that batch's rows, as ``bytes`` or a ``memoryview`` over an Arrow buffer (no copy).

Why it is engine code and not a test helper: ``run_export(render="arrow")`` formats the DuckDB
result's columns with ``CsvEncoder`` / ``JsonlEncoder`` (the tests cross-check that path against
the DuckDB-rendered one, and bench/engine_bench.py times it), and an engine that hands us Arrow
batches instead of rendered lines (BigQuery's Storage Read API, the next issue) renders them
here. Today the JSONL bytes equal the DuckDB rendering's (checked on the generated dataset, all
columns); the CSV values are equal but not the bytes: pyarrow quotes every string and prints an
integral double as ``784`` where the DuckDB lines print ``784.0`` and quote only where needed.
Whoever makes this the renderer of a production path closes that gap here, with the DuckDB
rendering (``sql/duckdb_dialect.compile_export``) as the reference.

Output formats (DESIGN.md, "The export file"):

- CSV (``CsvEncoder``): RFC 4180, UTF-8, a header row of the output names, one record per row,
  fields separated by ``,``, records ended by LF (``\\n``, as DuckDB, pandas and Polars write;
  RFC 4180 readers accept it). A null is an empty field; an empty string is ``""``. Formatting is
  pyarrow's CSV writer: it quotes every string value (``"Akron, OH"``, ``"Bob"``), which is valid
  RFC 4180, and doubles embedded quotes. Booleans are ``true``/``false``, dates ISO-8601
  (``2025-01-31``), integers as digits, floats as the shortest text that reads back as the same
  double (``2150.5``, ``784``); NaN and infinities are written as empty fields (null). In a
  one-column file a null is written ``""`` so that its row is not a blank line, which many
  readers (pandas among them) skip.
- JSONL (``JsonlEncoder``): one JSON object per line (LF), keys in scope order, numbers as
  numbers (floats keep a fraction or exponent, ``784.0``; NaN and infinities become ``null``),
  dates as ISO-8601 strings, booleans ``true``/``false``, null as ``null``, strings escaped as
  Python's ``json.dumps(..., ensure_ascii=False)`` escapes them (non-ASCII kept as UTF-8). An
  empty result is an empty file.
- ``LinesEncoder``: batches holding one text column of already rendered lines (each ending in
  LF), as ``sql/duckdb_dialect.compile_export`` makes DuckDB produce them; the bytes are passed
  on as-is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from dataset_export.core.formats import ExportFormat

from .gzip_sink import Chunk

_CSV_SPECIAL = frozenset(',"\r\n')
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


def _text_bytes(array: pa.Array) -> npt.NDArray[np.uint8]:
    """The UTF-8 bytes of a string array's values, back to back (a view, no copy)."""
    offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
    _, offsets_buffer, data_buffer = array.buffers()
    if data_buffer is None or len(array) == 0:
        return np.empty(0, dtype=np.uint8)
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type, count=len(array) + 1,
                            offset=array.offset * np.dtype(offset_type).itemsize)  # fmt: skip
    data: npt.NDArray[np.uint8] = np.frombuffer(data_buffer, dtype=np.uint8)
    return data[int(offsets[0]) : int(offsets[-1])]


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
    """RFC 4180 CSV from Arrow record batches, formatted by pyarrow's C++ CSV writer."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._options = pa_csv.WriteOptions(include_header=False, batch_size=8192)

    def header(self) -> bytes:
        """The header row (output names)."""
        return csv_header(self.names)

    def encode(self, batch: pa.RecordBatch) -> Chunk:
        """The CSV records of ``batch``, LF-terminated."""
        _check_width(batch, self.names)
        if batch.num_rows == 0:
            return _EMPTY
        columns = []
        for column in batch.columns:
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            if pa.types.is_floating(column.type):
                column = _finite_or_null(column)
            elif pa.types.is_string_view(column.type):
                column = pc.cast(column, pa.large_string())
            columns.append(column)
        if len(columns) == 1 and columns[0].null_count:
            # A lone null field would be a blank line, which many readers skip: write "".
            columns[0] = pc.fill_null(pc.cast(columns[0], pa.string()), "")
        names = [f"c{i}" for i in range(len(columns))]  # pyarrow needs names, CSV does not
        sink = pa.BufferOutputStream()
        pa_csv.write_csv(pa.RecordBatch.from_arrays(columns, names), sink, self._options)
        return memoryview(sink.getvalue())


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
        # Parts alternate literal text and value arrays; adjacent literals are merged.
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
        merged: list[Any] = []
        for part in parts:
            if isinstance(part, str) and merged and isinstance(merged[-1], str):
                merged[-1] += part
            else:
                merged.append(part)
        lines = pc.binary_join_element_wise(*merged, "")
        return _text_bytes(lines).data


def _json_text(column: pa.Array) -> tuple[pa.Array, bool]:
    """A column's values as JSON text (null stays null); True when they need quotes."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.dictionary_decode()
        kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return _json_escape(_plain_text(column)), True
    if pa.types.is_floating(kind):
        text = pc.cast(_finite_or_null(column), pa.string())
        # Arrow prints 784.0 as "784"; JSON readers would then see an integer.
        integral = pc.match_substring_regex(text, r"^-?[0-9]+$")
        if pc.any(integral).as_py():
            text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
        return text, False
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        return pc.cast(column, pa.string()), False
    if pa.types.is_date(kind) or pa.types.is_timestamp(kind) or pa.types.is_time(kind):
        return pc.cast(column, pa.string()), True
    if pa.types.is_null(kind):
        return pa.nulls(len(column), pa.string()), False
    raise TypeError(f"cannot write Arrow type {kind} as JSON")


def _json_escape(text: pa.Array) -> pa.Array:
    """Escape a string array's values for JSON, as json.dumps(ensure_ascii=False) does."""
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
            replacement = _JSON_SHORT_ESCAPES.get(byte, f"\\u{byte:04x}")
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
