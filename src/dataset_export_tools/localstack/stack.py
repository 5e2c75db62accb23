"""The local stack: real emulators, the three functions and a demo webhook receiver.

`up` is safe to run again: a part whose recorded process is alive and answers is left alone, a
stale pidfile is cleared and its part restarted, and every resource is created idempotently.
The ports of the running parts are kept in `<state>/ports.env`; an `up` given other ports while
they run refuses, naming them, instead of replacing the stack. Logs are appended to.
`down` stops exactly the process groups recorded in `<state>/pids/`, nothing else.

This module starts, checks and stops the parts; what each part is lives beside it:
`state` (configuration, ports, the state folder), `emulators` (Pub/Sub, Firestore, GCS),
`functions` (the functions, the demo receiver, the retry scheduler) and `provisioning` (secrets,
topics and subscriptions, buckets, dataset, demo key, stack.env).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from dataset_export_tools.localstack import (
    bqemulator,
    emulators,
    functions,
    pki,
    procs,
    provisioning,
)
from dataset_export_tools.localstack.envfile import read_env_file, write_env_file
from dataset_export_tools.localstack.parts import (
    ALL_PARTS,
    BIGQUERY,
    BY_NAME,
    EMULATORS,
    FIRESTORE,
    GCS,
    PROCESS,
    PUBSUB,
    SERVERS,
    Part,
)
from dataset_export_tools.localstack.provisioning import API_KEY_VAR
from dataset_export_tools.localstack.state import (
    BIGQUERY_GRPC_PORT_ENV,
    ENGINE_SETTINGS,
    PART_SETTINGS,
    Echo,
    PartStatus,
    Ports,
    StackConfig,
    StackError,
    StackInfo,
    check_same_ports,
    elapsed,
    find_repo_root,
    recorded,
    remember_ports,
    remembered_ports,
    state_lock,
    stderr_echo,
)

# The public names of the stack, wherever they live, for `from ...stack import ...`.
__all__ = [
    "PartStatus",
    "Ports",
    "StackConfig",
    "StackError",
    "StackInfo",
    "down",
    "find_repo_root",
    "probe",
    "status",
    "up",
]


class _Aborted(StackError):
    """A readiness wait given up because another part of the same batch failed."""


def probe(part: Part, port: int) -> bool:
    """One readiness check of a part (no waiting)."""
    if part.probe == "emulator_ok":
        answer = procs.http_get(port, "/")
        return answer is not None and answer[0] == 200 and answer[1].strip() == b"Ok"
    if part.probe == "gcs_buckets":
        answer = procs.http_get(port, "/storage/v1/b")
        return answer is not None and answer[0] == 200
    if part.probe == "bigquery_ready":
        # 200 once its DuckDB engine and catalog answer (503 before).
        answer = procs.http_get(port, "/readyz")
        return answer is not None and answer[0] == 200
    if part.probe == "openapi":
        answer = procs.http_get(port, "/openapi.json")
        return answer is not None and answer[0] == 200
    if part.probe == "any_https":
        return procs.https_get(port, "/") is not None
    return procs.http_get(port, "/") is not None


def _accepts(port: int) -> bool:
    """True when something accepts a TCP connection on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


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

    def say_safely(self, line: str) -> None:
        """One progress line; readiness waits run in threads."""
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
            self.say_safely(f"{part.short}: removed stale pidfile (pid {pid} is not running)")
            return False
        port = self.config.ports.of(part)
        ours = procs.group_members(pid) | {pid}
        if procs.port_holders(port) & ours and probe(part, port):
            self.say_safely(f"{part.short} already running (pid {pid})")
            self.reused.append(part.name)
            self.pids[part.name] = pid
            remember_ports(self.config, {part.name: port})
            return True
        self.say_safely(
            f"{part.short} (pid {pid}) does not answer on 127.0.0.1:{port}; restarting it"
        )
        procs.stop_groups([pid], self.config.stop_timeout)
        pidfile.unlink(missing_ok=True)
        return False

    def _check_port(self, part: Part) -> None:
        ports = [(self.config.ports.of(part), part.long, part.port_env)]
        if part is BIGQUERY:
            grpc_port = self.config.ports.bigquery_grpc
            ports.append((grpc_port, f"{part.long}'s gRPC API", BIGQUERY_GRPC_PORT_ENV))
        for port, what, variable in ports:
            if procs.port_is_free(port):
                continue
            holders = sorted(procs.port_holders(port))
            who = f" ({'; '.join(procs.describe(pid) for pid in holders)})" if holders else ""
            raise StackError(
                f"port {port} for {what} is in use by another process{who}; "
                f"free it or set {variable}"
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
        if part is BIGQUERY:
            # Its REST API answers first, then the Storage Read (gRPC) server starts.
            grpc_port = self.config.ports.bigquery_grpc
            if not procs.poll(
                lambda: _accepts(grpc_port),
                started_at + self.config.timeout,
                abort,
                alive=lambda: procs.is_alive(pid),
            ):
                if abort.is_set():
                    raise _Aborted(part.name)
                raise self._failure(part, f"did not listen on gRPC port {grpc_port}")
        if part is FIRESTORE:
            try:
                from dataset_export_tools.localstack.provision import warm_up_firestore

                warm_up_firestore(self.config.project, self.config.firestore_database)
            except Exception as exc:
                raise self._failure(part, f"failed its warm-up write ({exc})") from exc
        self.say_safely(f"{part.short} ready on 127.0.0.1:{port} ({elapsed(started_at)})")

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
            remember_ports(self.config, {part.name: self.config.ports.of(part)})
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
        self.say_safely(f"stopping what this run started: {', '.join(self.started)}")
        pids = {name: self.pids[name] for name in self.started}
        procs.stop_groups(pids.values(), self.config.stop_timeout)
        for name in pids:
            self.config.pidfile(BY_NAME[name]).unlink(missing_ok=True)
        remember_ports(self.config, dict.fromkeys(pids))

    def warn(self, message: str) -> None:
        """A step skipped with a problem: reported now and in StackInfo.warnings."""
        self.warnings.append(message)
        self.say_safely(f"warning: {message}")


def up(config: StackConfig, *, echo: Echo | None = None) -> StackInfo:
    """Bring the stack up (or complete it) and write stack.env; raises StackError on failure,
    after stopping whatever this call started."""
    say = echo or stderr_echo
    config.validate()
    for folder in (config.pids_dir, config.logs_dir, config.data_dir, config.webhooks_dir):
        folder.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    run = _Up(config, say)
    emulator_hosts = emulators.client_environ(config)
    with state_lock(config, say), emulators.patched_environ(emulator_hosts):
        check_same_ports(config)
        try:
            if config.enabled(BIGQUERY):
                bqemulator.ensure_venv(config.bigquery_venv, config.repo_root, run.say_safely)
            run.bring_up(
                [p for p in EMULATORS if config.enabled(p)],
                lambda part: emulators.command(config, part),
            )
            keys = provisioning.ensure_keys(config, run.say_safely)
            pki.ensure_loopback_pki(config.tls_dir)
            if config.enabled(PUBSUB):
                provisioning.create_pubsub(config, run.say_safely)
            if config.enabled(GCS):
                provisioning.create_buckets(config, run.say_safely)
            common = functions.function_env(config, keys)
            # Children get the same loopback NO_PROXY as this process.
            common.update(NO_PROXY=emulator_hosts["NO_PROXY"], no_proxy=emulator_hosts["no_proxy"])
            previous = read_env_file(config.stack_env_path)
            previous_key = previous.get(API_KEY_VAR)
            client_env = {**os.environ, **provisioning.stack_env(config, common, previous_key)}
            if config.prepare_dataset:
                provisioning.prepare_dataset(config, client_env, run.say_safely)
                if config.enabled(BIGQUERY):
                    provisioning.load_bigquery_table(config, run.say_safely)
            servers = [p for p in SERVERS if config.enabled(p)]
            run.bring_up(servers, functions.command_factory(config, common))
            if PROCESS.name in run.reused:
                _keep_running_part_settings(previous, common, run.warn)
            api_key = previous_key
            if config.create_demo_key and config.enabled(FIRESTORE):
                client_env.pop(API_KEY_VAR, None)
                api_key = provisioning.demo_key(
                    config,
                    client_env,
                    previous_key,
                    FIRESTORE.name in run.started,
                    run.say_safely,
                    run.warn,
                )
            env = provisioning.stack_env(config, common, api_key)
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
    say(f"stack ready in {elapsed(t0)}; environment in {config.stack_env_path}")
    return StackInfo(
        config=config,
        env=env,
        pids=dict(run.pids),
        started=tuple(run.started),
        reused=tuple(run.reused),
        warnings=tuple(run.warnings),
    )


def _keep_running_part_settings(
    previous: dict[str, str], common: dict[str, str], warn: Echo
) -> None:
    """A process function left running keeps the part and engine settings it was started with
    (those of the last stack.env): say so when this `up` asks for others (DWE_ENGINE=bigquery
    on a stack whose process runs DuckDB), and keep them in ``common`` so stack.env tells what
    runs."""
    settings = (*PART_SETTINGS, *ENGINE_SETTINGS)
    changed = [
        f"{name}={previous.get(name, '(unset)')} (asked: {common.get(name, '(unset)')})"
        for name in settings
        if previous.get(name) != common.get(name)
    ]
    if not changed:
        return
    warn(
        f"the running process function keeps {', '.join(changed)}; "
        "`make down` and `make up` again to change it"
    )
    for name in settings:
        common.pop(name, None)
        if name in previous:
            common[name] = previous[name]


# --- down and status ------------------------------------------------------------------------


def down(config: StackConfig, *, echo: Echo | None = None) -> dict[str, int]:
    """Stop every recorded part (SIGTERM to its process group, SIGKILL after stop_timeout)
    and remove its pidfile; returns {part: pid} of what was stopped."""
    say = echo or stderr_echo
    stopped: dict[str, int] = {}
    if not config.state_dir.is_dir():
        say(f"nothing to stop (no {config.state_dir})")
        return stopped
    with state_lock(config, say):
        targets: dict[str, tuple[int, Path]] = {}
        for name, pidfile in recorded(config):
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
            say(f"stack down in {elapsed(t0)}")
        gone = {p.name for p in ALL_PARTS if not config.pidfile(p).exists()}
        remember_ports(config, dict.fromkeys(gone))
        if survivors:
            raise StackError(f"still running after SIGKILL: {', '.join(survivors)}")
    return stopped


def status(config: StackConfig) -> list[PartStatus]:
    """The state of every part, recorded or not (an optional part only when it is enabled or
    recorded: a stack without the BigQuery emulator is complete)."""
    remembered = remembered_ports(config)
    result: list[PartStatus] = []
    for part in ALL_PARTS:
        if part.optional and not config.enabled(part) and not config.pidfile(part).exists():
            continue
        pid = procs.read_pid(config.pidfile(part))
        running = pid is not None and procs.is_recorded_process(pid, part.marker)
        # A running part is shown on the port it was started on, whatever this shell asks.
        port = (remembered.get(part.name) if running else None) or config.ports.of(part)
        answering = running and probe(part, port)
        result.append(PartStatus(part, pid, port, running, answering))
    return result
