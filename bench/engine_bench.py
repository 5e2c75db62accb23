"""Micro benchmark of the export engine against DuckDB's own ``COPY ... TO '...gz'``.

For each dataset size (generated once, cached under ``--cache``), each case (full-table CSV,
full-table JSONL, optionally a selective filter and a high-cardinality aggregate) runs:

- ``engine``: ``run_export`` to a local temp file (DuckDB renders lines, isal gzip);
- ``arrow``: the same with ``render="arrow"`` (pyarrow encoders), when ``--arrow`` is given;
- ``copy``: DuckDB ``COPY (<the same compiled query>) TO 'x.csv.gz' / 'x.json.gz'`` with gzip,
  on a connection with the engine's settings (its memory limit, insertion order off);
- ``copy-default``: the same COPY with DuckDB's default settings, when ``--copy-default``.

Every run is a fresh subprocess so its peak RSS (``VmHWM``) is its own. Prints seconds
(median of ``--repeat``), rows/s, MB/s of uncompressed output, peak RSS and the speed ratio
``copy / engine``. Not a test: ``python bench/engine_bench.py --rows 2000000``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CASES: dict[str, dict[str, Any]] = {
    "full": {"scopes": "ALL"},
    "selective": {
        "scopes": "ALL",
        "filters": [
            {"column": "msa", "filter": {"equals": "Seattle, WA"}},
            {"column": "bed", "filter": {"in": [1, 2, 3]}},
        ],
    },
    "aggregate": {
        "scopes": [
            {"column": "street_address"},
            {"column": "zip_code"},
            {"column": "asking_rent", "aggregate": "Avg"},
            {"column": "property_id", "aggregate": "Count"},
        ]
    },
}


def dataset_for(case: str) -> dict[str, Any]:
    """The case's dataset object, with "ALL" spelled out as every catalog column."""
    from dataset_export.core.catalog import RENTAL_LISTINGS

    dataset = dict(CASES[case])
    if dataset["scopes"] == "ALL":
        dataset["scopes"] = [{"column": c.name} for c in RENTAL_LISTINGS]
    return dataset


def worker(args: argparse.Namespace) -> None:
    """One measured run in this process; prints a JSON line."""
    import duckdb

    from dataset_export.core.catalog import RENTAL_LISTINGS
    from dataset_export.core.query import parse_dataset
    from dataset_export.engine import EngineSettings, run_export
    from dataset_export.engine.sql.duckdb_dialect import compile_query

    query = parse_dataset(dataset_for(args.case), RENTAL_LISTINGS, max_rows=10**9)
    suffix = ".csv.gz" if args.fmt == "csv" else ".jsonl.gz"
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        target = Path(tmp) / f"out{suffix}"
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        if args.path in ("engine", "arrow"):
            with target.open("wb") as out:
                stats = run_export(
                    args.parquet,
                    query,
                    args.fmt,
                    out,
                    batch_rows=args.batch_rows,
                    render="duckdb" if args.path == "engine" else "arrow",
                    settings=EngineSettings(temp_directory=tmp),
                )
            rows, raw = stats.rows, stats.uncompressed_bytes
        else:
            config: dict[str, Any] = {"temp_directory": tmp}
            if args.path == "copy":
                limit = EngineSettings().memory_limit
                config.update(memory_limit=limit, preserve_insertion_order=False)
            con = duckdb.connect(":memory:", config=config)
            con.read_parquet(args.parquet).create_view("dataset")
            compiled = compile_query(query)
            options = (
                "FORMAT csv, HEADER true, COMPRESSION gzip"
                if args.fmt == "csv"
                else "FORMAT json, COMPRESSION gzip"
            )
            literal = "'" + str(target).replace("'", "''") + "'"
            con.execute(f"COPY ({compiled.sql}) TO {literal} ({options})", compiled.params)
            con.close()
            rows, raw = -1, -1
        seconds = time.perf_counter() - started
        cpu = cpu_seconds() - cpu_before
        size = target.stat().st_size
    print(json.dumps({"seconds": seconds, "cpu": cpu, "rows": rows, "raw": raw, "gz": size,
                      "rss": peak_rss()}))  # fmt: skip


def cpu_seconds() -> float:
    """User plus system CPU seconds of this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM, which (unlike ru_maxrss) restarts at exec."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(args: argparse.Namespace, parquet: Path, case: str, fmt: str, path: str) -> Any:
    """Median of ``--repeat`` subprocess runs."""
    runs = []
    for _ in range(args.repeat):
        command = [sys.executable, __file__, "--worker", "--parquet", str(parquet)]
        command += ["--case", case, "--fmt", fmt, "--path", path]
        command += ["--batch-rows", str(args.batch_rows)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{path} {case} {fmt} failed:\n{done.stderr}")
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    best["seconds_all"] = [round(r["seconds"], 2) for r in runs]
    best["rss"] = max(r["rss"] for r in runs)
    return best


def ensure_dataset(rows: int, cache: Path) -> Path:
    """The cached dataset of ``rows`` rows, generated on first use."""
    from dataset_export_tools.dataset.generate import generate_dataset

    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"listings_{rows}.parquet"
    if not path.exists():
        print(f"generating {rows:,} rows into {path} ...", flush=True)
        generate_dataset(rows, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[2_000_000])
    parser.add_argument("--cases", nargs="+", default=["full"], choices=sorted(CASES))
    parser.add_argument("--formats", nargs="+", default=["csv", "jsonl"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=32_768)
    default_cache = Path(tempfile.gettempdir()) / "engine_bench"
    parser.add_argument("--cache", type=Path, default=default_cache)
    parser.add_argument("--arrow", action="store_true", help="also time render='arrow'")
    parser.add_argument("--copy-default", action="store_true", help="also COPY with defaults")
    parser.add_argument("--no-copy", action="store_true", help="skip DuckDB COPY baselines")
    # Worker mode (internal).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--fmt", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    import duckdb
    import pyarrow

    print(
        f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
        f"{platform.python_version()}, duckdb {duckdb.__version__}, pyarrow {pyarrow.__version__}"
    )
    paths = ["engine"] + (["arrow"] if args.arrow else [])
    if not args.no_copy:
        paths += ["copy"] + (["copy-default"] if args.copy_default else [])
    header = f"{'rows':>11} {'case':<10} {'fmt':<5} {'path':<13} {'seconds':>8} {'rows/s':>11}"
    header += f" {'MB/s':>7} {'out MB':>7} {'gz MB':>7} {'peak RSS':>9} {'x faster':>8}  runs"
    print(header)
    for rows in args.rows:
        parquet = ensure_dataset(rows, args.cache)
        for case in args.cases:
            for fmt in args.formats:
                results = {path: measure(args, parquet, case, fmt, path) for path in paths}
                engine = results["engine"]
                for path, r in results.items():
                    raw = engine["raw"] if r["raw"] < 0 else r["raw"]
                    n = engine["rows"]
                    ratio = ""
                    if path.startswith("copy"):
                        ratio = f"{r['seconds'] / engine['seconds']:.1f}x"
                    print(
                        f"{rows:>11,} {case:<10} {fmt:<5} {path:<13} {r['seconds']:>8.2f} "
                        f"{n / r['seconds']:>11,.0f} {raw / 1e6 / r['seconds']:>7.0f} "
                        f"{raw / 1e6:>7.0f} {r['gz'] / 1e6:>7.1f} "
                        f"{r['rss'] / 2**20:>7.0f}MB {ratio:>8}  {r['seconds_all']}",
                        flush=True,
                    )
    print("MB/s counts the engine's uncompressed output; peak RSS is the worst of the runs.")
    print(f"median of {args.repeat} runs; every run in its own process")


if __name__ == "__main__":
    main()
