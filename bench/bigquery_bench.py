"""``make bench``: the BigQuery path on the BigQuery emulator (issue 12): plan, then every
Storage Read stream exported as one part, each in its own process. **Emulator figures**: the
emulator is ``bqemulator`` (DuckDB behind BigQuery's REST and Storage Read APIs) on this one
machine, sharing its 2 cores with the exporter; they say what the project's side of the path
costs and that it works at this size, not what BigQuery does.

Starts the emulator alone on its own ports (``--rest-port``/``--grpc-port``, through the local
stack, stopped by PID at the end), loads the cached bench dataset (``engine_bench.ensure_dataset``)
into a table with the catalog's schema (``bigquery_load.load_parquet``), and for a full-table CSV
and JSONL export and each requested stream count (``--streams``, default 1 2 4 8):

- **plan**: ``BigQueryEngine.plan`` as the process function runs it, with a fresh queryUUID each
  time (so the job and the CTAS really run): the schema check, the dry run, the query job
  writing the per-export result table, its row count, then the read session. The session's
  ``create_read_session`` is timed apart (read session s); job + CTAS s is the rest. The streams
  the session actually returned are reported beside the ones requested;
- **parts**: each stream is exported by ``BigQueryEngine.export(part=...)`` in a fresh worker
  process (so its CPU and peak RSS are its own), started before the clock and warm (imports,
  clients and upload ready, as on a warm instance), at most ``--workers`` (2: the machine's
  cores) running at a time, into a real
  ``GcsUpload`` (``GcsExportStorage.open_upload``) to the discard endpoint
  (``discard_gcs.py``, the same one ``process_bench.py`` uses), which drops the bytes after
  computing the CRC32C the upload checks: Storage Read → Arrow → ``engine.render`` → isal
  gzip member → resumable upload, without a storage server's own cost;
- then ``finish`` drops the result table; the parts' rows must add up to its row count.

Reports, median of ``--repeat`` runs with the best run beside it (the minimum for seconds, the
maximum for rates): plan seconds (job and session apart), the export phase's wall seconds
(first part started → last part committed), the fastest and slowest part's seconds, rows/s in
total (rows / export wall) and per stream (the median part's rows / its own seconds), the CPU
seconds of our part workers (user + system, summed) against the emulator's (``/proc/<pid>/stat``
utime + stime of its process group, over the export phase), our workers' largest peak RSS
(VmHWM) and the emulator's RSS. Not a test.
``python bench/bigquery_bench.py --rows 1000000``. The emulator's memory grows with every
export (~210 MB per 1M-row export, never returned): sizes much above 1M rows need it restarted
between cases, which this bench does not do.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from discard_gcs import DiscardGcs  # noqa: E402
from engine_bench import cpu_seconds, dataset_for, ensure_dataset, peak_rss  # noqa: E402

PROJECT = "dwe-bench"
TABLE = f"{PROJECT}.listings.rental_listings"
SOURCE = f"bq://{TABLE}"
TEMP = "dwe_tmp"
BUCKET = "dwe-bench-exports"
FORMATS = ("csv", "jsonl")
#: The emulator's resident memory per million rows loaded (measured: ~745 MB at 1M rows); a
#: size is benched only when the machine has room for its table and one result table (CTAS).
MB_PER_MILLION_ROWS = 800


def make_engine(rest: str, grpc: str) -> Any:
    from dataset_export.adapters.bigquery_engine import BigQueryEngine
    from dataset_export_tools.bigquery_load import emulator_clients

    client, read = emulator_clients(PROJECT, rest, grpc)
    # "table": the emulator cannot Storage-Read an anonymous table (bigquery_engine docstring).
    return BigQueryEngine(
        client, read, temp_dataset=TEMP, location="US", max_bytes_billed=10**13,
        ordered_results="table",
    )  # fmt: skip


def full_query() -> Any:
    from dataset_export.core.catalog import RENTAL_LISTINGS
    from dataset_export.core.query import parse_dataset

    return parse_dataset(dataset_for("full"), RENTAL_LISTINGS, max_rows=10**9)


def part_worker(args: argparse.Namespace) -> None:
    """Export one stream as one part into a GcsUpload to the discard endpoint; a JSON line.

    A warm instance: the imports, the clients and the query are ready before the clock starts;
    the worker says ``ready`` and waits for ``go`` on stdin (the bench starts it when a slot is
    free)."""
    from google.cloud import storage

    from dataset_export.adapters.gcs_storage import GcsExportStorage
    from dataset_export.core.parts import PartSpec

    engine = make_engine(args.rest, args.grpc)
    query = full_query()
    # STORAGE_EMULATOR_HOST (the discard endpoint) makes the client anonymous and local.
    store = GcsExportStorage(storage.Client(project=PROJECT), BUCKET)
    upload = store.open_upload(f"bench/{uuid.uuid4()}/part-{args.index:05d}.gz", metadata={})
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    cpu_before = cpu_seconds()
    began = time.time()
    started = time.perf_counter()
    rows = engine.export(
        SOURCE, query, args.fmt, upload, part=PartSpec(args.index, stream=args.stream or None),
        header=False,
    )  # fmt: skip
    info = upload.commit()
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "gz": info.size, "seconds": seconds,
                      "cpu": cpu_seconds() - cpu_before, "rss": peak_rss(),
                      "started": began, "ended": began + seconds}))  # fmt: skip


class TimedRead:
    """The Storage Read client, timing ``create_read_session`` (the rest passes through)."""

    def __init__(self, read: Any) -> None:
        self._read = read
        self.session_seconds = 0.0

    def create_read_session(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._read.create_read_session(*args, **kwargs)
        finally:
            self.session_seconds += time.perf_counter() - started

    def __getattr__(self, name: str) -> Any:
        return getattr(self._read, name)


def group_cpu(pgid: int) -> float:
    """User + system CPU seconds of a process group's live members (``/proc/<pid>/stat``)."""
    from dataset_export_tools.localstack import procs

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in procs.group_members(pgid) | {pgid}:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / ticks


def rss_of(pid: int, key: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def start_worker(
    part: Any, fmt: str, rest: str, grpc: str, env: dict[str, str]
) -> subprocess.Popen[str]:
    """A part's worker process, which gets ready and waits for ``go`` (``part_worker``)."""
    cmd = [sys.executable, __file__, "--worker", "--rest", rest, "--grpc", grpc, "--fmt", fmt,
           "--index", str(part.index), "--stream", part.stream or ""]  # fmt: skip
    return subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip


def one_run(
    args: argparse.Namespace, engine: Any, timed: TimedRead, emulator_pid: int, fmt: str,
    streams: int, env: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """Plan, export every part (at most ``args.workers`` at a time), finish; the figures."""
    query_uuid = str(uuid.uuid4())
    timed.session_seconds = 0.0
    started = time.perf_counter()
    plan = engine.plan(
        SOURCE, full_query(), query_uuid=query_uuid, target_rows=1, max_parts=streams
    )
    plan_seconds = time.perf_counter() - started
    session_seconds = timed.session_seconds
    rest, grpc = env["BIGQUERY_EMULATOR_HOST"], env["BIGQUERY_EMULATOR_GRPC_HOST"]

    # Every part's worker starts now and waits, warm, for its turn (at most ``workers`` run).
    workers = [start_worker(part, fmt, rest, grpc, env) for part in plan.parts]
    for worker in workers:
        assert worker.stdout is not None
        if worker.stdout.readline().strip() != "ready":
            raise SystemExit(f"a part worker did not start:\n{worker.communicate()[1][-3000:]}")

    def export(worker: subprocess.Popen[str]) -> dict[str, Any]:
        out, err = worker.communicate("go\n")
        if worker.returncode != 0:
            raise SystemExit(f"a part failed:\n{err[-3000:]}")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    emulator_cpu = group_cpu(emulator_pid)
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.workers) as pool:
        parts = list(pool.map(export, workers))
    emulator_cpu = group_cpu(emulator_pid) - emulator_cpu
    engine.finish(query_uuid)
    rows = sum(p["rows"] for p in parts)
    if rows != plan.rows:
        raise SystemExit(f"the parts wrote {rows} rows, the result table holds {plan.rows}")
    wall = max(p["ended"] for p in parts) - min(p["started"] for p in parts)
    return {
        "plan": plan_seconds, "session": session_seconds, "job": plan_seconds - session_seconds,
        "streams": len(plan.parts), "wall": wall, "rows": rows, "rows_s": rows / wall,
        "stream_rows_s": statistics.median(p["rows"] / p["seconds"] for p in parts),
        "cpu": sum(p["cpu"] for p in parts), "emulator_cpu": emulator_cpu,
        "rss": max(p["rss"] for p in parts), "emulator_rss": rss_of(emulator_pid),
        "gz": sum(p["gz"] for p in parts),
        "part_min": min(p["seconds"] for p in parts), "part_max": max(p["seconds"] for p in parts),
    }  # fmt: skip


def fmt_pair(values: list[float], spec: str, best: Any = min, unit: str = "") -> str:
    """``median (best)`` of ``values``: the minimum for times, the maximum for rates."""
    median, top = format(statistics.median(values), spec), format(best(values), spec)
    return f"{median}{unit} ({top}{unit})"


def report(rows: int, fmt: str, wanted: int, runs: list[dict[str, Any]]) -> str:
    """One markdown table line: medians, the best run in brackets."""

    def col(key: str, scale: float = 1.0) -> list[float]:
        return [r[key] / scale for r in runs]

    got = sorted({r["streams"] for r in runs})
    return (
        f"| {rows / 1e6:g}M | {fmt.upper()} | {wanted} | {'/'.join(map(str, got))} "
        f"| {fmt_pair(col('job'), '.2f')} | {fmt_pair(col('session'), '.2f')} "
        f"| {fmt_pair(col('wall'), '.2f')} "
        f"| {statistics.median(col('part_min')):.2f}-{statistics.median(col('part_max')):.2f} "
        f"| {fmt_pair(col('rows_s', 1e3), ',.0f', max, 'k')} "
        f"| {fmt_pair(col('stream_rows_s', 1e3), ',.0f', max, 'k')} "
        f"| {statistics.median(col('cpu')):.2f} | {statistics.median(col('emulator_cpu')):.2f} "
        f"| {max(col('rss', 2**20)):.0f} MB | {max(col('emulator_rss', 2**20)):,.0f} MB "
        f"| {statistics.median(col('gz', 1e6)):.1f} |"
    )


HEADER = (
    "| rows | format | streams requested | streams returned | job + CTAS s | read session s "
    "| export wall s | one part s (fastest-slowest) | rows/s total | rows/s per stream "
    "| CPU s ours (all parts) | CPU s emulator | peak RSS ours (one part) | emulator RSS "
    "| gz MB |\n"
    "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def memory_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=list(FORMATS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="part processes at a time")
    parser.add_argument("--cache", type=Path, default=REPO / ".local" / "bench")
    parser.add_argument("--rest-port", type=int, default=26289)
    parser.add_argument("--grpc-port", type=int, default=26290)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rest", help=argparse.SUPPRESS)
    parser.add_argument("--grpc", help=argparse.SUPPRESS)
    parser.add_argument("--fmt", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        part_worker(args)
        return

    from dataset_export_tools.bigquery_load import load_parquet
    from dataset_export_tools.localstack.stack import Ports, StackConfig, down, up

    ports = dataclasses.replace(Ports(), bigquery=args.rest_port, bigquery_grpc=args.grpc_port)
    config = StackConfig(
        state_dir=REPO / ".local" / "bench-bigquery", repo_root=REPO, ports=ports,
        project=PROJECT, parts=frozenset({"bigquery"}), prepare_dataset=False,
        create_demo_key=False,
    )  # fmt: skip
    datasets = {rows: ensure_dataset(rows, args.cache) for rows in args.rows}
    t0 = time.perf_counter()
    info = up(config)
    print(f"emulator ready in {time.perf_counter() - t0:.1f} s (pid {info.pids['bigquery']})")
    emulator_pid = info.pids["bigquery"]
    lines = []
    try:
        with DiscardGcs() as discard:
            env = {**os.environ, **info.env, "STORAGE_EMULATOR_HOST": discard.url,
                   "PYTHONUNBUFFERED": "1"}  # fmt: skip
            engine = make_engine(info.env["BIGQUERY_EMULATOR_HOST"],
                                 info.env["BIGQUERY_EMULATOR_GRPC_HOST"])  # fmt: skip
            timed = TimedRead(engine.read_client)
            engine.read_client = timed
            engine.client.create_dataset(f"{PROJECT}.{TEMP}", exists_ok=True)
            print(
                f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
                f"{platform.python_version()}; load {os.getloadavg()[0]:.1f}"
            )
            print(HEADER, flush=True)
            for rows in args.rows:
                need = 2 * rows / 1e6 * MB_PER_MILLION_ROWS * 2**20
                available = memory_available()
                if available < need + 2 * 2**30:
                    print(f"skipping {rows:,} rows: {available / 2**30:.1f} GiB available, the "
                          f"emulator would need ~{need / 2**30:.1f} GiB")  # fmt: skip
                    continue
                t0 = time.perf_counter()
                loaded = load_parquet(engine.client, datasets[rows], TABLE, timeout=1800)
                print(f"loaded {loaded:,} rows in {time.perf_counter() - t0:.1f} s; emulator "
                      f"RSS {rss_of(emulator_pid) / 2**20:,.0f} MB", flush=True)  # fmt: skip
                for fmt in args.formats:
                    for wanted in args.streams:
                        runs = [one_run(args, engine, timed, emulator_pid, fmt, wanted, env)
                                for _ in range(args.repeat)]  # fmt: skip
                        line = report(rows, fmt, wanted, runs)
                        lines.append(line)
                        print(line, flush=True)
                engine.client.delete_table(TABLE, not_found_ok=True)
            print(f"emulator peak RSS {rss_of(emulator_pid, 'VmHWM') / 2**20:,.0f} MB")
            print(
                f"EMULATOR figures (bqemulator, DuckDB-backed, this one machine): median of "
                f"{args.repeat}, the best run in brackets; parts {args.workers} at a time, each "
                "in its own warm process, into GcsUpload to the discard endpoint"
            )
    finally:
        down(config)


if __name__ == "__main__":
    main()
