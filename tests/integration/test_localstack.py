"""The local stack manager: a real stack on its own ports in a temporary state dir.

Checks that `up` starts every default part and each answers, that a second `up` (through the
CLI, so from another process) restarts nothing, that the BigQuery emulator is opt-in and loads
the dataset, that a stale pidfile or a hung part is replaced, that a
busy port fails fast, that an `up` on other ports refuses to replace a running stack, that a
restart appends to a part's log, and that `down` leaves none of the recorded processes behind.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from dataset_export.adapters.firestore_store import FirestoreStore
from dataset_export.core.apikeys import key_hash, new_api_key
from dataset_export.core.catalog import RENTAL_LISTINGS
from dataset_export_tools.bigquery_load import BIGQUERY_TYPES, emulator_clients, table_rows
from dataset_export_tools.localstack import procs
from dataset_export_tools.localstack.envfile import read_env_file
from dataset_export_tools.localstack.parts import ALL_PARTS, BIGQUERY, BY_NAME, DEFAULT_PART_NAMES
from dataset_export_tools.localstack.stack import (
    Ports,
    StackConfig,
    StackError,
    down,
    find_repo_root,
    up,
)

pytestmark = pytest.mark.integration

REPO = find_repo_root(Path(__file__).parent)
# Apart from `make up`'s defaults (18081+) and the session stack of tests/conftest.py (28081+).
PORTS = Ports.starting_at(int(os.environ.get("DWE_LOCALSTACK_TEST_PORT_BASE", "27081")))
SMALL_PORTS = Ports.starting_at(PORTS.submit + 100)
OTHER_PORTS = Ports.starting_at(PORTS.submit + 200)
BIGQUERY_PORTS = Ports.starting_at(PORTS.submit + 300)
DEFAULT_PARTS = [BY_NAME[name] for name in DEFAULT_PART_NAMES]
PROJECT = "dwe-lstest"
# A named Firestore database, as a deployment with a prefix has: the functions, exportctl (the
# demo key) and stack.env must all use it.
DATABASE = "dwe-lstest-db"


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _post(
    port: int, path: str, body: bytes, headers: dict[str, str], ca_file: Path
) -> tuple[int, bytes]:
    """POST over HTTPS, verifying the server against the local CA."""
    context = ssl.create_default_context(cafile=str(ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    try:
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _cli(
    command: str,
    state_dir: Path,
    ports: Ports,
    *options: str,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOOGLE_CLOUD_PROJECT": PROJECT, "EXPORT_FIRESTORE_DATABASE": DATABASE}
    env.pop("DWE_ENGINE", None)  # the default stack, whatever the shell running the tests asks
    env.update(extra_env or {})
    env.update({part.port_env: str(ports.of(part)) for part in ALL_PARTS})
    env["DWE_BIGQUERY_GRPC_PORT"] = str(ports.bigquery_grpc)
    module = [sys.executable, "-m", "dataset_export_tools.localstack"]
    return subprocess.run(
        [*module, command, "--state-dir", str(state_dir), *options],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _recorded_pids(config: StackConfig) -> dict[str, int]:
    pids = {}
    for path in config.pids_dir.glob("*.pid"):
        pid = procs.read_pid(path)
        assert pid is not None, path
        pids[path.stem] = pid
    return pids


def _assert_gone(pids: dict[str, int]) -> None:
    for name, pid in pids.items():
        assert not procs.is_alive(pid), f"{name} (pid {pid}) still running"
        assert not procs.group_members(pid), f"{name}'s process group {pid} still has members"


@pytest.fixture
def full_config(tmp_path: Path) -> Iterator[StackConfig]:
    config = StackConfig(
        state_dir=tmp_path / "state",
        repo_root=REPO,
        ports=PORTS,
        project=PROJECT,
        firestore_database=DATABASE,
        dataset_rows=2_000,
    )
    try:
        yield config
    finally:
        down(config)  # also after a failed assertion: never leave a stack behind


def _environ_of(pid: int) -> dict[str, str]:
    """The environment a running process of ours was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def test_up_is_complete_idempotent_and_down_stops_everything(
    full_config: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dataclasses.replace(full_config, part_settings={"EXPORT_PART_ROWS": "5000"})
    info = up(config)
    assert set(info.started) == set(DEFAULT_PART_NAMES)  # the BigQuery emulator is opt-in
    assert info.reused == ()
    assert info.warnings == ()
    first_pids = _recorded_pids(config)
    assert first_pids == info.pids

    # Emulators.
    assert _get(PORTS.pubsub, "/")[1].strip() == b"Ok"
    assert _get(PORTS.firestore, "/")[1].strip() == b"Ok"
    status, body = _get(PORTS.pubsub, f"/v1/projects/{PROJECT}/subscriptions")
    assert status == 200
    subs = {s["name"].rsplit("/", 1)[1]: s for s in json.loads(body)["subscriptions"]}
    assert set(subs) == {
        "export-requests-process",
        "export-parts-process",
        "export-ready-notify",
        "export-dead-letter-process",
        "export-retry-tick-notify",
    }
    process_sub = subs["export-requests-process"]
    assert process_sub["pushConfig"]["pushEndpoint"] == f"http://127.0.0.1:{PORTS.process}/"
    assert process_sub["ackDeadlineSeconds"] == 600
    assert process_sub["deadLetterPolicy"]["maxDeliveryAttempts"] == 10
    # The parts of an export reach the same endpoint with the same limits (kind tells them apart).
    parts_sub = subs["export-parts-process"]
    assert parts_sub["topic"] == f"projects/{PROJECT}/topics/export-parts"
    for same in ("pushConfig", "ackDeadlineSeconds", "deadLetterPolicy", "retryPolicy"):
        assert parts_sub[same] == process_sub[same], same
    assert process_sub["deadLetterPolicy"]["deadLetterTopic"] == (
        f"projects/{PROJECT}/topics/export-dead-letter"
    )
    status, body = _get(PORTS.pubsub, f"/v1/projects/{PROJECT}/topics")
    assert status == 200
    assert {t["name"].rsplit("/", 1)[1] for t in json.loads(body)["topics"]} == {
        "export-requests",
        "export-ready",
        "export-parts",
        "export-dead-letter",
        "export-retry-tick",
    }
    dead = subs["export-dead-letter-process"]
    assert dead["pushConfig"]["pushEndpoint"] == f"http://127.0.0.1:{PORTS.process}/dead-letter"
    assert "deadLetterPolicy" not in dead
    tick = subs["export-retry-tick-notify"]
    assert tick["pushConfig"]["pushEndpoint"] == f"http://127.0.0.1:{PORTS.notify}/tick"
    assert process_sub["retryPolicy"] == {"minimumBackoff": "10s", "maximumBackoff": "600s"}
    assert subs["export-ready-notify"]["ackDeadlineSeconds"] == 60
    status, body = _get(PORTS.gcs, f"/storage/v1/b?project={PROJECT}")
    assert status == 200
    buckets = {b["name"] for b in json.loads(body)["items"]}
    assert {f"{PROJECT}-exports", f"{PROJECT}-datasets"} <= buckets
    status, body = _get(PORTS.gcs, f"/storage/v1/b/{PROJECT}-datasets/o/rental_listings.parquet")
    assert status == 200
    assert int(json.loads(body)["size"]) == config.dataset_path.stat().st_size

    # Functions and the receiver.
    assert _get(PORTS.submit, "/openapi.json")[0] == 200
    assert _get(PORTS.process, "/")[0] > 0
    assert _get(PORTS.notify, "/")[0] > 0
    # The receiver speaks HTTPS with a certificate from the stack's own CA, nothing else.
    with pytest.raises(ConnectionError):
        _get(PORTS.receiver, "/")
    ca_file = config.tls_dir / "ca.pem"
    payload = json.dumps({"queryUUID": "q-1", "name": "ü"}).encode()
    hook = {"Content-Type": "application/json", "webhook-id": "q-1"}
    assert _post(PORTS.receiver, "/webhook", payload, hook, ca_file) == (200, b"OK")
    with pytest.raises(ssl.SSLCertVerificationError):
        _post(PORTS.receiver, "/webhook", payload, hook, Path(certifi.where()))
    [stored] = list(config.webhooks_dir.glob("*.json"))
    record = json.loads(stored.read_text(encoding="utf-8"))
    assert record["path"] == "/webhook"
    assert record["headers"]["webhook-id"] == "q-1"
    assert json.loads(record["body"]) == {"queryUUID": "q-1", "name": "ü"}
    assert record["receivedAt"].endswith("Z")

    # stack.env and secrets.env: private, and what `up` returned.
    for path in (config.stack_env_path, config.secrets_env_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    env = read_env_file(config.stack_env_path)
    assert env == info.env
    assert env["EXPORT_API_URL"] == f"http://127.0.0.1:{PORTS.submit}"
    assert env["EXPORT_WEBHOOK_URL"] == f"https://127.0.0.1:{PORTS.receiver}/webhook"
    assert env["EXPORT_WEBHOOK_CA_FILE"] == str(ca_file)
    assert env["PUBSUB_EMULATOR_HOST"] == f"127.0.0.1:{PORTS.pubsub}"
    assert env["STORAGE_EMULATOR_HOST"] == f"http://127.0.0.1:{PORTS.gcs}"
    assert env["EXPORT_API_KEY"]
    # The part settings `up` was given reach the process function, and stack.env says so.
    process_env = _environ_of(info.pids["process"])
    assert process_env["EXPORT_PART_ROWS"] == env["EXPORT_PART_ROWS"] == "5000"
    assert process_env["EXPORT_PARTS_TOPIC"] == env["EXPORT_PARTS_TOPIC"] == "export-parts"
    assert "EXPORT_MAX_PARTS" not in env
    secrets = read_env_file(config.secrets_env_path)
    assert env["EXPORT_KEY_ENCRYPTION_KEY"] == secrets["EXPORT_KEY_ENCRYPTION_KEY"]

    # The demo key is in the stack's named database, not in (default), and submit finds it
    # there: an unknown export is a 404 for that key, where an unknown key would be a 403.
    assert env["EXPORT_FIRESTORE_DATABASE"] == DATABASE
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", env["FIRESTORE_EMULATOR_HOST"])
    demo_hash = key_hash(env["EXPORT_API_KEY"])
    assert FirestoreStore.for_project(PROJECT, DATABASE).get_api_key(demo_hash) is not None
    assert FirestoreStore.for_project(PROJECT).get_api_key(demo_hash) is None
    for api_key, expected in ((env["EXPORT_API_KEY"], 404), (new_api_key().plaintext, 403)):
        conn = http.client.HTTPConnection("127.0.0.1", PORTS.submit, timeout=10)
        try:
            conn.request("GET", "/dataset/export/unknown", headers={"x-api-key": api_key})
            assert conn.getresponse().status == expected
        finally:
            conn.close()

    # Again, from another process: nothing restarted, same key, same PIDs. Other part
    # settings are not applied to the running process function, which `up` says; stack.env
    # keeps the ones it runs with.
    unset = {"EXPORT_MAX_PARTS": ""}
    again = _cli("up", config.state_dir, PORTS, extra_env={"EXPORT_PART_ROWS": "6000", **unset})
    assert again.returncode == 0, again.stderr
    for part in DEFAULT_PARTS:
        assert f"{part.short} already running (pid {first_pids[part.name]})" in again.stderr
    assert _recorded_pids(config) == first_pids
    assert read_env_file(config.stack_env_path)["EXPORT_API_KEY"] == env["EXPORT_API_KEY"]
    assert "keeps EXPORT_PART_ROWS=5000 (asked: 6000)" in again.stderr
    assert "EXPORT_MAX_PARTS" not in again.stderr
    assert read_env_file(config.stack_env_path)["EXPORT_PART_ROWS"] == "5000"

    shown = _cli("status", config.state_dir, PORTS)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert shown.stdout.count(" running ") == len(DEFAULT_PART_NAMES)
    assert BIGQUERY.short not in shown.stdout

    assert down(config) == first_pids
    _assert_gone(first_pids)
    assert list(config.pids_dir.glob("*.pid")) == []
    for part in ALL_PARTS:
        assert procs.port_is_free(PORTS.of(part)), part.name
    shown = _cli("status", config.state_dir, PORTS)
    assert shown.returncode == 3
    assert shown.stdout.count(" stopped ") == len(DEFAULT_PART_NAMES)


@pytest.fixture
def bigquery_config(tmp_path: Path) -> Iterator[StackConfig]:
    config = StackConfig(
        state_dir=tmp_path / "state",
        repo_root=REPO,
        ports=BIGQUERY_PORTS,
        project=PROJECT,
        parts=frozenset({"bigquery"}),
        dataset_rows=2_000,
        create_demo_key=False,
    )
    try:
        yield config
    finally:
        down(config)


def test_the_bigquery_emulator_starts_on_request_loads_the_dataset_and_stops_by_pid(
    bigquery_config: StackConfig,
) -> None:
    """`up` with the bigquery part starts bqemulator on its two ports, loads the demo dataset
    into <project>.listings.rental_listings with the catalog's schema, points stack.env at it,
    leaves it alone on a second `up`, and `down` stops it by PID."""
    config = bigquery_config
    lines: list[str] = []
    info = up(config, echo=lines.append)
    assert info.started == ("bigquery",)
    pid = info.pids["bigquery"]
    assert procs.http_get(BIGQUERY_PORTS.bigquery, "/readyz") is not None
    assert not procs.port_is_free(BIGQUERY_PORTS.bigquery_grpc)
    table = f"{PROJECT}.listings.rental_listings"
    assert any(f"loaded 2,000 rows into BigQuery table {table}" in line for line in lines)
    assert info.env["BIGQUERY_EMULATOR_HOST"] == f"http://127.0.0.1:{BIGQUERY_PORTS.bigquery}"
    assert info.env["BIGQUERY_EMULATOR_GRPC_HOST"] == f"127.0.0.1:{BIGQUERY_PORTS.bigquery_grpc}"
    assert info.env["DWE_BIGQUERY_TABLE"] == table
    client, read = emulator_clients(
        PROJECT, info.env["BIGQUERY_EMULATOR_HOST"], info.env["BIGQUERY_EMULATOR_GRPC_HOST"]
    )
    try:
        assert table_rows(client, table) == 2_000
        temp = client.get_dataset(f"{PROJECT}.dwe_tmp")  # the BigQuery engine's result tables
        assert temp.default_table_expiration_ms == 24 * 3600 * 1000
        # BigQuery's REST API may spell INT64, FLOAT64 and BOOL with their legacy names.
        legacy = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}
        schema = [(f.name, legacy.get(f.field_type, f.field_type), f.mode)
                  for f in client.get_table(table).schema]  # fmt: skip
        assert schema == [(c.name, BIGQUERY_TYPES[c.type], "NULLABLE") for c in RENTAL_LISTINGS]
    finally:
        client.close()
        read.transport.close()

    again = _cli("up", config.state_dir, BIGQUERY_PORTS, "--only", "bigquery")
    assert again.returncode == 0, again.stderr
    assert f"bigquery emulator already running (pid {pid})" in again.stderr
    assert f"BigQuery table {PROJECT}.listings.rental_listings is up to date" in again.stderr
    shown = _cli("status", config.state_dir, BIGQUERY_PORTS)
    assert f"bigquery emulator  running                  pid {pid}" in shown.stdout

    assert down(config) == {"bigquery": pid}
    _assert_gone({"bigquery": pid})
    assert procs.port_is_free(BIGQUERY_PORTS.bigquery)
    assert procs.port_is_free(BIGQUERY_PORTS.bigquery_grpc)


def test_part_settings_come_from_the_environment_and_are_checked_before_anything_starts(
    tmp_path: Path,
) -> None:
    """EXPORT_PART_ROWS and EXPORT_MAX_PARTS are read when set, and config.py's checks refuse
    a bad one before `up` starts a process."""
    environ = {"EXPORT_PART_ROWS": " 200000 ", "EXPORT_MAX_PARTS": "", "EXPORT_MAX_ROWS": "9"}
    config = StackConfig.from_env(tmp_path / "state", environ, cwd=REPO)
    assert config.part_settings == {"EXPORT_PART_ROWS": "200000"}
    config.validate()
    too_many = dataclasses.replace(config, part_settings={"EXPORT_MAX_PARTS": "1025"})
    with pytest.raises(StackError, match="EXPORT_MAX_PARTS must be at most 1024, got 1025"):
        up(too_many, echo=lambda _line: None)
    assert not (tmp_path / "state").exists()
    with pytest.raises(StackError, match="EXPORT_PART_ROWS must be an integer"):
        dataclasses.replace(config, part_settings={"EXPORT_PART_ROWS": "lots"}).validate()


@pytest.fixture
def receiver_config(tmp_path: Path) -> Iterator[StackConfig]:
    config = StackConfig(
        state_dir=tmp_path / "state",
        repo_root=REPO,
        ports=SMALL_PORTS,
        project=PROJECT,
        parts=frozenset({"receiver"}),
        prepare_dataset=False,
        timeout=20,
    )
    try:
        yield config
    finally:
        down(config)


def test_stale_pidfile_and_hung_part_are_replaced(receiver_config: StackConfig) -> None:
    config = receiver_config
    config.pids_dir.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    (config.pids_dir / "receiver.pid").write_text(f"{gone.pid}\n")
    lines: list[str] = []

    info = up(config, echo=lines.append)
    assert any("removed stale pidfile" in line for line in lines)
    assert info.started == ("receiver",)
    first = info.pids["receiver"]
    assert first != gone.pid

    os.kill(first, signal.SIGSTOP)  # alive and holding the port, but answering nothing
    t0 = time.monotonic()
    info = up(config, echo=lines.append)
    assert any("does not answer" in line for line in lines)
    assert info.started == ("receiver",)
    assert info.pids["receiver"] != first
    assert not procs.is_alive(first)
    assert time.monotonic() - t0 < 15
    assert procs.https_get(SMALL_PORTS.receiver, "/") == (200, b"ok")

    down(config)
    _assert_gone({"receiver": info.pids["receiver"]})


def test_busy_port_fails_fast_and_starts_nothing(receiver_config: StackConfig) -> None:
    config = receiver_config
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", SMALL_PORTS.receiver))
        squatter.listen()
        with pytest.raises(StackError) as failure:
            up(config, echo=lambda _line: None)
    message = str(failure.value)
    assert f"port {SMALL_PORTS.receiver} for the demo webhook receiver is in use" in message
    assert f"pid {os.getpid()}" in message
    assert "DWE_RECEIVER_PORT" in message
    assert list(config.pids_dir.glob("*.pid")) == []


def test_up_on_other_ports_refuses_and_a_restart_appends_to_the_log(
    receiver_config: StackConfig,
) -> None:
    """An `up` asked for other ports names the running stack's ports and replaces nothing, and a
    later restart appends to the part's log after a restart marker."""
    config = receiver_config
    info = up(config, echo=lambda _line: None)
    pid = info.pids["receiver"]
    assert read_env_file(config.ports_path) == {"DWE_RECEIVER_PORT": str(SMALL_PORTS.receiver)}
    hook = {"Content-Type": "application/json", "webhook-id": "q-1"}
    ca_file = config.tls_dir / "ca.pem"
    assert _post(SMALL_PORTS.receiver, "/webhook", b"{}", hook, ca_file) == (200, b"OK")

    refused = _cli("up", config.state_dir, OTHER_PORTS, "--only", "receiver", "--no-dataset")
    assert refused.returncode == 1, refused.stderr
    assert f"webhook receiver on {SMALL_PORTS.receiver} (pid {pid}" in refused.stderr
    assert f"DWE_RECEIVER_PORT={SMALL_PORTS.receiver}" in refused.stderr
    assert "make down" in refused.stderr
    assert _recorded_pids(config) == {"receiver": pid}
    assert procs.https_get(SMALL_PORTS.receiver, "/") == (200, b"ok")
    assert procs.port_is_free(OTHER_PORTS.receiver)
    assert len(list(config.webhooks_dir.glob("*.json"))) == 1
    shown = _cli("status", config.state_dir, OTHER_PORTS)
    assert f"pid {pid}" in shown.stdout
    assert f"127.0.0.1:{SMALL_PORTS.receiver}" in shown.stdout

    down(config)
    assert not config.ports_path.exists()
    first_run = config.logfile("receiver").read_text(encoding="utf-8")
    assert first_run.startswith("--- start ")
    info = up(config, echo=lambda _line: None)
    log = config.logfile("receiver").read_text(encoding="utf-8")
    assert log.startswith(first_run)
    assert log[len(first_run) :].startswith("--- restart ")
    assert read_env_file(config.ports_path) == {"DWE_RECEIVER_PORT": str(SMALL_PORTS.receiver)}
