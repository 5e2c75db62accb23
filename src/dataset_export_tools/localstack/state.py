"""Where the local stack keeps its state: its configuration and ports, the state folder and
what it records there (pidfiles, the ports of the running parts, the lock), and what `up` and
`status` report.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import sysconfig
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from dataset_export.config import DEFAULT_FIRESTORE_DATABASE, Settings, firestore_database_problem
from dataset_export.core.errors import ConfigError
from dataset_export.core.source import BIGQUERY_SCHEME
from dataset_export_tools.localstack import procs
from dataset_export_tools.localstack.envfile import read_env_file, write_env_file
from dataset_export_tools.localstack.parts import (
    ALL_PARTS,
    BIGQUERY,
    BY_NAME,
    DEFAULT_PART_NAMES,
    GCS,
    PART_NAMES,
    Part,
)

DEFAULT_PROJECT = "dwe-local"
DEFAULT_DATASET_ROWS = 1_000_000
PROJECT_NAME = "dataset-export"  # pyproject.toml's [project].name: marks the repository root
SIGNER_KEY_FILE = "url-signer-key.json"
PORTS_FILE = "ports.env"
DATASET_FILE = "rental_listings.parquet"
#: Settings of the process function that `up` takes from its caller's environment, when set
#: (``EXPORT_PART_ROWS=200000 make up``), and records in stack.env.
PART_SETTINGS = ("EXPORT_PART_ROWS", "EXPORT_MAX_PARTS")
#: DWE_ENGINE values: the query engine the local stack runs exports on.
ENGINES = ("duckdb", "bigquery")
#: The port variable of the BigQuery emulator's Storage Read (gRPC) listener.
BIGQUERY_GRPC_PORT_ENV = "DWE_BIGQUERY_GRPC_PORT"
#: The dataset (in the stack's project) that holds the demo table on the BigQuery emulator.
BIGQUERY_DATASET = "listings"
#: The temporary dataset (in the stack's project) of the BigQuery engine's per-export tables.
BIGQUERY_TEMP_DATASET = "dwe_tmp"
#: The process function's engine settings (functions.function_env): a process function left
#: running keeps those it was started with, as it keeps its PART_SETTINGS.
ENGINE_SETTINGS = (
    "EXPORT_DATASET_URI",
    "EXPORT_BIGQUERY_TEMP_DATASET",
    "BIGQUERY_EMULATOR_HOST",
    "BIGQUERY_EMULATOR_GRPC_HOST",
)

Echo = Callable[[str], None]


class StackError(RuntimeError):
    """`up` or `down` could not do its job; the message says what to do about it."""


def stderr_echo(line: str) -> None:
    """The default progress output of `up` and `down`."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Ports:
    """The stack's TCP ports on 127.0.0.1 (all below 32768, outside Linux's ephemeral range,
    where the emulators' JVMs open extra listeners)."""

    submit: int = 18081
    process: int = 18082
    notify: int = 18083
    receiver: int = 18084
    pubsub: int = 18085
    firestore: int = 18086
    gcs: int = 18087
    scheduler: int = 18088
    #: The BigQuery emulator's REST API, and its Storage Read API (gRPC).
    bigquery: int = 18089
    bigquery_grpc: int = 18090

    def of(self, part: Part | str) -> int:
        """The port of a part (by Part or by name)."""
        value: int = getattr(self, part if isinstance(part, str) else part.name)
        return value

    @classmethod
    def starting_at(cls, first: int) -> Ports:
        """Consecutive ports in the default order, e.g. 28081..28090 for tests."""
        return cls(**{f.name: first + i for i, f in enumerate(fields(cls))})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Ports:
        """Defaults overridden by DWE_<PART>_PORT variables."""
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for part in ALL_PARTS:
            raw = env.get(part.port_env, "").strip()
            if not raw:
                continue
            if not raw.isdigit():
                raise StackError(f"{part.port_env} must be a port number, got {raw!r}")
            values[part.name] = int(raw)
        raw = env.get(BIGQUERY_GRPC_PORT_ENV, "").strip()
        if raw:
            if not raw.isdigit():
                raise StackError(f"{BIGQUERY_GRPC_PORT_ENV} must be a port number, got {raw!r}")
            values["bigquery_grpc"] = int(raw)
        return cls(**values)

    def validate(self) -> None:
        """Raise StackError for out-of-range or shared ports."""
        seen: dict[int, str] = {}
        for part in ALL_PARTS:
            port = self.of(part)
            if not 1 <= port <= 65535:
                raise StackError(f"{part.port_env}={port} is not a TCP port")
            if port in seen:
                other = BY_NAME[seen[port]]
                raise StackError(
                    f"{other.long} and {part.long} are both set to port {port}; "
                    f"change {other.port_env} or {part.port_env}"
                )
            seen[port] = part.name
        if not 1 <= self.bigquery_grpc <= 65535:
            raise StackError(f"{BIGQUERY_GRPC_PORT_ENV}={self.bigquery_grpc} is not a TCP port")
        if self.bigquery_grpc in seen:
            other = BY_NAME[seen[self.bigquery_grpc]]
            raise StackError(
                f"{other.long} and the BigQuery emulator's gRPC API are both set to port "
                f"{self.bigquery_grpc}; change {other.port_env} or {BIGQUERY_GRPC_PORT_ENV}"
            )


def find_repo_root(start: Path | None = None) -> Path:
    """The folder holding this project's pyproject.toml: from `start` (default: the current
    directory) upward, else the source tree this module was loaded from."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[3]):
        pyproject = folder / "pyproject.toml"
        if not pyproject.is_file():
            continue
        try:
            name = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["name"]
        except (tomllib.TOMLDecodeError, KeyError, TypeError, UnicodeDecodeError):
            continue
        if name == PROJECT_NAME:
            return folder
    raise StackError(
        f"no pyproject.toml of {PROJECT_NAME!r} in {here} or above; run from the repository"
    )


def scripts_dir() -> Path:
    """The running environment's bin/ (the venv's, when run from it)."""
    return Path(sysconfig.get_path("scripts"))


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state, its ports and what to start."""

    state_dir: Path
    repo_root: Path
    ports: Ports = field(default_factory=Ports)
    project: str = DEFAULT_PROJECT
    #: The Firestore database the functions and exportctl use (EXPORT_FIRESTORE_DATABASE).
    firestore_database: str = DEFAULT_FIRESTORE_DATABASE
    dataset_rows: int = DEFAULT_DATASET_ROWS
    #: Names from PART_NAMES to start; the others are left alone. The default leaves out the
    #: optional parts (the BigQuery emulator: from_env adds it for DWE_ENGINE=bigquery).
    parts: frozenset[str] = frozenset(DEFAULT_PART_NAMES)
    #: Generate the demo Parquet dataset if missing and upload it to the datasets bucket.
    prepare_dataset: bool = True
    #: Create the demo account's API key with `exportctl keys create` (needs Firestore).
    create_demo_key: bool = True
    #: The `exportctl` executable; default: the one beside this Python interpreter.
    exportctl: Path | None = None
    #: Folder with submit/, process/ and notify/ main.py; default: <repo>/functions.
    functions_dir: Path | None = None
    #: Seconds each part may take to become ready.
    timeout: float = 60.0
    #: Seconds between SIGTERM and SIGKILL when stopping.
    stop_timeout: float = 10.0
    #: PART_SETTINGS given to the functions (unset ones keep config.py's defaults).
    part_settings: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls,
        state_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> StackConfig:
        """The configuration the CLI uses: DWE_*_PORT, GOOGLE_CLOUD_PROJECT,
        EXPORT_FIRESTORE_DATABASE, DWE_DATASET_ROWS, PART_SETTINGS, DWE_ENGINE (bigquery adds
        the BigQuery emulator), and for development DWE_EXPORTCTL and DWE_FUNCTIONS_DIR."""
        env = os.environ if environ is None else environ
        repo = find_repo_root(cwd)
        rows_raw = env.get("DWE_DATASET_ROWS", "").strip()
        if rows_raw and not rows_raw.isdigit():
            raise StackError(f"DWE_DATASET_ROWS must be a positive integer, got {rows_raw!r}")
        exportctl = env.get("DWE_EXPORTCTL", "").strip()
        functions_dir = env.get("DWE_FUNCTIONS_DIR", "").strip()
        engine = env.get("DWE_ENGINE", "").strip().lower() or "duckdb"
        if engine not in ENGINES:
            raise StackError(f"DWE_ENGINE must be one of {', '.join(ENGINES)}, got {engine!r}")
        parts = set(DEFAULT_PART_NAMES)
        if engine == "bigquery":
            parts.add(BIGQUERY.name)
        return cls(
            state_dir=(state_dir or repo / ".local").resolve(),
            repo_root=repo,
            ports=Ports.from_env(env),
            project=env.get("GOOGLE_CLOUD_PROJECT", "").strip() or DEFAULT_PROJECT,
            firestore_database=env.get("EXPORT_FIRESTORE_DATABASE", "").strip()
            or DEFAULT_FIRESTORE_DATABASE,
            dataset_rows=int(rows_raw) if rows_raw else DEFAULT_DATASET_ROWS,
            exportctl=Path(exportctl).resolve() if exportctl else None,
            functions_dir=Path(functions_dir).resolve() if functions_dir else None,
            part_settings={
                name: env[name].strip() for name in PART_SETTINGS if env.get(name, "").strip()
            },
            parts=frozenset(parts),
        )

    def validate(self) -> None:
        """Raise StackError for a configuration that cannot work."""
        self.ports.validate()
        unknown = self.parts - set(PART_NAMES)
        if unknown:
            raise StackError(
                f"unknown part(s) {', '.join(sorted(unknown))}; known: {', '.join(PART_NAMES)}"
            )
        if self.dataset_rows <= 0:
            raise StackError("dataset_rows must be positive")
        problem = firestore_database_problem(self.firestore_database)
        if problem:
            raise StackError(problem)
        unknown_settings = set(self.part_settings) - set(PART_SETTINGS)
        if unknown_settings:
            raise StackError(f"part_settings takes {', '.join(PART_SETTINGS)} only")
        try:  # config.py's own checks, before anything starts rather than at the first export
            Settings.from_env(
                {
                    "GOOGLE_CLOUD_PROJECT": self.project,
                    "EXPORT_BUCKET": self.exports_bucket,
                    **self.part_settings,
                }
            )
        except ConfigError as exc:
            raise StackError(str(exc)) from exc

    def enabled(self, part: Part) -> bool:
        """True when `up` should start this part."""
        return part.name in self.parts

    @property
    def pids_dir(self) -> Path:
        return self.state_dir / "pids"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def webhooks_dir(self) -> Path:
        return self.state_dir / "webhooks"

    @property
    def tls_dir(self) -> Path:
        """The local CA and the demo receiver's certificate."""
        return self.state_dir / "tls"

    @property
    def stack_env_path(self) -> Path:
        return self.state_dir / "stack.env"

    @property
    def secrets_env_path(self) -> Path:
        return self.state_dir / "secrets.env"

    @property
    def ports_path(self) -> Path:
        """The DWE_*_PORT of each part this state dir has running (shell-sourceable)."""
        return self.state_dir / PORTS_FILE

    @property
    def dataset_path(self) -> Path:
        return self.data_dir / DATASET_FILE

    @property
    def exports_bucket(self) -> str:
        return f"{self.project}-exports"

    @property
    def datasets_bucket(self) -> str:
        return f"{self.project}-datasets"

    @property
    def bigquery_table(self) -> str:
        """The demo table on the BigQuery emulator: ``<project>.listings.rental_listings``."""
        return f"{self.project}.{BIGQUERY_DATASET}.{Path(DATASET_FILE).stem}"

    @property
    def engine(self) -> str:
        """The engine the stack's process function runs exports on: ``bigquery`` (on the demo
        table) when the BigQuery emulator is part of the stack, else ``duckdb``."""
        return "bigquery" if self.enabled(BIGQUERY) else "duckdb"

    @property
    def bigquery_temp_dataset(self) -> str:
        """The BigQuery engine's temporary dataset on the emulator: ``<project>.dwe_tmp``."""
        return f"{self.project}.{BIGQUERY_TEMP_DATASET}"

    @property
    def dataset_uri(self) -> str:
        """The process function's EXPORT_DATASET_URI: ``bq://`` the demo table on the BigQuery
        engine; else the demo Parquet file in the datasets bucket, as deployed (each export
        reads the current generation, and what is learnt of it is kept under it); the local
        file itself when the stack has no storage emulator or uploads no dataset."""
        if self.engine == "bigquery":
            return f"{BIGQUERY_SCHEME}{self.bigquery_table}"
        if self.enabled(GCS) and self.prepare_dataset:
            return self.dataset_gcs_uri
        return str(self.dataset_path)

    @property
    def dataset_gcs_uri(self) -> str:
        """The demo Parquet file in the datasets bucket, where ``up`` uploads it."""
        return f"gs://{self.datasets_bucket}/{DATASET_FILE}"

    @property
    def bigquery_venv(self) -> Path:
        """The BigQuery emulator's virtualenv (a build artefact of the repository, shared by
        every state dir, like .venv)."""
        return self.repo_root / ".local" / "bqemulator-venv"

    @property
    def exportctl_path(self) -> Path:
        return self.exportctl or scripts_dir() / "exportctl"

    @property
    def functions_path(self) -> Path:
        return self.functions_dir or self.repo_root / "functions"

    def pidfile(self, part: Part) -> Path:
        return self.pids_dir / f"{part.name}.pid"

    def logfile(self, part: Part | str) -> Path:
        return self.logs_dir / f"{part if isinstance(part, str) else part.name}.log"

    def host(self, part: Part) -> str:
        """'127.0.0.1:<port>' of a part."""
        return f"127.0.0.1:{self.ports.of(part)}"

    def url(self, part: Part) -> str:
        """'http://127.0.0.1:<port>' of a part."""
        return f"http://{self.host(part)}"


@dataclass(frozen=True)
class StackInfo:
    """What `up` left running."""

    config: StackConfig
    #: The variables written to stack.env.
    env: dict[str, str]
    #: PID (= process group) of each running part.
    pids: dict[str, int]
    #: Parts this run started, and parts it found running and left alone.
    started: tuple[str, ...]
    reused: tuple[str, ...]
    #: Steps that were skipped with a problem (e.g. no demo API key).
    warnings: tuple[str, ...]

    @property
    def env_file(self) -> Path:
        return self.config.stack_env_path

    def url(self, part: str) -> str:
        """'http://127.0.0.1:<port>' of a part by name."""
        return self.config.url(BY_NAME[part])


@dataclass(frozen=True)
class PartStatus:
    """One line of `status`."""

    part: Part
    pid: int | None
    port: int
    running: bool
    answering: bool

    def line(self) -> str:
        state = "stopped"
        if self.running:
            state = "running" if self.answering else "running, not answering"
        pid = f"pid {self.pid}" if self.running else "-"
        return f"{self.part.short:<18} {state:<24} {pid:<11} 127.0.0.1:{self.port}"


@contextlib.contextmanager
def state_lock(config: StackConfig, say: Echo) -> Iterator[None]:
    """One `up` or `down` at a time per state dir: two would race over pidfiles and ports."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    with (config.state_dir / "stack.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another up/down on {config.state_dir} to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def elapsed(since: float) -> str:
    """'1.2 s' since a time.monotonic() reading."""
    return f"{time.monotonic() - since:.1f} s"


# --- the ports of the running stack --------------------------------------------------------


def remembered_ports(config: StackConfig) -> dict[str, int]:
    """{part: port} of the parts recorded as started in this state dir, from ports.env."""
    values = read_env_file(config.ports_path)
    return {
        part.name: int(values[part.port_env])
        for part in ALL_PARTS
        if values.get(part.port_env, "").isdigit()
    }


def remember_ports(config: StackConfig, ports: Mapping[str, int | None]) -> None:
    """Record the port of each part given (None: forget it); no parts left, no file."""
    current = remembered_ports(config)
    for name, port in ports.items():
        if port is None:
            current.pop(name, None)
        else:
            current[name] = port
    if not current:
        config.ports_path.unlink(missing_ok=True)
        return
    write_env_file(
        config.ports_path,
        {part.port_env: str(current[part.name]) for part in ALL_PARTS if part.name in current},
        header="Ports of the running local stack, kept by `up` so another `up` recognises it.",
    )


def check_same_ports(config: StackConfig) -> None:
    """Refuse, naming the ports, when a part of this state dir's stack is running on another
    port than `config` asks for: `up` would otherwise take it for dead and replace it, losing
    the emulators' state (the shell that runs it may simply lack the DWE_*_PORT variables)."""
    remembered = remembered_ports(config)
    running: list[tuple[Part, int, int | None]] = []
    for part in ALL_PARTS:
        pid = procs.read_pid(config.pidfile(part))
        if pid is None or not procs.is_recorded_process(pid, part.marker):
            continue
        port = remembered.get(part.name)
        if port is None and procs.port_holders(config.ports.of(part)) & (
            procs.group_members(pid) | {pid}
        ):
            port = config.ports.of(part)  # started before ports were remembered
        running.append((part, pid, port))
    if all(port == config.ports.of(part) for part, _, port in running):
        return
    where = ", ".join(
        f"{part.short} on {port if port is not None else 'an unrecorded port'} (pid {pid}, "
        f"{part.port_env}={config.ports.of(part)} asked)"
        for part, pid, port in running
    )
    same = " ".join(f"{part.port_env}={port}" for part, _, port in running if port is not None)
    raise StackError(
        f"a local stack is already running from {config.state_dir} on other ports: {where}. "
        f"Run `up` with its ports ({same}; `source {config.ports_path}` exports them), "
        "or stop it first with `make down`."
    )


def recorded(config: StackConfig) -> list[tuple[str, Path]]:
    """(name, pidfile) for every pidfile, servers before emulators (reverse start order)."""
    if not config.pids_dir.is_dir():
        return []
    files = {path.stem: path for path in config.pids_dir.glob("*.pid")}
    order = {name: i for i, name in enumerate(reversed(PART_NAMES))}
    return sorted(files.items(), key=lambda item: (order.get(item[0], -1), item[0]))
