"""DuckDB's rendering of the full table as CSV lines, one thread, no gzip: a variant to count.

Run under valgrind for instruction counts that do not depend on the machine's load::

    valgrind --tool=callgrind python bench/render_instructions.py FILE.parquet VARIANT

``VARIANT``: ``base`` (``SELECT 1``: what every variant shares, to subtract), ``engine``
(``compile_export``, every value checked), ``clean`` (the same with the file's clean columns,
found before the query), ``scan`` (finding them, then ``SELECT 1``: subtract it from
``clean``), ``floor`` (every field ``CAST AS VARCHAR``, the floor pipeline's formatting).
bench/README.md ("The engine alone, against the floor") quotes the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb

from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export.core.formats import ExportFormat
from dataset_export.core.query import parse_dataset
from dataset_export.engine.duckdb_engine import clean_columns
from dataset_export.engine.sql.duckdb_dialect import compile_export

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_bench import floor_sql

VARIANTS = ("base", "engine", "clean", "scan", "floor")


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[2] not in VARIANTS:
        raise SystemExit(f"usage: render_instructions.py FILE.parquet {{{','.join(VARIANTS)}}}")
    path, variant = sys.argv[1], sys.argv[2]
    query = parse_dataset(
        {"scopes": [{"column": c.name} for c in RENTAL_LISTINGS]}, RENTAL_LISTINGS, max_rows=10**12
    )
    clean = clean_columns(path) if variant in ("clean", "scan") else frozenset[str]()
    con = duckdb.connect(":memory:", config={"threads": 1, "preserve_insertion_order": False})
    con.read_parquet(path).create_view("dataset")
    sql, params = "SELECT 1", []
    if variant == "floor":
        sql = floor_sql(query)
    elif variant in ("engine", "clean"):
        compiled = compile_export(query, ExportFormat.CSV, "dataset", clean=clean)
        sql, params = compiled.sql, list(compiled.params)
    rows = sum(batch.num_rows for batch in con.sql(sql, params=params).to_arrow_reader(32768))
    print(variant, rows, ",".join(sorted(clean)))


if __name__ == "__main__":
    main()
