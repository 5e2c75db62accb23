"""The export engine: compiles a validated query to SQL, runs it, renders and gzips the file.

The pure core (``dataset_export.core``) owns the query model, the catalog, the formats and the
policies; everything here may use DuckDB, pyarrow, numpy, threads and isal. Layout:

- ``sql/``: SQL compilation. ``sql/compiler.py`` is what every dialect shares (the walk from a
  ``Query`` to text and parameters, the safety rules, the semantics, ``output_type``);
  ``sql/duckdb_dialect.py`` is DuckDB's spelling of it, plus ``compile_export``, which renders
  each row as a CSV or JSONL line in SQL. A second dialect (BigQuery's GoogleSQL) is a module
  beside it.
- ``render.py``: the Arrow-batch renderer (``CsvEncoder``, ``JsonlEncoder``, ``LinesEncoder``,
  ``csv_header``, ``header_member``): record batches to the bytes of the file, for engines that
  hand over columns rather than rendered lines, byte for byte as DuckDB's lines (its docstring
  says so, and where not); the CSV header as a gzip member of its own, for every engine.
- ``gzip_sink.py``: ``GzipSink``, the gzip stream (isal or zlib) with its writer thread.
- ``duckdb_engine.py``: ``run_export``, DuckDB over a local Parquet file from query to gzip
  file (a dataset that does not fit raises ``core.errors.DatasetMismatch``), and
  ``DuckDbEngine``, the service's engine over it: the export or one part of it (a range of
  file rows), the file's row groups with the rows the filter keeps in each (for the parts
  planner, ``core.parts``), and the CSV header as a gzip member of its own. An engine over
  another store is a module beside it.

Importing this package loads DuckDB; only the process function does.
"""

from __future__ import annotations

from .duckdb_engine import DuckDbEngine, EngineSettings, ExportStats, run_export

__all__ = ["DuckDbEngine", "EngineSettings", "ExportStats", "run_export"]
