"""``make bench``: the real process function's code path, upload included, against DuckDB COPY.

Starts the emulators (Pub/Sub, Firestore, fake-gcs-server) on their own ports and a discard
endpoint (``discard_gcs.py``), generates the datasets once (cached in ``.local/bench``), and for
each size and case runs, each in a fresh subprocess so its peak RSS (``VmHWM``) is its own:

- ``emulator``: ``ExportRunner.handle`` as the process function runs it (claim in Firestore,
  DuckDB → CSV/JSONL → isal gzip → resumable upload to fake-gcs-server, progress, completion,
  ready message), with the dataset's clean columns known, as every export but a dataset
  version's first has them (the scan is learnt before the clock starts);
- ``discard``: the same, but the upload goes to the discard endpoint, which speaks the same
  resumable-upload protocol, checks nothing but computes the CRC32C the uploader verifies, and
  drops the bytes: the project's own time, without the emulator finalizing the object;
- ``copy``: DuckDB's own ``COPY (<the same compiled query>) TO 'x.csv.gz' / 'x.json.gz'`` to a
  local file (no upload) with the same memory limit and insertion order off, measured in the same
  run as the baseline.

Prints seconds, CPU seconds (user + system of the worker), rows/s, MB/s (compressed bytes
uploaded), peak RSS, ``copy / discard`` and the tail (engine's last byte → recorded completion);
``emulator tail - discard tail`` is what fake-gcs-server's finalize costs. With ``--repeat N``
each path runs N times (interleaved) and the figures are the median, with the minimum beside
the seconds. Not a test. ``python bench/process_bench.py --rows 1000000 10000000``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from discard_gcs import DiscardGcs  # noqa: E402
from engine_bench import (  # noqa: E402
    BenchDataset,
    cpu_seconds,
    dataset_for,
    ensure_dataset,
    peak_rss,
)

BENCH_CASES = [("full", "csv"), ("full", "jsonl"), ("selective", "csv"), ("aggregate", "csv")]
PATHS = ("emulator", "discard", "copy")


@contextlib.contextmanager
def bench_stack(state: str, port_base: int) -> Iterator[tuple[Any, dict[str, str]]]:
    """Pub/Sub, Firestore and fake-gcs-server on ports from ``port_base`` (state in
    ``.local/<state>``), with this process's clients pointed at them: the stack's config and the
    workers' environment; stopped by PID at the end."""
    from dataset_export_tools.localstack.stack import Ports, StackConfig, down, up

    config = StackConfig(
        state_dir=REPO / ".local" / state, repo_root=REPO,
        ports=Ports.starting_at(port_base), project="dwe-bench",
        parts=frozenset({"pubsub", "firestore", "gcs"}),
        prepare_dataset=False, create_demo_key=False,
    )  # fmt: skip
    info = up(config)
    env = {
        **os.environ, **info.env, "EXPORT_ENV": "local", "EXPORT_BUCKET": config.exports_bucket,
        "EXPORT_DATASET_URI": "unused: the bench names the file", "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    os.environ.update({k: v for k, v in info.env.items() if k.endswith("_EMULATOR_HOST")})
    try:
        yield config, env
    finally:
        down(config)


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
    runner.datasets = BenchDataset(args.parquet)
    # One export as one part, whatever its size (parts_bench.py measures the parts): without
    # this, 10M rows are planned as 5 parts and handed to the parts topic.
    runner.parts_queue = None
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
    export, engine_done = runner.engine.export, [0.0]

    def timed_export(*args: Any, **kwargs: Any) -> int:
        rows: int = export(*args, **kwargs)
        engine_done[0] = time.perf_counter()
        return rows

    runner.engine.export = timed_export  # type: ignore[method-assign]
    # Every export but a dataset version's first knows its clean columns: measure that one
    # (engine_bench.py --clean times the scan the first export does after it).
    dataset = runner.datasets.open()
    if runner.known_clean_columns(dataset, query_uuid) is None:
        runner.learn_clean_columns(dataset, query_uuid)
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    runner.handle(query_uuid)
    finished = time.perf_counter()
    seconds = finished - started
    cpu = cpu_seconds() - cpu_before
    record = store.get_export(query_uuid)
    if record is None or record.status is not ExportStatus.SUCCEEDED:
        raise SystemExit(f"export did not succeed: {record}")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
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
    load = os.getloadavg()[0]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["load"] = load
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median run of ``runs`` by seconds, with the minimum and the worst peak RSS."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    summary = dict(ordered[len(ordered) // 2])
    summary["min"] = ordered[0]["seconds"]
    summary["rss"] = max(r["rss"] for r in runs)
    summary["cpu"] = statistics.median(r["cpu"] for r in runs)
    if all("tail" in r for r in runs):
        summary["tail"] = statistics.median(r["tail"] for r in runs)
    summary["load"] = statistics.median(r["load"] for r in runs)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--cache", type=Path, default=REPO / ".local" / "bench")
    parser.add_argument("--port-base", type=int, default=26081)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each path (median shown)")
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=[f"{case}-{fmt}" for case, fmt in BENCH_CASES],
        help="run only these cases (default: all)",
    )
    parser.add_argument(
        "--paths", nargs="+", choices=PATHS, default=list(PATHS), help="default: all three"
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

    with bench_stack("bench-stack", args.port_base) as (_, env), DiscardGcs() as discard:
        envs = {"emulator": env, "discard": {**env, "STORAGE_EMULATOR_HOST": discard.url}}
        print(
            f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
            f"{platform.python_version()}, duckdb {duckdb.__version__}, "
            f"pyarrow {pyarrow.__version__}"
        )
        print(f"{'rows':>11} {'case':<10} {'fmt':<5} {'path':<9} {'seconds':>8} {'min':>6} "
              f"{'CPU s':>6} {'rows/s':>11} {'gz MB/s':>8} {'gz MB':>7} {'peak RSS':>9} "
              f"{'copy/x':>7} {'tail s':>7} {'load':>5}")  # fmt: skip
        # One unmeasured export each first: the emulators' JVMs answer their first calls
        # slowly.
        warm = ensure_dataset(min(args.rows), args.cache)
        for path in ("emulator", "discard"):
            run([sys.executable, __file__, "--worker", "--parquet", str(warm), "--case",
                 "selective", "--fmt", "csv"], envs[path])  # fmt: skip
        for rows in args.rows:
            parquet = ensure_dataset(rows, args.cache)
            for case, fmt in BENCH_CASES:
                if args.cases and f"{case}-{fmt}" not in args.cases:
                    continue
                runs: dict[str, list[dict[str, Any]]] = {path: [] for path in args.paths}
                for _ in range(args.repeat):
                    for path in args.paths:
                        runs[path].append(run(command(path, parquet, case, fmt),
                                              envs.get(path, env)))  # fmt: skip
                report(rows, case, fmt, {p: summarize(r) for p, r in runs.items()})
        print("emulator = the real ExportRunner, upload to fake-gcs-server included;")
        print("discard = the same upload to a local endpoint that drops the bytes;")
        print("copy = DuckDB COPY to a local file (no upload). Every run in its own process.")
        print("tail s = from the engine's last byte to the recorded completion; the emulator's")
        print("finalize is emulator tail - discard tail. CPU s = user + system of the worker.")
        print(f"seconds = median of {args.repeat} run(s), min beside it; load = 1-min average.")


def command(path: str, parquet: Path, case: str, fmt: str) -> list[str]:
    """The worker command line of one measured run."""
    if path == "copy":
        return [sys.executable, str(HERE / "engine_bench.py"), "--worker", "--parquet",
                str(parquet), "--case", case, "--fmt", fmt, "--path", "copy",
                "--batch-rows", "32768"]  # fmt: skip
    return [sys.executable, __file__, "--worker", "--parquet", str(parquet), "--case", case,
            "--fmt", fmt]  # fmt: skip


def report(rows: int, case: str, fmt: str, results: dict[str, dict[str, Any]]) -> None:
    """One table line per path, then the emulator's finalize cost when both uploads ran."""
    exported = next((r["rows"] for r in results.values() if r.get("rows", -1) >= 0), 0)
    base = results.get("discard") or results.get("emulator")
    for name, r in results.items():
        ratio = ""
        if name != "copy" and "copy" in results:
            ratio = f"{results['copy']['seconds'] / r['seconds']:.1f}x"
        gz = r["gz"] if r.get("gz", -1) >= 0 else (base or r)["gz"]
        tail = f"{r['tail']:.2f}" if "tail" in r else ""
        print(
            f"{rows:>11,} {case:<10} {fmt:<5} {name:<9} {r['seconds']:>8.2f} {r['min']:>6.2f} "
            f"{r['cpu']:>6.2f} {exported / r['seconds']:>11,.0f} "
            f"{gz / 1e6 / r['seconds']:>8.1f} {gz / 1e6:>7.1f} {r['rss'] / 2**20:>7.0f}MB "
            f"{ratio:>7} {tail:>7} {r['load']:>5.1f}",
            flush=True,
        )
    if "emulator" in results and "discard" in results:
        emulator, discard = results["emulator"], results["discard"]
        print(
            f"{'':>11} {case:<10} {fmt:<5} emulator finalize "
            f"{emulator['tail'] - discard['tail']:.2f} s of {emulator['seconds']:.2f} s; "
            f"the project's own time {discard['seconds']:.2f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
