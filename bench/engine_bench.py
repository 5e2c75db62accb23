"""Micro benchmark of the export engine against DuckDB's own ``COPY ... TO '...gz'``.

For each dataset size (generated once, cached under ``--cache``), each case (full-table CSV,
full-table JSONL, optionally a selective filter and a high-cardinality aggregate) runs:

- ``engine``: ``run_export`` to a local temp file (DuckDB renders lines, isal gzip);
- ``clean``: the same with the file's clean columns known (``--clean``: what every export
  but the first of a dataset version does), and ``scan``, finding them (what the first pays);
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
import statistics
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
    from dataset_export.engine.duckdb_engine import clean_columns
    from dataset_export.engine.sql.duckdb_dialect import compile_query

    query = parse_dataset(dataset_for(args.case), RENTAL_LISTINGS, max_rows=10**9)
    suffix = ".csv.gz" if args.fmt == "csv" else ".jsonl.gz"
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        target = Path(tmp) / f"out{suffix}"
        clean = frozenset[str]()
        if args.path == "clean":  # known before the export, as a later export knows it
            clean = clean_columns(args.parquet, settings=EngineSettings(temp_directory=tmp))
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        if args.path == "scan":
            clean_columns(args.parquet, settings=EngineSettings(temp_directory=tmp))
            target.write_bytes(b"")
            rows, raw = -1, -1
        elif args.path in ("engine", "arrow", "clean"):
            with target.open("wb") as out:
                stats = run_export(
                    args.parquet,
                    query,
                    args.fmt,
                    out,
                    batch_rows=args.batch_rows,
                    render="arrow" if args.path == "arrow" else "duckdb",
                    settings=EngineSettings(temp_directory=tmp),
                    clean=clean,
                )
            rows, raw = stats.rows, stats.uncompressed_bytes
        elif args.path == "floor":
            rows, raw = floor(args.parquet, query, target, args.batch_rows, tmp)
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


def floor(parquet: str, query: Any, target: Path, batch_rows: int, tmp: str) -> tuple[int, int]:
    """The cheapest CSV-like pipeline DuckDB and isal make of the query's columns.

    Every field ``CAST(... AS VARCHAR)``, joined by commas: no quoting check, no NaN check
    (so not valid CSV in general), streamed as Arrow batches into the engine's gzip sink (isal
    level 2). Its CPU seconds over the cores is the floor the engine is compared with: Parquet
    decode, the least formatting, compression, on this machine under the same load.
    """
    import duckdb

    from dataset_export.engine import EngineSettings
    from dataset_export.engine.gzip_sink import GzipSink
    from dataset_export.engine.render import LinesEncoder

    con = duckdb.connect(":memory:", config={
        "memory_limit": EngineSettings().memory_limit, "temp_directory": tmp,
        "preserve_insertion_order": False,
    })  # fmt: skip
    try:
        con.execute("SET enable_progress_bar = false")
        con.read_parquet(parquet).create_view("dataset")
        reader = con.sql(floor_sql(query)).to_arrow_reader(batch_rows)
        encoder, rows = LinesEncoder(), 0
        with target.open("wb") as out, GzipSink(out) as sink:
            for batch in reader:
                sink.write(encoder.encode(batch))
                rows += batch.num_rows
        return rows, sink.uncompressed_bytes
    finally:
        con.close()


def floor_sql(query: Any) -> str:
    """The floor's formatting: every field of the query's columns ``CAST AS VARCHAR``, joined
    by commas, over the view ``dataset``."""
    from dataset_export.engine.sql.duckdb_dialect import quote_identifier

    names = [quote_identifier(s.column.name) for s in query.scopes]
    fields = ", ',', ".join(f"CAST({name} AS VARCHAR)" for name in names)
    return f"SELECT concat({fields}, chr(10)) FROM dataset"  # noqa: S608 - checked names


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


def measure(args: argparse.Namespace, parquet: Path, case: str, fmt: str) -> dict[str, Any]:
    """Each path ``--repeat`` times, interleaved, each run a subprocess: the median run per path."""
    runs: dict[str, list[dict[str, Any]]] = {path: [] for path in args.paths}
    for _ in range(args.repeat):
        for path in args.paths:
            command = [sys.executable, __file__, "--worker", "--parquet", str(parquet)]
            command += ["--case", case, "--fmt", fmt, "--path", path]
            command += ["--batch-rows", str(args.batch_rows)]
            load = os.getloadavg()[0]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{path} {case} {fmt} failed:\n{done.stderr}")
            runs[path].append({**json.loads(done.stdout.strip().splitlines()[-1]), "load": load})
    results = {}
    for path, done_runs in runs.items():
        ordered = sorted(done_runs, key=lambda r: r["seconds"])
        best = dict(ordered[len(ordered) // 2])
        best["min"] = ordered[0]["seconds"]
        best["cpu"] = statistics.median(r["cpu"] for r in done_runs)
        best["cpu_min"] = min(r["cpu"] for r in done_runs)
        best["seconds_all"] = [round(r["seconds"], 2) for r in done_runs]
        best["rss"] = max(r["rss"] for r in done_runs)
        best["load"] = statistics.median(r["load"] for r in done_runs)
        results[path] = best
    return results


class BenchDataset:
    """``Datasets`` for a bench's local file, with an identity (a digest of its bytes, taken
    once: the file does not change while a bench runs), so that the runner keeps and uses its
    clean columns as it does a Cloud Storage generation's. ``FixedDataset`` gives a local file
    none: in general it can be rewritten in place."""

    def __init__(self, path: str) -> None:
        import hashlib

        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        self.path, self.identity = path, f"bench-file:{digest}"

    def open(self, version: str | None = None) -> Any:
        """The file, unversioned, with its identity."""
        from dataset_export.service.ports import DatasetFile

        return DatasetFile(self.path, None, self.identity)


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
    parser.add_argument(
        "--floor", action="store_true", help="also the floor pipeline (CSV: no quoting checks)"
    )
    parser.add_argument(
        "--clean", action="store_true", help="also CSV with the clean columns known, and the scan"
    )
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
    args.paths = ["engine"] + (["floor"] if args.floor and "csv" in args.formats else [])
    args.paths += ["clean", "scan"] if args.clean and "csv" in args.formats else []
    args.paths += ["arrow"] if args.arrow else []
    if not args.no_copy:
        args.paths += ["copy"] + (["copy-default"] if args.copy_default else [])
    cores = os.cpu_count() or 1
    header = f"{'rows':>11} {'case':<10} {'fmt':<5} {'path':<13} {'seconds':>8} {'min':>6}"
    header += f" {'CPU s':>6} {'CPU min':>7} {'rows/s':>11} {'MB/s':>7} {'out MB':>7} {'gz MB':>7}"
    header += f" {'peak RSS':>9} {'x faster':>8} {'load':>5}  runs"
    print(header)
    for rows in args.rows:
        parquet = ensure_dataset(rows, args.cache)
        for case in args.cases:
            for fmt in args.formats:
                saved = args.paths
                if fmt != "csv":
                    args.paths = [p for p in saved if p not in ("floor", "clean", "scan")]
                results = measure(args, parquet, case, fmt)
                args.paths = saved
                engine = results["engine"]
                for path, r in results.items():
                    raw = engine["raw"] if r["raw"] < 0 else r["raw"]
                    n = engine["rows"]
                    ratio = ""
                    if path.startswith("copy"):
                        ratio = f"{r['seconds'] / engine['seconds']:.1f}x"
                    print(
                        f"{rows:>11,} {case:<10} {fmt:<5} {path:<13} {r['seconds']:>8.2f} "
                        f"{r['min']:>6.2f} {r['cpu']:>6.2f} {r['cpu_min']:>7.2f} "
                        f"{n / r['seconds']:>11,.0f} {raw / 1e6 / r['seconds']:>7.0f} "
                        f"{raw / 1e6:>7.0f} {r['gz'] / 1e6:>7.1f} "
                        f"{r['rss'] / 2**20:>7.0f}MB {ratio:>8} {r['load']:>5.1f}  "
                        f"{r['seconds_all']}",
                        flush=True,
                    )
                for path in ("engine", "clean") if "floor" in results else ():
                    if path not in results:
                        continue
                    fl, r = results["floor"], results[path]
                    print(
                        f"{'':>11} {case:<10} {fmt:<5} floor = floor CPU / {cores} cores: "
                        f"{fl['cpu'] / cores:.2f} s (min {fl['cpu_min'] / cores:.2f}); {path} / "
                        f"floor: {r['seconds'] / (fl['cpu'] / cores):.2f}x wall (min "
                        f"{r['min'] / (fl['cpu_min'] / cores):.2f}x), "
                        f"{r['cpu'] / fl['cpu']:.2f}x CPU (min "
                        f"{r['cpu_min'] / fl['cpu_min']:.2f}x)",
                        flush=True,
                    )
    print("MB/s counts the engine's uncompressed output; peak RSS is the worst of the runs.")
    print(f"median of {args.repeat} runs (interleaved), min beside it; every run in its own")
    print("process; CPU s = user + system; load = the 1-minute load average before each run.")


if __name__ == "__main__":
    main()
