"""Submit-to-webhook latency under load, against a running local stack (`make up`).

    .venv/bin/python bench/webhook_latency.py --clients 20 --exports 200 --repeats 3

Each of ``--clients`` threads has an API key of its own (a customer; created in the stack's
Firestore, so the per-key rate limit is not what is measured) and submits its share of
``--exports`` small exports back to back. Every export's webhook is found in the demo
receiver's folder by its ``webhook-id``; its latency is the receiver's ``receivedAt`` minus the
moment the client started the POST (one machine, one clock). The status documents split each
export's time into phases:

- ``submit``: the POST's own round trip (authenticate, rate limit, validate, DNS, record, publish);
- ``to process``: ``requestedOn`` -> ``startedOn`` (Pub/Sub push to process, its claim);
- ``run``: ``startedOn`` -> ``completedOn`` (the query, the upload, the completion write);
- ``to notify``: ``completedOn`` -> the first attempt (the ready message, its push, the claim);
- ``send``: the first attempt -> ``receivedAt`` (signing, TLS, the receiver's write).

Loopback only: every URL comes from the stack's ``stack.env``. Loops are bounded (``--timeout``).
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
DATASET = {
    "scopes": [{"column": "street_address"}, {"column": "asking_rent", "aggregate": "Avg"}],
    "filters": [
        {"column": "msa", "filter": {"equals": "Seattle, WA"}},
        {"column": "bed", "filter": {"in": [1, 2, 3]}},
    ],
    "limit": 100,
}
PHASES = ("submit", "to process", "run", "to notify", "send", "total")


def read_env(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of stack.env (``export`` prefixes and quotes allowed)."""
    values: dict[str, str] = {}
    for line in path.read_text("utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


def parse_time(text: str | None) -> float | None:
    """Epoch seconds of an ISO-8601 Z timestamp."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def make_keys(env: Mapping[str, str], count: int) -> list[str]:
    """One API key per client, each on an account of its own."""
    os.environ["FIRESTORE_EMULATOR_HOST"] = env["FIRESTORE_EMULATOR_HOST"]
    from dataset_export.adapters.firestore_store import FirestoreStore
    from dataset_export.service.keys import create_api_key

    store = FirestoreStore.for_project(
        env["GOOGLE_CLOUD_PROJECT"], env.get("EXPORT_FIRESTORE_DATABASE") or None
    )
    kek = base64.b64decode(env["EXPORT_KEY_ENCRYPTION_KEY"])
    run = uuid.uuid4().hex[:6]
    return [create_api_key(store, f"bench-{run}-{i}", kek=kek)[0] for i in range(count)]


def submit_all(
    env: Mapping[str, str], keys: list[str], exports: int, webhook_url: str
) -> tuple[dict[str, float], dict[str, str]]:
    """Submit ``exports`` exports spread over one thread per key.

    Returns queryUUID -> when its POST started, and queryUUID -> the key that owns it.
    """
    started: dict[str, float] = {}
    key_of: dict[str, str] = {}
    failures: list[str] = []
    lock = threading.Lock()
    share = [exports // len(keys) + (1 if i < exports % len(keys) else 0) for i in range(len(keys))]

    def client(key: str, count: int) -> None:
        with httpx.Client(
            base_url=env["EXPORT_API_URL"], headers={"x-api-key": key}, timeout=60
        ) as http:
            for n in range(count):
                body = {
                    "dataset": DATASET,
                    "webhookURL": webhook_url,
                    "name": f"bench {n}",
                    "format": "csv",
                }
                t0 = time.time()
                response = http.post("/dataset/export", json=body)
                with lock:
                    if response.status_code == 201:
                        query_uuid = response.json()["queryUUID"]
                        started[query_uuid], key_of[query_uuid] = t0, key
                    else:
                        failures.append(f"{response.status_code} {response.text[:200]}")

    threads = [
        threading.Thread(target=client, args=(key, count))
        for key, count in zip(keys, share, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        print(f"{len(failures)} submits failed, e.g. {failures[0]}", file=sys.stderr)
    return started, key_of


def collect_webhooks(
    folder: Path, wanted: set[str], timeout: float, seen: set[str]
) -> dict[str, float]:
    """queryUUID -> the receiver's receivedAt, polling until all arrived or ``timeout``."""
    arrived: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(arrived) < len(wanted):
        for path in sorted(folder.glob("*.json")):
            if path.name in seen:
                continue
            seen.add(path.name)
            entry = json.loads(path.read_text("utf-8"))
            query_uuid = entry["headers"].get("webhook-id")
            if query_uuid in wanted and query_uuid not in arrived:
                received = parse_time(entry["receivedAt"])
                assert received is not None
                arrived[query_uuid] = received
        time.sleep(0.2)
    return arrived


def phases(
    env: Mapping[str, str],
    key_of: Mapping[str, str],
    started: Mapping[str, float],
    arrived: Mapping[str, float],
) -> dict[str, list[float]]:
    """Each phase's durations in seconds, from the status documents."""
    out: dict[str, list[float]] = {name: [] for name in PHASES}
    out["startedOn"] = []
    with httpx.Client(base_url=env["EXPORT_API_URL"], timeout=30) as http:
        for query_uuid, received in arrived.items():
            doc = http.get(
                f"/dataset/export/{query_uuid}", headers={"x-api-key": key_of[query_uuid]}
            ).json()
            attempts = (doc.get("delivery") or {}).get("attempts") or []
            marks = [
                started[query_uuid],
                parse_time(doc.get("requestedOn")),
                parse_time(doc.get("startedOn")),
                parse_time(doc.get("completedOn")),
                parse_time(attempts[0]["at"]) if attempts else None,
                received,
            ]
            names = ("submit", "to process", "run", "to notify", "send")
            # "submit" ends when the record is written (requestedOn is set just before).
            for name, a, b in zip(names, marks, marks[1:], strict=False):
                if a is not None and b is not None:
                    out[name].append(b - a)
            out["total"].append(received - started[query_uuid])
            if marks[2] is not None:
                out["startedOn"].append(marks[2])
    return out


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def cpu_seconds(pids_dir: Path) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each part of the stack, its children included."""
    tick = os.sysconf("SC_CLK_TCK")
    groups: dict[int, str] = {}
    for pidfile in pids_dir.glob("*.pid"):
        text = pidfile.read_text("ascii").strip()
        if text.isdigit():
            groups[int(text)] = pidfile.stem
    used = dict.fromkeys(groups.values(), 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text("utf-8", errors="replace")
        except OSError:
            continue
        fields = raw[raw.rfind(")") + 2 :].split()
        # Each part leads its own session: field 4 (0-based 3 after the name) is the session.
        part = groups.get(int(fields[3]))
        if part is not None:
            used[part] += (int(fields[11]) + int(fields[12])) / tick
    return used


def run_once(env: Mapping[str, str], clients: int, exports: int, timeout: float) -> dict[str, Any]:
    """One load run: submit, wait for every webhook, measure."""
    folder = Path(env["EXPORT_WEBHOOK_DIR"])
    pids_dir = Path(env["EXPORT_WEBHOOK_DIR"]).parent / "pids"
    cpu_before = cpu_seconds(pids_dir)
    seen = {p.name for p in folder.glob("*.json")}
    keys = make_keys(env, clients)
    webhook_url = env["EXPORT_WEBHOOK_URL"].rsplit("/", 1)[0] + f"/bench-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    started, key_of = submit_all(env, keys, exports, webhook_url)
    submit_s = time.monotonic() - t0
    arrived = collect_webhooks(folder, set(started), timeout, seen)
    cpu_after = cpu_seconds(pids_dir)
    result = phases(env, key_of, started, arrived)
    return {
        "cpu": {part: cpu_after[part] - cpu_before.get(part, 0.0) for part in cpu_after},
        "submitted": len(started),
        "delivered": len(arrived),
        "submit_wall_s": submit_s,
        "phases": result,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the load ``--repeats`` times and print p50/p95 per phase and their min/median."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", type=Path, default=REPO / ".local" / "stack.env")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--exports", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait per run")
    parser.add_argument("--pause", type=float, default=5.0, help="seconds between runs")
    args = parser.parse_args(argv)
    env = read_env(args.env)
    for name in ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT"):
        os.environ[name] = env[name]
    runs = []
    for n in range(args.repeats):
        if n:
            time.sleep(args.pause)
        run = run_once(env, args.clients, args.exports, args.timeout)
        runs.append(run)
        print(
            f"run {n + 1}: {run['delivered']}/{run['submitted']} delivered, "
            f"submits took {run['submit_wall_s']:.1f} s"
        )
        cpu = ", ".join(f"{part} {sec:.1f}" for part, sec in sorted(run["cpu"].items()))
        print(f"  CPU s of the stack's parts during the run: {cpu}")
        starts = sorted(run["phases"]["startedOn"])
        if len(starts) > 1 and starts[-1] > starts[0]:
            rate = (len(starts) - 1) / (starts[-1] - starts[0])
            print(
                f"  process picked up {rate:.1f} exports/s; load average {os.getloadavg()[0]:.1f}"
            )
        for name in PHASES:
            values = run["phases"][name]
            if values:
                print(
                    f"  {name:>10}: p50 {percentile(values, 0.5):6.2f} s"
                    f"  p95 {percentile(values, 0.95):6.2f} s  max {max(values):6.2f} s"
                )
    if len(runs) > 1:
        print(f"over {len(runs)} runs (min / median):")
        for name in PHASES:
            for q in (0.5, 0.95):
                values = [percentile(r["phases"][name], q) for r in runs if r["phases"][name]]
                print(
                    f"  {name:>10} p{round(q * 100)}: "
                    f"{min(values):6.2f} / {statistics.median(values):6.2f} s"
                )
    return 0 if all(r["delivered"] == r["submitted"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
