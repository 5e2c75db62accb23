"""What ``row_groups`` (the parts planner's count of kept rows per row group) costs.

For each dataset size (generated once, cached under ``--cache`` as ``engine_bench.py`` does),
times ``DuckDbEngine().row_groups`` for a full-table query (metadata only), a selective filter
(msa = 'Seattle, WA', about 1.8% of rows) and a broad one (bed in 1, 2, 3, about 82%). Beside
it, on one open connection: the counting statement alone as the engine runs it for equal row
groups (``divide``: bucket b is group b), the general one it runs for uneven groups (``join``:
on a table of each bucket's group and boundary), and a plain ``count(*)`` with the same filter
(the least any count over the rows costs). Prints the median of ``--repeat`` runs, in
milliseconds, and the load average. Not a test: ``python bench/row_groups_bench.py --rows
1000000 10000000``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_bench import ensure_dataset

FILTERS: dict[str, Any] = {
    "none": None,
    "msa = 'Seattle, WA'": [{"column": "msa", "filter": {"equals": "Seattle, WA"}}],
    "bed in (1, 2, 3)": [{"column": "bed", "filter": {"in": [1, 2, 3]}}],
}


def milliseconds(call: Any, repeat: int) -> float:
    """The median wall time of ``call()`` over ``repeat`` runs, after one warm-up run."""
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "engine_bench")
    args = parser.parse_args()

    import duckdb
    import pyarrow.parquet as pq

    from dataset_export.core.catalog import RENTAL_LISTINGS
    from dataset_export.core.query import parse_dataset
    from dataset_export.engine import DuckDbEngine
    from dataset_export.engine.duckdb_engine import SOURCE, _buckets, _units
    from dataset_export.engine.sql.duckdb_dialect import compile_query, compile_row_group_counts

    engine = DuckDbEngine()
    con = duckdb.connect(config={"preserve_insertion_order": False, "memory_limit": "256MB"})
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(
        f"{'rows':>11}  {'filter':<20} {'groups':>6} {'kept':>11} {'row_groups':>10} "
        f"{'divide':>6} {'join':>6} {'count':>6}"
    )
    for rows in args.rows:
        path = str(ensure_dataset(rows, args.cache))
        con.register(SOURCE, con.read_parquet(path, file_row_number=True))
        metadata = pq.read_metadata(path)
        units = _units([metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)])
        width, groups, boundaries = _buckets(units)

        def run(compiled: Any) -> Any:
            return lambda: con.sql(compiled.sql, params=compiled.params).fetchall()

        for name, filters in FILTERS.items():
            dataset: dict[str, Any] = {"scopes": [{"column": "property_id"}]}
            if filters is not None:
                dataset["filters"] = filters
            query = parse_dataset(dataset, RENTAL_LISTINGS, max_rows=10**10)
            kept = sum(g.matching for g in engine.row_groups(path, query))
            took = milliseconds(lambda p=path, q=query: engine.row_groups(p, q), args.repeat)
            divide = compile_row_group_counts(query, SOURCE, width=width)
            join = compile_row_group_counts(
                query, SOURCE, width=width, groups=groups, boundaries=boundaries
            )
            # property_id is never null: its Count is count(*) of the kept rows.
            counting = {**dataset, "scopes": [{"column": "property_id", "aggregate": "Count"}]}
            count = compile_query(parse_dataset(counting, RENTAL_LISTINGS, max_rows=10**10))
            print(
                f"{rows:>11,}  {name:<20} {len(units):>6} {kept:>11,} {took:>10.0f} "
                f"{milliseconds(run(divide), args.repeat):>6.0f} "
                f"{milliseconds(run(join), args.repeat):>6.0f} "
                f"{milliseconds(run(count), args.repeat):>6.0f}"
            )


if __name__ == "__main__":
    main()
