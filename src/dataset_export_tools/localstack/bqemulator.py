"""The BigQuery emulator: PyPI ``bqemulator`` (REST and gRPC Storage Read, backed by DuckDB) in
a virtualenv of its own, how it is built and how it is started.

It needs ``duckdb==1.5.5`` where the project uses 2.x, so it never shares ``.venv``: the
virtualenv ``.local/bqemulator-venv`` is built on demand (``make bqemulator-venv``, or the first
``up`` that starts it) from ``tools/bqemulator/requirements.txt``, every distribution pinned with
its hashes. At start-up the emulator runs ``INSTALL spatial``, which downloads the extension
unless it is already installed under ``$HOME/.duckdb``: the build installs spatial and avro from
their PyPI wheels (``duckdb-extension-spatial``, ``duckdb-extension-avro``) into a HOME inside
the virtualenv, and the emulator always runs with that HOME. A stamp named after the
requirements' digest marks a finished build, so a changed requirements file rebuilds it.

``python -m dataset_export_tools.localstack bqemulator-venv`` (``make bqemulator-venv``) builds
it ahead, or says it is up to date.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from dataset_export_tools.localstack.state import Echo, StackError, elapsed, stderr_echo

REQUIREMENTS = Path("tools/bqemulator/requirements.txt")
#: DuckDB extensions bqemulator loads at start-up (spatial is required, avro best-effort).
EXTENSIONS = ("spatial", "avro")
_INSTALL_EXTENSIONS = (
    "import duckdb, sys\n"
    "from duckdb_extensions import import_extension\n"
    "con = duckdb.connect()\n"
    "for name in sys.argv[1:]:\n"
    "    import_extension(name, con=con)\n"
)
BUILD_TIMEOUT = 900.0


def home(venv: Path) -> Path:
    """The HOME the emulator runs with: its DuckDB extensions are installed under it."""
    return venv / "home"


def python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _stamp(venv: Path, requirements: Path) -> Path:
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    return venv / f".installed-{digest}"


def is_built(venv: Path, repo_root: Path) -> bool:
    """True when ``venv`` holds a finished build of the current requirements."""
    requirements = repo_root / REQUIREMENTS
    return requirements.is_file() and _stamp(venv, requirements).is_file()


def _uv() -> list[str]:
    from dataset_export_tools.lockfile import LockError, uv_command

    try:
        return uv_command()
    except LockError as exc:
        raise StackError(f"cannot build the BigQuery emulator's virtualenv: {exc}") from exc


@contextlib.contextmanager
def _build_lock(venv: Path) -> Iterator[None]:
    """One build at a time (a `make up` and a test session may both want it)."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(cmd: list[str], log: Path, env: Mapping[str, str], what: str) -> None:
    with log.open("ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            result = subprocess.run(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                timeout=BUILD_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"{what} failed: {exc}; see {log}") from exc
    if result.returncode != 0:
        tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-20:])
        raise StackError(f"{what} failed (exit {result.returncode}); last lines of {log}:\n{tail}")


def ensure_venv(venv: Path, repo_root: Path, say: Echo = stderr_echo) -> Path:
    """Build ``venv`` from the pinned requirements unless it already holds them; its path."""
    requirements = repo_root / REQUIREMENTS
    if not requirements.is_file():
        raise StackError(f"no {requirements}: the BigQuery emulator's requirements are missing")
    with _build_lock(venv):
        stamp = _stamp(venv, requirements)
        if stamp.is_file():
            return venv
        t0 = time.monotonic()
        say(f"building the BigQuery emulator's virtualenv in {venv} (once)")
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        log = venv.parent / f"{venv.name}-build.log"
        log.unlink(missing_ok=True)
        uv = _uv()
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
        _run([*uv, "venv", "--quiet", "--python", sys.executable, str(venv)], log, env, "uv venv")
        install = [*uv, "pip", "install", "--quiet", "--python", str(python(venv))]
        _run([*install, "--require-hashes", "-r", str(requirements)], log, env, "uv pip install")
        home(venv).mkdir(parents=True, exist_ok=True)
        _run(
            [str(python(venv)), "-c", _INSTALL_EXTENSIONS, *EXTENSIONS],
            log,
            {**env, "HOME": str(home(venv))},
            "installing the emulator's DuckDB extensions",
        )
        stamp.touch()
        say(f"BigQuery emulator virtualenv ready ({elapsed(t0)})")
    return venv


def command(
    venv: Path, *, rest_port: int, grpc_port: int, project: str
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start the emulator on 127.0.0.1: in memory
    (``--ephemeral``), warnings and errors only in its log (its info level logs every request)."""
    cmd = [
        str(venv / "bin" / "bqemulator"),
        "start",
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        str(rest_port),
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        str(grpc_port),
        "--project",
        project,
        "--ephemeral",
        "--log-level",
        "warning",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BQEMU_")}
    env["HOME"] = str(home(venv))
    env.update(SETTINGS)
    return cmd, env


#: The emulator's own settings. Its gRPC server caps a message at this plus 1 MiB, and it sends
#: a Storage Read stream in record batches of 65,536 rows whatever their size: with the default
#: 10 MiB, a stream of the full table's columns failed past ~60k rows ("Sent message larger
#: than max"). Real BigQuery sizes its batches itself.
SETTINGS = {"BQEMU_WRITE_API_MAX_REQUEST_BYTES": str(255 * 1024 * 1024)}
