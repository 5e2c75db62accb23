"""``make bench``: the real process function's code path, upload included, against DuckDB COPY.

Starts the emulators (Pub/Sub, Firestore, fake-gcs-server) on their own ports, generates the
datasets once (cached in ``.local/bench``), and for each size and case runs, each in a fresh
subprocess so its peak RSS (``VmHWM``) is its own:

- ``process``: ``ExportRunner.handle`` as the process function runs it (claim in Firestore,
  DuckDB → CSV/JSONL → isal gzip → resumable upload to the GCS emulator, progress, completion,
  ready message);
- ``copy``: DuckDB's own ``COPY (<the same compiled query>) TO 'x.csv.gz' / 'x.json.gz'`` to a
  local file (no upload) with the same memory limit and insertion order off, measured in the same
  run as the baseline.

Prints seconds, rows/s, MB/s (compressed bytes uploaded), peak RSS and ``copy / process``.
Not a test. ``python bench/process_bench.py --rows 1000000 10000000``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from engine_bench import dataset_for, ensure_dataset, peak_rss  # noqa: E402

BENCH_CASES = [("full", "csv"), ("full", "jsonl"), ("selective", "csv"), ("aggregate", "csv")]


def process_worker(args: argparse.Namespace) -> None:
    """One export through ExportRunner in this process; prints a JSON line."""
    # A warm instance: DuckDB and pyarrow are imported once per instance (about 0.4 s here),
    # not per export, so load them before the clock starts.
    import dataset_export.engine.duckdb_engine  # noqa: F401
    from dataset_export.adapters.firestore_store import FirestoreStore
    from dataset_export.config import Settings
    from dataset_export.core.dataset import SubmittedDataset
    from dataset_export.core.records import ExportRecord, ExportStatus
    from dataset_export.wiring import build_export_runner

    settings = Settings.from_env()
    runner = build_export_runner(settings)
    runner.dataset_path = lambda: args.parquet
    store = FirestoreStore.for_project(settings.project)
    query_uuid = str(uuid.uuid4())
    store.create_export(
        ExportRecord(
            query_uuid=query_uuid, account_id="bench", key_hash="bench", key_id="bench",
            name="bench", format=args.fmt, webhook_url="https://example.com/h",
            dataset=SubmittedDataset(json.dumps(dataset_for(args.case))),
            status=ExportStatus.QUEUED, requested_on=dt.datetime.now(dt.UTC),
        )
    )  # fmt: skip
    engine, engine_done = runner.engine, [0.0]

    def timed_engine(*args: Any, **kwargs: Any) -> int:
        rows: int = engine(*args, **kwargs)
        engine_done[0] = time.perf_counter()
        return rows

    runner.engine = timed_engine
    started = time.perf_counter()
    runner.handle(query_uuid)
    finished = time.perf_counter()
    seconds = finished - started
    record = store.get_export(query_uuid)
    if record is None or record.status is not ExportStatus.SUCCEEDED:
        raise SystemExit(f"export did not succeed: {record}")
    print(
        json.dumps(
            {
                "seconds": seconds,
                # From the last byte handed to the upload to the recorded completion: draining
                # the buffer, the storage server finalizing the object, the Firestore write.
                "tail": finished - engine_done[0],
                "rows": record.number_rows,
                "gz": record.size_bytes,
                "rss": peak_rss(),
            }
        )
    )


def run(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--cache", type=Path, default=REPO / ".local" / "bench")
    parser.add_argument("--port-base", type=int, default=26081)
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=[f"{case}-{fmt}" for case, fmt in BENCH_CASES],
        help="run only these cases (default: all)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--fmt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        process_worker(args)
        return

    import duckdb
    import pyarrow

    from dataset_export_tools.localstack.stack import Ports, StackConfig, down, up

    config = StackConfig(
        state_dir=REPO / ".local" / "bench-stack", repo_root=REPO,
        ports=Ports.starting_at(args.port_base), project="dwe-bench",
        parts=frozenset({"pubsub", "firestore", "gcs"}),
        prepare_dataset=False, create_demo_key=False,
    )  # fmt: skip
    info = up(config)
    env = {
        **os.environ, **info.env, "EXPORT_ENV": "local", "EXPORT_BUCKET": config.exports_bucket,
        "EXPORT_DATASET_URI": "unused: the bench names the file", "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    try:
        print(
            f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
            f"{platform.python_version()}, duckdb {duckdb.__version__}, "
            f"pyarrow {pyarrow.__version__}"
        )
        print(f"{'rows':>11} {'case':<10} {'fmt':<5} {'path':<8} {'seconds':>8} {'rows/s':>11} "
              f"{'gz MB/s':>8} {'gz MB':>7} {'peak RSS':>9} {'copy/process':>12} "
              f"{'tail s':>7}")  # fmt: skip
        # One unmeasured export first: the emulators' JVMs answer their first calls slowly.
        warm = ensure_dataset(min(args.rows), args.cache)
        run([sys.executable, __file__, "--worker", "--parquet", str(warm), "--case", "selective",
             "--fmt", "csv"], env)  # fmt: skip
        for rows in args.rows:
            parquet = ensure_dataset(rows, args.cache)
            for case, fmt in BENCH_CASES:
                if args.cases and f"{case}-{fmt}" not in args.cases:
                    continue
                mine = run([sys.executable, __file__, "--worker", "--parquet", str(parquet),
                            "--case", case, "--fmt", fmt], env)  # fmt: skip
                copy = run([sys.executable, str(HERE / "engine_bench.py"), "--worker",
                            "--parquet", str(parquet), "--case", case, "--fmt", fmt,
                            "--path", "copy", "--batch-rows", "32768"], env)  # fmt: skip
                for name, r in (("process", mine), ("copy", copy)):
                    ratio = f"{copy['seconds'] / mine['seconds']:.1f}x" if name == "copy" else ""
                    tail = f"{r['tail']:.2f}" if "tail" in r else ""
                    rate = mine["rows"] / r["seconds"]
                    print(
                        f"{rows:>11,} {case:<10} {fmt:<5} {name:<8} {r['seconds']:>8.2f} "
                        f"{rate:>11,.0f} {r['gz'] / 1e6 / r['seconds']:>8.1f} "
                        f"{r['gz'] / 1e6:>7.1f} {r['rss'] / 2**20:>7.0f}MB {ratio:>12} {tail:>7}",
                        flush=True,
                    )
        print("process = the real ExportRunner, upload to the GCS emulator included;")
        print("copy = DuckDB COPY to a local file (no upload). One run each, own process.")
        print("tail s = from the engine's last byte to the recorded completion (upload finalize).")
    finally:
        down(config)


if __name__ == "__main__":
    main()
