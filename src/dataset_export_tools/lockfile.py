"""The files generated from ``uv.lock``, the project's one lock.

``uv lock`` writes ``uv.lock`` from ``pyproject.toml``: every distribution, pinned, with the hashes
of its files. Everything installs from it: ``make setup`` and CI build ``.venv`` with
``uv sync --locked``, and each Cloud Function installs its ``requirements.txt``, which is the lock
exported (``uv export``) for what that function runs: the ``[project]`` dependencies, plus the
``engine`` extra for process (``FunctionSpec.extras``). ``requirements-bootstrap.txt`` is the lock's
``uv`` group, which ``make setup`` installs with pip to get uv itself.

``python -m dataset_export_tools.lockfile`` (``make lock``) rewrites the generated files;
``--check`` lists those that differ from what the lock gives and fails. ``make bundle`` refuses to
build from a stale ``requirements.txt``.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from .deploy_manifest import FUNCTIONS

LOCK = "uv.lock"
BOOTSTRAP = "requirements-bootstrap.txt"
#: The first line of every generated file.
BANNER = (
    "# Generated from uv.lock by `make lock` (python -m dataset_export_tools.lockfile):"
    " do not edit."
)


class LockError(RuntimeError):
    """uv is missing, the lock cannot be exported, or a generated file is stale."""


def generated_files() -> Mapping[str, tuple[str, ...]]:
    """Each generated file (relative to the repository) and the ``uv export`` options it takes."""
    files: dict[str, tuple[str, ...]] = {BOOTSTRAP: ("--only-group", "uv")}
    for name, spec in sorted(FUNCTIONS.items()):
        extras = tuple(arg for extra in spec.extras for arg in ("--extra", extra))
        files[f"functions/{name}/requirements.txt"] = ("--no-default-groups", *extras)
    return files


def uv_command() -> list[str]:
    """How to run uv: the one installed beside this interpreter (the dev group), else on PATH."""
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    found = shutil.which("uv")
    if found is None:
        raise LockError("uv is not installed: run `make setup`")
    return [found]


def export(root: Path, options: Sequence[str]) -> str:
    """The text ``uv export`` gives for ``options`` from ``root``'s lock, with the banner."""
    if not (root / LOCK).is_file():
        raise LockError(f"no {LOCK} in {root}: run `make lock`")
    command = [
        *uv_command(),
        "export",
        "--frozen",  # read uv.lock as it is; never resolve again
        "--format",
        "requirements-txt",
        "--no-emit-project",  # the bundle carries the package's source itself
        *options,
    ]
    result = subprocess.run(
        command, cwd=root, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise LockError(f"uv export {' '.join(options)} failed: {result.stderr.strip()}")
    return f"{BANNER}\n{result.stdout}"


def stale(root: Path) -> list[str]:
    """The generated files whose content is not what the lock gives now."""
    out = []
    for relative, options in generated_files().items():
        path = root / relative
        if not path.is_file() or path.read_text("utf-8") != export(root, options):
            out.append(relative)
    return out


def write(root: Path) -> list[str]:
    """Rewrite the stale generated files; return their names."""
    changed = []
    for relative, options in generated_files().items():
        path = root / relative
        text = export(root, options)
        if not path.is_file() or path.read_text("utf-8") != text:
            path.write_text(text, "utf-8")
            changed.append(relative)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    """Write (default) or ``--check`` the generated files."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_export_tools.lockfile", description=__doc__
    )
    parser.add_argument("--check", action="store_true", help="fail if a file is stale")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2])
    args = parser.parse_args(argv)
    try:
        if args.check:
            behind = stale(args.root)
            for relative in behind:
                print(
                    f"lockfile: {relative} differs from uv.lock: run `make lock`", file=sys.stderr
                )
            return 1 if behind else 0
        for relative in write(args.root):
            print(f"wrote {relative}")
    except (LockError, OSError, subprocess.SubprocessError) as exc:
        print(f"lockfile: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
