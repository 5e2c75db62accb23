"""Process plumbing for the local stack: pidfiles, liveness, ports, start and stop.

Linux only (it reads /proc), like the machines this project runs on.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

# Popen objects of the processes this Python process started, so `down` can reap them: a child
# that is signalled but never waited for stays a zombie, and its PID would still look taken.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_CHILDREN_LOCK = threading.Lock()

POLL_INTERVAL = 0.1


def read_pid(path: Path) -> int | None:
    """The PID in a pidfile, or None when the file is missing or garbled."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def write_pid(path: Path, pid: int) -> None:
    """Record a PID; written via a temporary file so a reader never sees half a number."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n", encoding="ascii")
    tmp.replace(path)


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may itself hold spaces or parentheses.
    return raw[raw.rfind(")") + 2 :].split()


def is_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (signal 0 succeeds on zombies)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    """The process's command line, arguments joined by spaces ('' when unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace").strip()


def is_recorded_process(pid: int, marker: str | None) -> bool:
    """True when `pid` is alive, leads its own session (we start every part so) and its
    command line holds `marker`: a PID reused by something else fails these checks."""
    if not is_alive(pid):
        return False
    try:
        if os.getsid(pid) != pid:
            return False
    except ProcessLookupError:
        return False
    return marker is None or marker in cmdline(pid)


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def group_members(pgid: int) -> set[int]:
    """Live (non-zombie) processes of a process group."""
    members: set[int] = set()
    for pid in _all_pids():
        fields = _stat_fields(pid)
        if fields is not None and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
            members.add(pid)
    return members


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            cols = line.split()
            # cols[1] is "ADDR:PORT" in hex, cols[3] the state (0A = LISTEN), cols[9] the inode.
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def port_holders(port: int) -> set[int]:
    """PIDs holding a listening TCP socket on `port` (those whose fds this user may read)."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    holders: set[int] = set()
    if not wanted:
        return holders
    for pid in _all_pids():
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in wanted:
                    holders.add(pid)
                    break
            except OSError:
                continue
    return holders


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on host:port now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as servers use it: sockets in TIME_WAIT (left by our own readiness probes
        # right after a `down`) do not count as busy, a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def describe(pid: int) -> str:
    """'pid 123: java -jar ...' for error messages."""
    line = cmdline(pid)
    if len(line) > 100:
        line = line[:97] + "..."
    return f"pid {pid}: {line}" if line else f"pid {pid}"


def open_log(log_path: Path, cmd: Sequence[str]) -> BinaryIO:
    """Open a part's log for appending, after a line that marks this start (or restart) and
    the command: a restart keeps what the previous run wrote, a crash's last words included."""
    log = log_path.open("ab")
    verb = "restart" if log.tell() else "start"
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    log.write(f"--- {verb} {stamp} ---\n$ {' '.join(cmd)}\n".encode())
    log.flush()
    return log


def spawn(
    cmd: Sequence[str], log_path: Path, env: Mapping[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    """Start `cmd` in a new session with stdout and stderr appended to `log_path`."""
    with open_log(log_path, cmd) as log:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            # A session of its own: the whole tree (gunicorn workers too) can be stopped with
            # one killpg, and a Ctrl-C in the terminal that ran `up` does not reach it.
            start_new_session=True,
        )
    with _CHILDREN_LOCK:
        _CHILDREN[proc.pid] = proc
    return proc


def exit_code(pid: int) -> int | None:
    """Exit status of a child we started that has ended, else None."""
    with _CHILDREN_LOCK:
        proc = _CHILDREN.get(pid)
    return None if proc is None else proc.poll()


def _reap(pid: int) -> None:
    with _CHILDREN_LOCK:
        proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        with _CHILDREN_LOCK:
            _CHILDREN.pop(pid, None)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_groups(pgids: Iterable[int], deadline: float) -> set[int]:
    """Wait until the groups are empty or the deadline passes; return the groups left."""
    pending = set(pgids)
    while True:
        for pgid in list(pending):
            _reap(pgid)
            if not group_members(pgid):
                _reap(pgid)
                pending.discard(pgid)
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(POLL_INTERVAL)  # polling /proc: there is no portable wait for a non-child


def stop_groups(pgids: Iterable[int], timeout: float = 10.0) -> dict[int, str]:
    """SIGTERM each process group, SIGKILL what is left after `timeout` seconds.

    Returns for each group how it ended: "stopped" or "killed" ("survived" if even SIGKILL
    did not empty it within 5 s, which only an unkillable D-state process does).
    """
    groups = list(pgids)
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
        # A stopped process (Ctrl-Z, a debugger) only acts on SIGTERM once continued.
        _signal_group(pgid, signal.SIGCONT)
    left = _wait_groups(groups, time.monotonic() + timeout)
    for pgid in left:
        _signal_group(pgid, signal.SIGKILL)
    survivors = _wait_groups(left, time.monotonic() + 5.0)
    return {
        pgid: "survived" if pgid in survivors else "killed" if pgid in left else "stopped"
        for pgid in groups
    }


def log_tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def http_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """GET http://127.0.0.1:port/path; (status, body) or None when nothing answers.

    http.client rather than urllib: urllib would honour an http_proxy setting, and the proxy
    cannot reach this machine's loopback.
    """
    return _get(http.client.HTTPConnection("127.0.0.1", port, timeout=timeout), path)


def https_get(port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """GET https://127.0.0.1:port/path without verifying the certificate; None when nothing
    answers.

    A readiness probe of a server this stack started on loopback with its own certificate;
    clients that send data verify it against the local CA.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    return _get(conn, path)


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes] | None:
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def poll(
    check: Callable[[], bool],
    deadline: float,
    abort: threading.Event | None = None,
    alive: Callable[[], bool] | None = None,
) -> bool:
    """Call `check` until it is true (True), the deadline passes, `alive` turns false or
    `abort` is set (False)."""
    while True:
        if check():
            return True
        if time.monotonic() >= deadline or (alive is not None and not alive()):
            return False
        if abort is not None:
            if abort.wait(POLL_INTERVAL):
                return False
        else:
            time.sleep(POLL_INTERVAL)
