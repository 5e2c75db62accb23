"""``make bench``, parts (issue 11): full-table exports planned as parts, each part in a process
of its own, composed into one file; the compose alone; and the model for N instances.

Starts the emulators (Pub/Sub, Firestore, fake-gcs-server) on their own ports and the discard
endpoint (``discard_gcs.py``: the resumable upload, and stat / compose / list / delete answered
from the objects' resources, so the storage server costs next to nothing), generates the
datasets once (cached in ``.local/bench``), then:

**Exports** (``--rows`` x ``--formats`` x ``--parts``): the export's request runs in one
process (the planner: ``ExportRunner.handle``, as the process function runs it: claim, the
engine's ``row_groups``, ``plan_parts`` with ``max_parts=k`` and ``part_rows=ceil(rows/k)``, the
plan written to Firestore, one message per part published); then each part runs in a process
of its own (``PartRunner.handle``: claim, the rows of its range through DuckDB, isal gzip and
``GcsUpload``, the part's record, and for the part that finishes last the compose, the clean-up
and the ready message), at most ``--workers`` at once (one process = one function instance;
the default, this machine's cores, and 1, which gives the per-part rate of ONE instance). One
part is the single export (``_hand_to_parts`` declines a plan of one part). Every process is
started and warmed (imports, clients, DuckDB's database opened, a first Firestore and storage
call) before the clock starts, as a warm instance is. ``--paths discard`` (the default) sends
the parts to the discard endpoint: the project's own time; ``emulator`` to fake-gcs-server (its
finalize of each part and its byte-for-byte compose are the emulator's own cost, not Cloud
Storage's, which composes without moving data). After each run the export must have succeeded
with every row, and nothing may be left under ``tmp/<queryUUID>/``.

Printed per case: the export's wall time (plan + parts + compose), rows/s, the plan's seconds,
each part's wall and CPU seconds (median and range), its engine seconds, its fixed overhead
(wall minus engine minus compose: claim, the part's record writes, the upload's final drain and
answer), the composer's compose seconds and the peak RSS of the worst worker.

**Compose** (``--compose-sources``): ``PartRunner.compose_if_last`` on an export whose parts
are done (records and objects made beforehand, not timed), in a warm process, against
fake-gcs-server (an emulator figure) and against the discard endpoint (the project's own cost),
with tiny objects and with the sizes of a real export's parts (``--compose-bytes`` split into
n); CSV, so the header makes n + 1 sources (1024 parts: three rounds).

**Model** (from the workers=1 discard runs and the compose runs): per-part rate and fixed
overhead (a least-squares line of part seconds against part rows), T(rows, P, N) = t_plan +
ceil(P/N) * t_part(rows/P) + t_compose(P), and the export sizes that fit the 540 s limit of an
event-driven function.

``--repeat N`` runs everything N times, interleaved; figures are the median with the minimum.
``--json FILE`` writes every run. Not a test:
``python bench/parts_bench.py --rows 10000000 20000000 --repeat 3``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import gzip
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

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
from process_bench import bench_stack  # noqa: E402

PATHS = ("discard", "emulator")
FUNCTION_LIMIT_S = 540.0  # an event-driven Cloud Function's timeout (process_function default)
COMPOSE_SOURCES = (2, 4, 8, 16, 32, 64, 1024)
RESULT = "RESULT "


# --- the worker: one process, one function instance ------------------------------------------


class Timer:
    """Seconds and calls per name, summed (thread-safe: the compose sends calls in parallel)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def add(self, name: str, seconds: float) -> None:
        with self.lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds
            self.calls[name] = self.calls.get(name, 0) + 1

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - started)

        return timed

    def total(self, prefix: str) -> float:
        return sum(s for n, s in self.seconds.items() if n.startswith(prefix))


class Timed:
    """``target`` with every method call timed under ``prefix.method``."""

    def __init__(self, target: Any, timer: Timer, prefix: str) -> None:
        self._target, self._timer, self._prefix = target, timer, prefix

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return value
        return self._timer.wrap(f"{self._prefix}.{name}", value)


class TimedUpload:
    """An upload whose first write (which opens the resumable session) and commit (the drain
    of the last buffered bytes and the server's answer) are timed apart."""

    def __init__(self, upload: Any, timer: Timer) -> None:
        self._upload, self._timer, self._first = upload, timer, True

    def write(self, data: bytes, /) -> int:
        if self._first:
            self._first = False
            return int(self._timer.wrap("upload.session", self._upload.write)(data))
        return int(self._upload.write(data))

    def commit(self) -> Any:
        return self._timer.wrap("upload.commit", self._upload.commit)()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upload, name)


class TimedStorage(Timed):
    def open_upload(self, name: str, *, metadata: dict[str, str]) -> TimedUpload:
        return TimedUpload(self._target.open_upload(name, metadata=metadata), self._timer)


def worker(args: argparse.Namespace) -> None:
    """Warm up, say READY, run the one command read from stdin, print its RESULT line."""
    from dataset_export.config import Settings
    from dataset_export.core.catalog import RENTAL_LISTINGS
    from dataset_export.core.errors import TransientError
    from dataset_export.core.query import parse_dataset
    from dataset_export.wiring import build_export_runner

    settings = Settings.from_env()
    runner = build_export_runner(settings)
    runner.datasets = BenchDataset(args.parquet)
    # Measure what every export but a dataset version's first does: its clean columns known
    # (process_bench.py does the same), learnt before anything is timed.
    dataset = runner.datasets.open()
    if runner.known_clean_columns(dataset, "bench") is None:
        runner.learn_clean_columns(dataset, "bench")
    # A warm instance: DuckDB's database open, the Firestore channel and the storage
    # connection made by an earlier message.
    query = parse_dataset(dataset_for("full"), RENTAL_LISTINGS, max_rows=10**12)
    runner.engine.row_groups(args.warm_parquet, query)
    runner.store.get_export(f"warm-{uuid.uuid4()}")
    runner.storage.stat(f"warm/{uuid.uuid4()}")
    timer = Timer()
    runner.store = Timed(runner.store, timer, "store")
    runner.storage = TimedStorage(runner.storage, timer, "storage")
    runner.engine = Timed(runner.engine, timer, "engine")
    runner.ready = Timed(runner.ready, timer, "ready")
    if runner.parts_queue is not None:
        runner.parts_queue = Timed(runner.parts_queue, timer, "queue")
    composer = [False]
    complete_export = runner.store.complete_export

    def completing(*a: Any, **k: Any) -> Any:
        composer[0] = True
        return complete_export(*a, **k)

    runner.store.complete_export = completing  # type: ignore[method-assign]
    runner.parts.compose_if_last = timer.wrap(  # type: ignore[method-assign]
        "compose_if_last", runner.parts.compose_if_last
    )
    print("READY", flush=True)
    command = json.loads(sys.stdin.readline())
    query_uuid = command["uuid"]
    result: dict[str, Any] = {"op": command["op"]}
    if command["op"] == "compose-setup":
        print(RESULT + json.dumps(compose_setup(runner, command)), flush=True)
        linger()
        return
    runner.part_rows = command.get("part_rows", runner.part_rows)
    runner.max_parts = command.get("max_parts", runner.max_parts)
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    try:
        if command["op"] == "plan":
            runner.handle(query_uuid)
        elif command["op"] == "part":
            runner.parts.handle(query_uuid, command["index"])
        else:
            runner.parts.compose_if_last(query_uuid)
    except TransientError as exc:  # a second finisher meeting the composer's lease
        result["transient"] = str(exc)[:300]
    result["seconds"] = time.perf_counter() - started
    result["cpu"] = cpu_seconds() - cpu_before
    result["rss"] = peak_rss()
    result["composer"] = composer[0]
    result["timers"] = timer.seconds
    result["calls"] = timer.calls
    if command["op"] == "part":
        read = runner.store.read_part(query_uuid, command["index"])
        if read is not None:
            result["rows"] = read.part.rows_written
            result["gz"] = read.part.size_bytes
    record = runner.store.get_export(query_uuid)
    if record is not None:
        result["status"] = record.status.value
        result["parts_total"] = record.parts_total
        result["number_rows"] = record.number_rows
        result["size"] = record.size_bytes
    print(RESULT + json.dumps(result), flush=True)
    linger()


def linger() -> None:
    """Stay until the orchestrator closes stdin: an instance does not exit after a message, and
    this process's teardown must not run beside the next part while the clock runs."""
    sys.stdin.read()


def compose_setup(runner: Any, command: dict[str, Any]) -> dict[str, Any]:
    """An export whose ``n`` parts are done: claimed, planned, each part's object uploaded and
    its record completed (not timed; parts uploaded 8 at a time)."""
    from dataset_export.core.lifecycle import claimed_part
    from dataset_export.core.parts import part_object_name
    from dataset_export.core.records import PartRecord

    query_uuid, n, size = command["uuid"], command["sources"], command["bytes"]
    store, storage = runner.store, runner.storage
    claim = runner.claim(query_uuid)
    if claim.record is None or claim.record.status.value != "running":
        raise SystemExit(f"could not claim export {query_uuid}: {claim}")
    store.write_plan(
        query_uuid,
        runner.worker,
        [PartRecord(query_uuid, i, i, i + 1, 1) for i in range(n)],
        planned_rows=n,
        engine="duckdb",
    )
    store.mark_parts_published(query_uuid, runner.worker, runner.clock())
    block = os.urandom(min(max(size, 1), 8 << 20))
    tiny = gzip.compress(b"1,2,3\n")

    def one(index: int) -> int:
        read = store.read_part(query_uuid, index)
        part = claimed_part(read.part, runner.worker, runner.clock(), runner.lease)
        store.write_part_claim(part, if_version=read.version)
        upload = storage.open_upload(
            part_object_name(query_uuid, index, part.attempts), metadata={"queryUUID": query_uuid}
        )
        if size <= len(tiny):
            upload.write(tiny)
        else:
            left = size
            while left:
                piece = block[: min(left, len(block))]
                upload.write(piece)
                left -= len(piece)
        info = upload.commit()
        store.complete_part(query_uuid, index, runner.worker, 1, info, runner.clock())
        return int(info.size)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sizes = list(pool.map(one, range(n)))
    return {"op": "compose-setup", "bytes": sum(sizes)}


# --- the orchestrator --------------------------------------------------------------------------


class Worker:
    """A warm worker process waiting for its one command."""

    def __init__(self, env: dict[str, str], parquet: Path, warm: Path) -> None:
        self._log: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in result()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", "--parquet", str(parquet),
             "--warm-parquet", str(warm)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env,
        )  # fmt: skip

    def _line(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :]
        self.proc.wait()
        self._log.seek(0)
        raise SystemExit(f"worker exited ({self.proc.returncode}):\n{self._log.read()[-4000:]}")

    def ready(self) -> None:
        self._line("READY")

    def run(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self._line(RESULT))
        return result

    def close(self) -> None:
        """Let the process exit (closing its stdin), killing it if it does not within 60 s."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def warm_workers(count: int, env: dict[str, str], parquet: Path, warm: Path) -> list[Worker]:
    workers = [Worker(env, parquet, warm) for _ in range(count)]
    try:
        for w in workers:
            w.ready()
    except BaseException:
        for w in workers:
            w.close()
        raise
    time.sleep(1.0)  # let the warm-ups' CPU settle before the clock starts
    return workers


@dataclasses.dataclass
class Bench:
    args: argparse.Namespace
    envs: dict[str, dict[str, str]]
    storages: dict[str, Any]
    store: Any
    warm: Path

    def new_export(self, fmt: str) -> str:
        from dataset_export.core.dataset import SubmittedDataset
        from dataset_export.core.records import ExportRecord, ExportStatus

        query_uuid = str(uuid.uuid4())
        self.store.create_export(
            ExportRecord(
                query_uuid=query_uuid, account_id="bench", key_hash="bench", key_id="bench",
                name="bench", format=fmt, webhook_url="https://example.com/h",
                dataset=SubmittedDataset(json.dumps(dataset_for("full"))),
                status=ExportStatus.QUEUED, requested_on=dt.datetime.now(dt.UTC),
            )
        )  # fmt: skip
        return query_uuid

    def finish(self, path: str, query_uuid: str, fmt: str, rows: int, parts: int) -> dict[str, Any]:
        """Check the export (succeeded, every row, nothing left under tmp/) and drop its file."""
        from dataset_export.core.parts import tmp_prefix
        from dataset_export.service.process import object_name

        record = self.store.get_export(query_uuid)
        if record is None or record.status.value != "succeeded":
            raise SystemExit(f"export {query_uuid} did not succeed: {record}")
        if record.number_rows != rows:
            raise SystemExit(f"export {query_uuid}: {record.number_rows} rows, expected {rows}")
        if parts > 1 and record.parts_total != parts:
            raise SystemExit(f"export {query_uuid}: {record.parts_total} parts, asked {parts}")
        storage = self.storages[path]
        left = storage.list(tmp_prefix(query_uuid))
        if left:
            raise SystemExit(f"export {query_uuid} left {[i.name for i in left]}")
        storage.delete(object_name(query_uuid, fmt))  # fake-gcs-server keeps objects in memory
        return {"size": record.size_bytes}

    def export(self, path: str, parquet: Path, rows: int, fmt: str, parts: int, workers: int
               ) -> dict[str, Any]:  # fmt: skip
        """One export planned as ``parts`` parts, at most ``workers`` parts at once."""
        env = self.envs[path]
        pool = warm_workers(1 + (parts if parts > 1 else 0), env, parquet, self.warm)
        query_uuid = self.new_export(fmt)
        load = os.getloadavg()[0]
        started = time.perf_counter()
        try:
            plan = pool[0].run(
                {"op": "plan", "uuid": query_uuid, "part_rows": -(-rows // parts),
                 "max_parts": parts}
            )  # fmt: skip
            results: list[dict[str, Any]] = []
            if parts > 1:
                if plan.get("parts_total") != parts:
                    raise SystemExit(f"planned {plan.get('parts_total')} parts, asked {parts}")
                with concurrent.futures.ThreadPoolExecutor(workers) as executor:
                    results = list(
                        executor.map(
                            lambda i: pool[1 + i].run(
                                {"op": "part", "uuid": query_uuid, "index": i}
                            ),
                            range(parts),
                        )
                    )
            seconds = time.perf_counter() - started
        finally:
            for w in pool:
                w.close()
        done = self.finish(path, query_uuid, fmt, rows, parts)
        return {
            "path": path, "rows": rows, "fmt": fmt, "parts": parts, "workers": workers,
            "seconds": seconds, "load": load, "plan": plan, "part_results": results, **done,
        }  # fmt: skip

    def compose(self, path: str, sources: int, size: int) -> dict[str, Any]:
        """compose_if_last on an export of ``sources`` done parts of ``size`` bytes each."""
        env = self.envs[path]
        setup, composer = warm_workers(2, env, self.warm, self.warm)
        query_uuid = self.new_export("csv")
        try:
            made = setup.run(
                {"op": "compose-setup", "uuid": query_uuid, "sources": sources, "bytes": size}
            )
            time.sleep(0.5)
            load = os.getloadavg()[0]
            result = composer.run({"op": "compose", "uuid": query_uuid})
        finally:
            setup.close()
            composer.close()
        if not result.get("composer"):
            raise SystemExit(f"compose of {sources} sources did not complete: {result}")
        self.finish(path, query_uuid, "csv", sources, sources)
        kind = "tiny" if size <= 1 else "real"
        return {"path": path, "sources": sources, "kind": kind, "bytes": made["bytes"],
                "load": load, **result}  # fmt: skip


# --- figures -----------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def part_figures(part: dict[str, Any]) -> dict[str, float]:
    """A part's seconds split: engine (DuckDB -> gzip -> upload body), compose (the composer's
    compose_if_last, else its check that not every part is done) and the fixed rest."""
    timers = part["timers"]
    engine = timers.get("engine.export", 0.0)
    compose = timers.get("compose_if_last", 0.0) if part.get("composer") else 0.0
    return {
        "seconds": part["seconds"],
        "cpu": part["cpu"],
        "engine": engine,
        "compose": compose,
        "overhead": part["seconds"] - engine - compose,
        "store": timers.get("store.read_part", 0.0) + timers.get("store.write_part_claim", 0.0)
        + timers.get("store.complete_part", 0.0) + timers.get("store.get_export", 0.0)
        + timers.get("store.list_parts", 0.0) + timers.get("store.record_part_progress", 0.0),
        "session": timers.get("upload.session", 0.0),
        "commit": timers.get("upload.commit", 0.0),
        "rows": part.get("rows", 0),
        "rss": part["rss"],
    }  # fmt: skip


def case_key(run: dict[str, Any]) -> tuple[Any, ...]:
    return (run["path"], run["rows"], run["fmt"], run["parts"], run["workers"])


def report_exports(runs: list[dict[str, Any]]) -> None:
    print()
    print("Exports (wall = plan + parts + compose; parts' figures: median [min-max] over parts"
          " and runs; min/median over runs)")  # fmt: skip
    print(f"{'path':<8} {'rows':>11} {'fmt':<5} {'P':>2} {'W':>2} {'wall s min/med':>15} "
          f"{'rows/s (med)':>12} {'plan s':>6} {'part s':>18} {'part CPU s':>17} "
          f"{'engine s':>8} {'fixed s':>7} {'compose s':>9} {'RSS MB':>6} {'load':>4} "
          "n")  # fmt: skip
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(case_key(run), []).append(run)
    for key in sorted(groups):
        group = groups[key]
        path, rows, fmt, parts, workers = key
        walls = sorted(r["seconds"] for r in group)
        figures = [part_figures(p) for r in group for p in r["part_results"]]
        plan = median(r["plan"]["seconds"] for r in group)
        if parts == 1:
            timers = [r["plan"]["timers"] for r in group]
            part_s = f"{plan:>6.2f} (one part)"
            cpu_s = f"{median(r['plan']['cpu'] for r in group):>6.2f}"
            engine = f"{median(t.get('engine.export', 0.0) for t in timers):>8.2f}"
            fixed, compose = "", ""
            rss = max(r["plan"]["rss"] for r in group)
            plan_s = f"{median(t.get('engine.row_groups', 0.0) for t in timers):>6.3f}"
        else:
            secs = [f["seconds"] - f["compose"] for f in figures]
            cpus = [f["cpu"] for f in figures]
            part_s = f"{median(secs):>6.2f} [{min(secs):.2f}-{max(secs):.2f}]"
            cpu_s = f"{median(cpus):>6.2f} [{min(cpus):.1f}-{max(cpus):.1f}]"
            engine = f"{median(f['engine'] for f in figures):>8.2f}"
            fixed = f"{median(f['overhead'] for f in figures):>7.3f}"
            composes = [f["compose"] for f in figures if f["compose"]]
            compose = f"{median(composes):>9.3f}" if composes else ""
            rss = max(max(f["rss"] for f in figures), max(r["plan"]["rss"] for r in group))
            plan_s = f"{plan:>6.3f}"
        print(
            f"{path:<8} {rows:>11,} {fmt:<5} {parts:>2} {workers:>2} "
            f"{walls[0]:>6.2f}/{median(walls):>7.2f} {rows / median(walls):>12,.0f} "
            f"{plan_s:>6} {part_s:>18} {cpu_s:>17} {engine:>8} {fixed:>7} {compose:>9} "
            f"{rss / 2**20:>6.0f} {median(r['load'] for r in group):>4.1f} {len(group)}",
            flush=True,
        )


def report_composes(runs: list[dict[str, Any]]) -> None:
    print()
    print("Compose: PartRunner.compose_if_last of n parts (+ the CSV header), min/median s;"
          " calls = storage calls it made")  # fmt: skip
    print(f"{'path':<8} {'kind':<4} {'n':>5} {'MB':>7} {'total s':>15} {'compose calls s':>16} "
          f"{'deletes s':>10} {'other s':>8} {'calls':>22} {'load':>4}")  # fmt: skip
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["path"], run["kind"], run["sources"]), []).append(run)
    for key in sorted(groups):
        group = groups[key]
        totals = sorted(r["seconds"] for r in group)
        comp = median(r["timers"].get("storage.compose", 0.0) for r in group)
        dels = median(r["timers"].get("storage.delete", 0.0) + r["timers"].get("storage.list", 0.0)
                      for r in group)  # fmt: skip
        calls = group[0]["calls"]
        made = f"compose {calls.get('storage.compose', 0)}, delete {calls.get('storage.delete', 0)}"
        print(
            f"{key[0]:<8} {key[1]:<4} {key[2]:>5} {group[0]['bytes'] / 1e6:>7.1f} "
            f"{totals[0]:>6.3f}/{median(totals):>8.3f} {comp:>16.3f} {dels:>10.3f} "
            f"{median(totals) - comp - dels:>8.3f} "
            f"{made:>22} "
            f"{median(r['load'] for r in group):>4.1f}",
            flush=True,
        )


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least squares y = a + b x; (a, b)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0, my / mx if mx else 0.0
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    return my - b * mx, b


def by_min_and_median(points: Iterable[tuple[float, float]]) -> tuple[list[Any], list[Any]]:
    """The points grouped by x, reduced to each x's minimum and to its median y."""
    groups: dict[float, list[float]] = {}
    for x, y in points:
        groups.setdefault(x, []).append(y)
    xs = sorted(groups)
    return [(x, min(groups[x])) for x in xs], [(x, median(groups[x])) for x in xs]


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The model's inputs for one format (seconds; rates in rows/s)."""

    rate: float  # one part on one instance (workers=1), rows past the fixed cost
    fixed: float  # a part's fixed cost (claim, DuckDB's start on the range, records, upload)
    single_rate: float  # the single export (one part, no plan), rows past its fixed cost
    single_fixed: float  # its claim, row_groups, completion
    plan: tuple[float, float]  # t_plan(P) = a + b P
    compose: tuple[float, float]  # t_compose(P) = a + b P

    def t_part(self, rows: float) -> float:
        return self.fixed + rows / self.rate

    def t_compose(self, parts: int) -> float:
        return self.compose[0] + self.compose[1] * parts if parts > 1 else 0.0

    def total(self, rows: float, parts: int, instances: int) -> float:
        """T(rows, P, N) = t_plan + ceil(P/N) t_part(rows/P) + t_compose(P)."""
        if parts == 1:
            return self.single_fixed + rows / self.single_rate
        waves = math.ceil(parts / instances)
        return (
            self.plan[0]
            + self.plan[1] * parts
            + waves * self.t_part(rows / parts)
            + (self.t_compose(parts))
        )

    def part_limit(self, max_parts: int) -> float:
        """The most rows one part holds inside the limit (its compose included, for the last)."""
        return self.rate * (FUNCTION_LIMIT_S - self.fixed - self.t_compose(max_parts))

    def single_limit(self) -> float:
        return self.single_rate * (FUNCTION_LIMIT_S - self.single_fixed)


def pick(values: Sequence[float], which: str) -> float:
    return min(values) if which == "min" else median(values)


def model(runs: list[dict[str, Any]], composes: list[dict[str, Any]],
          part_rows: int, max_parts: int, max_instances: int) -> dict[str, Any]:  # fmt: skip
    """The model's inputs from the discard runs, and what they predict; printed and returned.

    Rates come from the parts of at least 2M rows run one at a time (workers=1), where the
    fixed cost is a few percent: rows / seconds of the fastest (the run the other jobs on this
    shared machine disturbed least) and of the median part of each size, the median over the
    sizes. The fixed cost is a one-row-group part's seconds less its rows at that rate (the
    ``--overhead`` runs: the 1M-row file as 8 parts of one row group). Both are given twice,
    from the fastest and from the median runs.
    """
    print()
    print("Model (inputs measured here, 2 cores = one process instance's cpu; T and the limits "
          "are the model)")  # fmt: skip
    tiny = [(c["sources"], c["seconds"]) for c in composes
            if c["path"] == "discard" and c["kind"] == "tiny"]  # fmt: skip
    compose_min, compose_med = by_min_and_median(tiny)
    composes_fit = {"min": fit_line(compose_min), "median": fit_line(compose_med)} if tiny else {
        "min": (0.0, 0.0), "median": (0.0, 0.0)}  # fmt: skip
    out: dict[str, Any] = {}
    for fmt in sorted({r["fmt"] for r in runs}):
        own = [r for r in runs if r["fmt"] == fmt and r["path"] == "discard"]
        serial = [r for r in own if r["workers"] == 1 and r["parts"] > 1]
        large = [part_figures(p) for r in serial for p in r["part_results"]
                 if p.get("rows", 0) >= 2_000_000]  # fmt: skip
        small = [part_figures(p) for r in serial for p in r["part_results"]
                 if 0 < p.get("rows", 0) <= 200_000]  # fmt: skip
        singles = [r for r in own if r["parts"] == 1 and r["rows"] >= 2_000_000]
        if not large or not small or not singles:
            print(f"{fmt}: not enough runs for the model (parts of >= 2M and of one row group, "
                  "one at a time, and single exports)")  # fmt: skip
            continue
        by_size: dict[int, list[float]] = {}
        for f in large:
            by_size.setdefault(int(round(f["rows"], -5)), []).append(f["seconds"] - f["compose"])
        single_by_size: dict[int, list[float]] = {}
        for r in singles:
            single_by_size.setdefault(r["rows"], []).append(r["seconds"])
        single_fixed = [
            r["seconds"] - r["plan"]["timers"].get("engine.export", 0.0) for r in singles
        ]
        plan_fit = fit_line(by_min_and_median(
            (r["parts"], r["plan"]["seconds"]) for r in own if r["parts"] > 1)[1])  # fmt: skip
        cpu_fit = fit_line([(f["rows"], f["cpu"]) for f in large + small])
        inputs = {}
        for which in ("min", "median"):
            rate = median(size / pick(secs, which) for size, secs in by_size.items())
            fixed = pick([f["seconds"] - f["compose"] - f["rows"] / rate for f in small], which)
            rate = median(size / (pick(secs, which) - fixed) for size, secs in by_size.items())
            s_fixed = pick(single_fixed, which)
            s_rate = median(
                size / (pick(secs, which) - s_fixed) for size, secs in single_by_size.items()
            )
            inputs[which] = Inputs(rate, fixed, s_rate, s_fixed, plan_fit, composes_fit[which])
        best, typical = inputs["min"], inputs["median"]
        outside = [f["overhead"] for f in small]
        engine_start = [f["engine"] - f["rows"] / best.rate for f in small]
        print(f"\n{fmt}: one part on one instance (workers=1; {len(large)} parts of "
              f"{', '.join(f'{x / 1e6:g}M' for x in sorted(by_size))} rows): "
              f"{best.rate:,.0f} rows/s (fastest), {typical.rate:,.0f} (median); "
              f"{cpu_fit[1] * 1e6:.2f} CPU-s per 1M rows")  # fmt: skip
        print(f"{fmt}: a part's fixed cost ({len(small)} parts of one row group): "
              f"{best.fixed:.3f} s (fastest), {typical.fixed:.3f} s (median); of it, outside "
              f"the engine (claim, records, the upload's session, drain and answer) "
              f"{median(outside):.3f} s [{min(outside):.3f}-{max(outside):.3f}], DuckDB's start "
              f"on the range {median(engine_start):.3f} s (median)")  # fmt: skip
        print(f"{fmt}: the single export (P=1): {best.single_rate:,.0f} rows/s + "
              f"{best.single_fixed:.2f} s (fastest), {typical.single_rate:,.0f} + "
              f"{typical.single_fixed:.2f} s (median); t_plan(P) = {plan_fit[0]:.3f} + "
              f"{plan_fit[1] * 1000:.2f} ms x P; t_compose(P) = {best.compose[0]:.3f} + "
              f"{best.compose[1] * 1000:.2f} ms x P (discard: the project's own)")  # fmt: skip
        for name, m in inputs.items():
            limit = m.part_limit(max_parts)
            print(f"{fmt} ({name}): inside {FUNCTION_LIMIT_S:.0f} s: one instance (a single "
                  f"part) {m.single_limit() / 1e6:,.0f}M rows; one part {limit / 1e6:,.0f}M "
                  f"rows (with the compose of {max_parts} parts), so {max_parts} parts hold "
                  f"{max_parts * limit / 1e9:,.1f}G rows; a part of {part_rows / 1e6:g}M rows "
                  f"takes {m.t_part(part_rows):.2f} s, its fixed cost "
                  f"{m.fixed / m.t_part(part_rows):.1%}; 5% or less from "
                  f"{19 * m.fixed * m.rate / 1e6:.2f}M rows")  # fmt: skip
        sizes = (10_000_000, 20_000_000, 50_000_000, 100_000_000, 200_000_000, 500_000_000,
                 1_000_000_000)  # fmt: skip
        print(f"{fmt}: T(rows, P, N) in s from the fastest runs, P = clamp(ceil(rows / "
              f"{part_rows:,}), 1, {max_parts}); single = one instance, one part")  # fmt: skip
        print(f"{'rows':>14} {'P':>4} {'N=1':>8} {'N=2':>8} {'N=' + str(max_instances):>8} "
              f"{'N=P':>8} {'single':>8}")  # fmt: skip
        table = []
        for rows in sizes:
            p = min(max(1, -(-rows // part_rows)), max_parts)
            row = [best.total(rows, p, n) for n in (1, 2, max_instances, p)]
            single = best.total(rows, 1, 1)
            table.append((rows, p, row, single))
            flag = " (a part over 540 s)" if best.t_part(rows / p) > FUNCTION_LIMIT_S else ""
            flag += " (single over 540 s)" if single > FUNCTION_LIMIT_S else ""
            print(f"{rows:>14,} {p:>4} " + " ".join(f"{x:>8.1f}" for x in row)
                  + f" {single:>8.1f}{flag}")  # fmt: skip
        out[fmt] = {"inputs": {k: dataclasses.asdict(v) for k, v in inputs.items()},
                    "cpu": cpu_fit, "table": table}  # fmt: skip
    return out


def report_files(paths: Sequence[Path], part_rows: int, max_parts: int, max_instances: int) -> None:
    """Print the tables and the model again from ``--json`` files (their runs together)."""
    data: dict[str, list[dict[str, Any]]] = {"exports": [], "composes": []}
    for path in paths:
        loaded = json.loads(path.read_text())
        for key in data:
            data[key] += loaded[key]
    if data["exports"]:
        report_exports(data["exports"])
    if data["composes"]:
        report_composes(data["composes"])
    if data["exports"]:
        model(data["exports"], data["composes"], part_rows, max_parts, max_instances)


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000_000, 20_000_000])
    parser.add_argument("--formats", nargs="+", default=["csv", "jsonl"])
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                        help="parts at once (default: the cores)")  # fmt: skip
    parser.add_argument("--no-serial", action="store_true", help="skip the workers=1 runs")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=["discard"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compose-sources", type=int, nargs="*", default=list(COMPOSE_SOURCES))
    parser.add_argument("--compose-paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--compose-bytes", type=int, default=508_000_000,
                        help="a real export split into n (default: 10M-row CSV)")  # fmt: skip
    parser.add_argument("--no-exports", action="store_true", help="only the compose runs")
    parser.add_argument("--no-overhead", action="store_true",
                        help="skip the 1M-row file as 8 one-group parts (fixed cost)")  # fmt: skip
    parser.add_argument("--part-rows", type=int, help="the model's EXPORT_PART_ROWS")
    parser.add_argument("--max-parts", type=int, help="the model's EXPORT_MAX_PARTS")
    parser.add_argument("--max-instances", type=int, default=10)
    parser.add_argument("--cache", type=Path, default=REPO / ".local" / "bench")
    parser.add_argument("--port-base", type=int, default=26081)
    parser.add_argument("--discard-port", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write every run here")
    parser.add_argument(
        "--report", type=Path, nargs="+", help="print from --json files, run nothing"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--parquet", help=argparse.SUPPRESS)
    parser.add_argument("--warm-parquet", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from dataset_export.core import parts as core_parts

    part_rows = args.part_rows or core_parts.DEFAULT_PART_ROWS
    max_parts = args.max_parts or core_parts.DEFAULT_MAX_PARTS
    if args.report:
        report_files(args.report, part_rows, max_parts, args.max_instances)
        return

    import duckdb
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from dataset_export.adapters.firestore_store import FirestoreStore
    from dataset_export.adapters.gcs_storage import GcsExportStorage

    exports_runs: list[dict[str, Any]] = []
    compose_runs: list[dict[str, Any]] = []
    with (
        bench_stack("parts-bench-stack", args.port_base) as (config, env),
        DiscardGcs(args.discard_port) as discard,
    ):
        envs = {"emulator": env, "discard": {**env, "STORAGE_EMULATOR_HOST": discard.url}}

        def exports_storage(url: str) -> GcsExportStorage:
            client = storage.Client(
                project=config.project,
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options={"api_endpoint": url},
            )
            return GcsExportStorage(client, config.exports_bucket)

        bench = Bench(
            args=args, envs=envs,
            storages={"emulator": exports_storage(env["STORAGE_EMULATOR_HOST"]),
                      "discard": exports_storage(discard.url)},
            store=FirestoreStore.for_project(config.project),
            warm=ensure_dataset(1_000_000, args.cache),
        )  # fmt: skip
        print(f"machine: {os.cpu_count()} cores, {platform.platform()}, Python "
              f"{platform.python_version()}, duckdb {duckdb.__version__}; "
              f"load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        # One unmeasured export per path first: the emulators' JVMs answer slowly at first.
        for path in set(args.paths) | set(args.compose_paths):
            bench.export(path, bench.warm, 1_000_000, "csv", 2, 2)
        widths = sorted({args.workers, *([] if args.no_serial else [1])}, reverse=True)
        for repeat in range(args.repeat):
            for fmt in [] if args.no_overhead else args.formats:
                # The smallest parts, one row group each, one at a time: the fixed cost.
                run = bench.export("discard", bench.warm, 1_000_000, fmt, 8, 1)
                exports_runs.append(run)
                print(f"  [{repeat + 1}/{args.repeat}] overhead: discard 1,000,000 {fmt} "
                      f"P=8 W=1: {run['seconds']:.2f} s (load {run['load']:.1f})",
                      flush=True)  # fmt: skip
            for rows in [] if args.no_exports else args.rows:
                parquet = ensure_dataset(rows, args.cache)
                for fmt in args.formats:
                    for parts in args.parts:
                        for workers in widths if parts > 1 else widths[:1]:
                            for path in args.paths:
                                run = bench.export(path, parquet, rows, fmt, parts, workers)
                                exports_runs.append(run)
                                print(f"  [{repeat + 1}/{args.repeat}] {path} {rows:,} "
                                      f"{fmt} P={parts} W={workers}: {run['seconds']:.2f} s "
                                      f"(load {run['load']:.1f})", flush=True)  # fmt: skip
            for sources in args.compose_sources:
                for size in (1, args.compose_bytes // sources):
                    for path in args.compose_paths:
                        run = bench.compose(path, sources, size)
                        compose_runs.append(run)
                        print(f"  [{repeat + 1}/{args.repeat}] compose {path} n={sources} "
                              f"{run['bytes'] / 1e6:.1f} MB: {run['seconds']:.3f} s",
                              flush=True)  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps({"exports": exports_runs,
                                             "composes": compose_runs}, indent=1))  # fmt: skip
        if exports_runs:
            report_exports(exports_runs)
        if compose_runs:
            report_composes(compose_runs)
        if exports_runs:
            model(exports_runs, compose_runs, part_rows, max_parts, args.max_instances)
        print()
        print("discard = parts uploaded to a local endpoint that keeps only the objects' "
              "resources (the project's own time); emulator = fake-gcs-server (its finalize "
              "and byte-copying compose are the emulator's cost). Every part in a warm "
              "process of its own; CPU s = user + system of that process; "
              "RSS = VmHWM.")  # fmt: skip


if __name__ == "__main__":
    main()
