"""The stack's servers: the three functions under functions-framework (as Cloud Functions runs
them), the demo webhook receiver and the retry scheduler, with the environment the functions
are given.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping

from dataset_export_tools.localstack import emulators, pki
from dataset_export_tools.localstack.parts import (
    BY_NAME,
    FIRESTORE,
    GCS,
    PUBSUB,
    RECEIVER,
    SCHEDULER,
    Part,
)
from dataset_export_tools.localstack.provisioning import (
    DEAD_LETTER_TOPIC,
    KEK_VAR,
    LINK_KEY_VAR,
    PARTS_TOPIC,
    READY_TOPIC,
    REQUESTS_TOPIC,
    TICK_TOPIC,
)
from dataset_export_tools.localstack.state import (
    SIGNER_KEY_FILE,
    StackConfig,
    StackError,
    scripts_dir,
)

# Cloud Scheduler ticks every minute; locally every few seconds, so retries show up quickly.
TICK_SECONDS = 5


def function_env(config: StackConfig, keys: Mapping[str, str]) -> dict[str, str]:
    """What the functions are given (on top of os.environ)."""
    return {
        "GOOGLE_CLOUD_PROJECT": config.project,
        "EXPORT_ENV": "local",
        "PUBSUB_EMULATOR_HOST": config.host(PUBSUB),
        "FIRESTORE_EMULATOR_HOST": config.host(FIRESTORE),
        "EXPORT_FIRESTORE_DATABASE": config.firestore_database,
        "STORAGE_EMULATOR_HOST": config.url(GCS),
        "EXPORT_REQUESTS_TOPIC": REQUESTS_TOPIC,
        "EXPORT_READY_TOPIC": READY_TOPIC,
        "EXPORT_PARTS_TOPIC": PARTS_TOPIC,
        "EXPORT_DEAD_LETTER_TOPIC": DEAD_LETTER_TOPIC,
        "EXPORT_BUCKET": config.exports_bucket,
        "EXPORT_DATASET_URI": config.dataset_uri,
        **(engine_env(config) if config.engine == "bigquery" else {}),
        "EXPORT_PUBLIC_URL": config.url(BY_NAME["submit"]),
        KEK_VAR: keys[KEK_VAR],
        LINK_KEY_VAR: keys[LINK_KEY_VAR],
        "EXPORT_URL_SIGNER_KEY_FILE": str(config.state_dir / SIGNER_KEY_FILE),
        # notify trusts the local CA, so the demo webhook goes over verified HTTPS.
        "EXPORT_WEBHOOK_CA_FILE": str(config.tls_dir / pki.CA_FILE),
        # EXPORT_PART_ROWS and EXPORT_MAX_PARTS of `up`'s caller, when set (process reads them).
        **config.part_settings,
        "PYTHONUNBUFFERED": "1",
    }


def engine_env(config: StackConfig) -> dict[str, str]:
    """The BigQuery engine's settings beside its bq:// EXPORT_DATASET_URI: the temporary dataset
    and the emulator's REST and Storage Read (gRPC) endpoints."""
    bigquery = emulators.bigquery_environ(config)
    return {
        "EXPORT_BIGQUERY_TEMP_DATASET": config.bigquery_temp_dataset,
        "BIGQUERY_EMULATOR_HOST": bigquery["BIGQUERY_EMULATOR_HOST"],
        "BIGQUERY_EMULATOR_GRPC_HOST": bigquery["BIGQUERY_EMULATOR_GRPC_HOST"],
    }


def command_factory(
    config: StackConfig, function_env: Mapping[str, str]
) -> Callable[[Part], tuple[list[str], dict[str, str]]]:
    """The command line and environment that start each server, given the functions' env."""

    def command(part: Part) -> tuple[list[str], dict[str, str]]:
        port = str(config.ports.of(part))
        if part is SCHEDULER:
            env = {**os.environ, **function_env}
            module = "dataset_export_tools.localstack.scheduler"
            args = ["--port", port, "--project", config.project, "--topic", TICK_TOPIC]
            return [sys.executable, "-m", module, *args, "--interval", str(TICK_SECONDS)], env
        if part is RECEIVER:
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            module = "dataset_export_tools.localstack.receiver"
            out = str(config.webhooks_dir)
            tls = config.tls_dir
            cmd = [sys.executable, "-m", module, "--port", port, "--out", out]
            return [
                *cmd,
                *("--tls-cert", str(tls / pki.CERT_FILE), "--tls-key", str(tls / pki.KEY_FILE)),
            ], env
        source = config.functions_path / part.name / "main.py"
        if not source.is_file():
            raise StackError(f"{source} does not exist: cannot start {part.long}")
        framework = str(scripts_dir() / "functions-framework")
        cmd = [framework, "--source", str(source), "--target", part.name]
        return [*cmd, "--host", "127.0.0.1", "--port", port], {**os.environ, **function_env}

    return command
