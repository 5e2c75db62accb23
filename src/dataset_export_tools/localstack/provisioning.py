"""What `up` creates for the stack: the local secrets, the Pub/Sub topics and push
subscriptions (with the names, deadlines and delivery limits production uses), the buckets, the
demo dataset, the demo account's API key, and what stack.env holds for clients.

The Google Cloud clients that do the work live in `provision`, imported only when a step runs,
so that `down` and `status` stay quick.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from dataset_export.core.source import parse_dataset_source
from dataset_export_tools.localstack import emulators, procs
from dataset_export_tools.localstack.envfile import read_env_file, write_env_file
from dataset_export_tools.localstack.parts import BIGQUERY, BY_NAME, GCS, RECEIVER
from dataset_export_tools.localstack.state import (
    DATASET_FILE,
    SIGNER_KEY_FILE,
    Echo,
    StackConfig,
    StackError,
    elapsed,
)

REQUESTS_TOPIC = "export-requests"
READY_TOPIC = "export-ready"
PARTS_TOPIC = "export-parts"
DEAD_LETTER_TOPIC = "export-dead-letter"
TICK_TOPIC = "export-retry-tick"
TICK_SUBSCRIPTION = "export-retry-tick-notify"
PROCESS_SUBSCRIPTION = "export-requests-process"
#: The parts of exports planned as parts, pushed to process's / like the requests.
PARTS_SUBSCRIPTION = "export-parts-process"
NOTIFY_SUBSCRIPTION = "export-ready-notify"
DEAD_LETTER_SUBSCRIPTION = "export-dead-letter-process"
# The push timeout equals the ack deadline and a slower handler is invoked again concurrently
# (DESIGN.md), so the process deadline sits at the maximum, above the slowest export.
PROCESS_ACK_DEADLINE = 600
NOTIFY_ACK_DEADLINE = 60
# Process nacks a duplicate delivery while another worker runs the export (so the message
# outlives a worker that dies); those nacks count, hence more attempts than notify gets. The
# process function itself gives up after 5 real runs.
PROCESS_MAX_DELIVERY_ATTEMPTS = 10
MAX_DELIVERY_ATTEMPTS = 5

KEK_VAR = "EXPORT_KEY_ENCRYPTION_KEY"
LINK_KEY_VAR = "EXPORT_LINK_SIGNING_KEY"
API_KEY_VAR = "EXPORT_API_KEY"


def ensure_keys(config: StackConfig, say: Echo) -> dict[str, str]:
    """The key-encryption and link-signing keys, generated on first use."""
    path = config.secrets_env_path
    values = read_env_file(path)
    missing = [var for var in (KEK_VAR, LINK_KEY_VAR) if not values.get(var)]
    for var in missing:
        values[var] = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    if missing or (path.stat().st_mode & 0o777) != 0o600:
        write_env_file(path, values, header="Local-stack secrets: keep this file private.")
    signer = config.state_dir / SIGNER_KEY_FILE
    if not signer.exists():
        from dataset_export_tools.localstack.provision import write_signer_key

        write_signer_key(signer, config.project)
        say(f"generated a local URL-signing service-account key in {signer}")
    if missing:
        say(f"generated {', '.join(missing)} in {path}")
    return values


def create_pubsub(config: StackConfig, say: Echo) -> None:
    """The topics and the push subscriptions to the functions, as in production."""
    from dataset_export_tools.localstack.provision import PushSubscription, ensure_pubsub

    t0 = time.monotonic()
    ports = config.ports
    ensure_pubsub(
        config.project,
        topics=[REQUESTS_TOPIC, READY_TOPIC, PARTS_TOPIC, DEAD_LETTER_TOPIC, TICK_TOPIC],
        push_subscriptions=[
            PushSubscription(
                PROCESS_SUBSCRIPTION,
                REQUESTS_TOPIC,
                f"http://127.0.0.1:{ports.process}/",
                PROCESS_ACK_DEADLINE,
                max_delivery_attempts=PROCESS_MAX_DELIVERY_ATTEMPTS,
            ),
            # A part runs as long as an export may, and is redelivered the same way.
            PushSubscription(
                PARTS_SUBSCRIPTION,
                PARTS_TOPIC,
                f"http://127.0.0.1:{ports.process}/",
                PROCESS_ACK_DEADLINE,
                max_delivery_attempts=PROCESS_MAX_DELIVERY_ATTEMPTS,
            ),
            PushSubscription(
                NOTIFY_SUBSCRIPTION,
                READY_TOPIC,
                f"http://127.0.0.1:{ports.notify}/",
                NOTIFY_ACK_DEADLINE,
                max_delivery_attempts=MAX_DELIVERY_ATTEMPTS,
            ),
            PushSubscription(
                TICK_SUBSCRIPTION,
                TICK_TOPIC,
                f"http://127.0.0.1:{ports.notify}/tick",
                NOTIFY_ACK_DEADLINE,
                dead_letter=False,
            ),
            # Dead letters go back to process, which records the export as failed.
            PushSubscription(
                DEAD_LETTER_SUBSCRIPTION,
                DEAD_LETTER_TOPIC,
                f"http://127.0.0.1:{ports.process}/dead-letter",
                NOTIFY_ACK_DEADLINE,
                dead_letter=False,
            ),
        ],
        pull_subscriptions={},
        dead_letter_topic=DEAD_LETTER_TOPIC,
    )
    say(f"pubsub topics and subscriptions ready ({elapsed(t0)})")


def create_buckets(config: StackConfig, say: Echo) -> None:
    """The exports and datasets buckets.

    Without the lifecycle rules of production (infra/terraform/storage.tf): fake-gcs-server has
    none, so nothing here deletes old exports or what a crashed part left under tmp/; the
    service's own clean-up of an export's temporary objects runs as in production.
    """
    from dataset_export_tools.localstack.provision import ensure_buckets

    t0 = time.monotonic()
    names = [config.exports_bucket, config.datasets_bucket]
    ensure_buckets(config.project, names)
    say(f"buckets {' and '.join(names)} ready ({elapsed(t0)})")


def prepare_dataset(config: StackConfig, env: Mapping[str, str], say: Echo) -> None:
    """Generate the demo dataset if missing, then upload it if the bucket's copy differs."""
    path = config.dataset_path
    if not path.exists():
        _generate_dataset(config, path, env, say)
    if not config.enabled(GCS):
        return
    from dataset_export_tools.localstack.provision import upload_if_changed

    t0 = time.monotonic()
    bucket = config.datasets_bucket
    if upload_if_changed(config.project, bucket, DATASET_FILE, path):
        say(f"uploaded {path.name} to gs://{bucket}/ ({elapsed(t0)})")
    else:
        say(f"gs://{bucket}/{DATASET_FILE} is up to date")


def load_bigquery_table(config: StackConfig, say: Echo) -> None:
    """Create the BigQuery engine's temporary dataset ``<project>.dwe_tmp`` and load the demo
    dataset into ``<project>.listings.rental_listings`` on the BigQuery emulator, unless the
    table already holds the file's rows (the emulator kept running)."""
    import pyarrow.parquet as pq

    from dataset_export_tools.bigquery_load import (
        create_temp_dataset,
        emulator_clients,
        load_parquet,
        table_rows,
    )

    t0 = time.monotonic()
    table = config.bigquery_table
    grpc_host = f"127.0.0.1:{config.ports.bigquery_grpc}"
    client, _ = emulator_clients(config.project, config.url(BIGQUERY), grpc_host)
    try:
        create_temp_dataset(client, config.bigquery_temp_dataset)
        rows = pq.ParquetFile(config.dataset_path).metadata.num_rows
        if table_rows(client, table) == rows:
            say(f"BigQuery table {table} is up to date ({rows:,} rows)")
            return
        loaded = load_parquet(client, config.dataset_path, table)
    except Exception as exc:
        raise StackError(f"loading {config.dataset_path} into {table} failed: {exc}") from exc
    finally:
        client.close()
    if loaded != rows:
        raise StackError(f"{table} holds {loaded:,} rows after the load, the file {rows:,}")
    say(f"loaded {rows:,} rows into BigQuery table {table} ({elapsed(t0)})")


def _generate_dataset(config: StackConfig, path: Path, env: Mapping[str, str], say: Echo) -> None:
    exportctl = config.exportctl_path
    # Written under another name and renamed, so an interrupted run leaves no half file
    # that the next `up` would take for the dataset.
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    partial.unlink(missing_ok=True)
    rows = config.dataset_rows
    cmd = [str(exportctl), "dataset", "generate", "--rows", str(rows), "--out", str(partial)]
    log = config.logfile("dataset")
    say(f"generating the demo dataset ({rows:,} rows) into {path}")
    t0 = time.monotonic()
    try:
        with procs.open_log(log, cmd) as out:
            result = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(env), check=False
            )
    except OSError as exc:
        raise StackError(f"cannot run {exportctl}: {exc}") from exc
    if result.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise StackError(
            f"exportctl dataset generate failed (exit {result.returncode}); "
            f"last 20 lines of {log}:\n{procs.log_tail(log, 20)}"
        )
    partial.replace(path)
    size_mb = path.stat().st_size / 1e6
    say(f"demo dataset generated: {size_mb:.1f} MB ({elapsed(t0)})")


def demo_key(
    config: StackConfig,
    env: Mapping[str, str],
    previous: str | None,
    firestore_restarted: bool,
    say: Echo,
    warn: Echo,
) -> str | None:
    """The demo account's API key: kept while Firestore (which stores its hash) kept
    running, else created anew with `exportctl keys create --account demo`; a failure is
    reported through `warn` and gives None."""
    if previous and not firestore_restarted:
        return previous
    exportctl = config.exportctl_path
    cmd = [str(exportctl), "keys", "create", "--account", "demo"]
    t0 = time.monotonic()
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, env=dict(env), timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        _no_key(warn, f"cannot run {' '.join(cmd)}: {exc}")
        return None
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or len(lines) != 1 or not lines[0].strip():
        detail = "\n".join(result.stderr.strip().splitlines()[-10:])
        why = f"{' '.join(cmd)} failed (exit {result.returncode}, {len(lines)} stdout lines)"
        _no_key(warn, f"{why}:\n{detail}" if detail else why)
        return None
    say(f"created the demo account's API key ({elapsed(t0)})")
    return lines[0].strip()


def _no_key(warn: Echo, why: str) -> None:
    warn(f"no demo API key: {why}\n(stack.env is written without {API_KEY_VAR})")


def stack_env(
    config: StackConfig, common: Mapping[str, str], api_key: str | None
) -> dict[str, str]:
    """What stack.env holds: everything a client (exportctl, tests, a shell) needs, and
    DWE_ENGINE, the engine the process function runs (from the EXPORT_DATASET_URI in
    ``common``: a process left running keeps its own)."""
    source = common.get("EXPORT_DATASET_URI", "")
    return {
        "DWE_ENGINE": parse_dataset_source(source).engine if source else "duckdb",
        "EXPORT_API_URL": config.url(BY_NAME["submit"]),
        **({API_KEY_VAR: api_key} if api_key else {}),
        "EXPORT_WEBHOOK_URL": f"https://{config.host(RECEIVER)}/webhook",
        "EXPORT_WEBHOOK_DIR": str(config.webhooks_dir),
        "EXPORT_DATASET_PATH": str(config.dataset_path),
        "EXPORT_DATASET_GCS_URI": config.dataset_gcs_uri,
        "EXPORT_PROCESS_SUBSCRIPTION": PROCESS_SUBSCRIPTION,
        "EXPORT_PARTS_SUBSCRIPTION": PARTS_SUBSCRIPTION,
        "EXPORT_NOTIFY_SUBSCRIPTION": NOTIFY_SUBSCRIPTION,
        "EXPORT_DEAD_LETTER_SUBSCRIPTION": DEAD_LETTER_SUBSCRIPTION,
        **(emulators.bigquery_environ(config) if config.enabled(BIGQUERY) else {}),
        **{key: value for key, value in common.items() if key != "PYTHONUNBUFFERED"},
    }
