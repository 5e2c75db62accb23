"""The processes the local stack runs, their ports and how to recognise them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ProbeKind = Literal[
    "emulator_ok", "gcs_buckets", "bigquery_ready", "openapi", "any_http", "any_https"
]


@dataclass(frozen=True)
class Part:
    """One process of the stack."""

    name: str
    #: Short name for progress lines ("pubsub emulator ready on ...").
    short: str
    #: Name for error messages ("port 18085 for the Pub/Sub emulator is in use ...").
    long: str
    port_env: str
    default_port: int
    #: A substring of /proc/<pid>/cmdline, so a PID reused by an unrelated process after a
    #: reboot is never mistaken for ours (and never signalled).
    marker: str
    probe: ProbeKind
    #: Started only when asked for (BIGQUERY: DWE_ENGINE=bigquery, or `up --only bigquery`).
    optional: bool = False


PUBSUB = Part(
    "pubsub",
    "pubsub emulator",
    "the Pub/Sub emulator",
    "DWE_PUBSUB_PORT",
    18085,
    "cloud-pubsub-emulator",
    "emulator_ok",
)
FIRESTORE = Part(
    "firestore",
    "firestore emulator",
    "the Firestore emulator",
    "DWE_FIRESTORE_PORT",
    18086,
    "cloud-firestore-emulator",
    "emulator_ok",
)
GCS = Part(
    "gcs",
    "gcs emulator",
    "the GCS emulator (fake-gcs-server)",
    "DWE_GCS_PORT",
    18087,
    "fake-gcs-server",
    "gcs_buckets",
)
# The BigQuery emulator (PyPI bqemulator, in a virtualenv of its own: bqemulator.py); its
# Storage Read API listens on a second port, DWE_BIGQUERY_GRPC_PORT (Ports.bigquery_grpc).
BIGQUERY = Part(
    "bigquery",
    "bigquery emulator",
    "the BigQuery emulator (bqemulator)",
    "DWE_BIGQUERY_PORT",
    18089,
    "bqemulator",
    "bigquery_ready",
    optional=True,
)
SUBMIT = Part(
    "submit",
    "submit function",
    "the submit function",
    "DWE_SUBMIT_PORT",
    18081,
    "functions-framework",
    "openapi",
)
PROCESS = Part(
    "process",
    "process function",
    "the process function",
    "DWE_PROCESS_PORT",
    18082,
    "functions-framework",
    "any_http",
)
NOTIFY = Part(
    "notify",
    "notify function",
    "the notify function",
    "DWE_NOTIFY_PORT",
    18083,
    "functions-framework",
    "any_http",
)
RECEIVER = Part(
    "receiver",
    "webhook receiver",
    "the demo webhook receiver",
    "DWE_RECEIVER_PORT",
    18084,
    "dataset_export_tools.localstack.receiver",
    "any_https",
)

SCHEDULER = Part(
    "scheduler",
    "retry scheduler",
    "the local retry scheduler (Cloud Scheduler's stand-in)",
    "DWE_SCHEDULER_PORT",
    18088,
    "dataset_export_tools.localstack.scheduler",
    "any_http",
)

EMULATORS: tuple[Part, ...] = (PUBSUB, FIRESTORE, GCS, BIGQUERY)
FUNCTIONS: tuple[Part, ...] = (SUBMIT, PROCESS, NOTIFY)
SERVERS: tuple[Part, ...] = (*FUNCTIONS, RECEIVER, SCHEDULER)
#: Start order; `down` stops in the reverse order.
ALL_PARTS: tuple[Part, ...] = (*EMULATORS, *SERVERS)
PART_NAMES: tuple[str, ...] = tuple(p.name for p in ALL_PARTS)
#: What `up` starts unless told otherwise: every part but the optional ones.
DEFAULT_PART_NAMES: tuple[str, ...] = tuple(p.name for p in ALL_PARTS if not p.optional)
BY_NAME: dict[str, Part] = {p.name: p for p in ALL_PARTS}
