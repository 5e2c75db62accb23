"""uv.lock is what everything installs: the generated requirements files and .venv agree with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_export_tools import lockfile

REPO = Path(__file__).resolve().parents[2]
GENERATED = sorted(lockfile.generated_files().items())


@pytest.mark.parametrize(("relative", "options"), GENERATED, ids=[g[0] for g in GENERATED])
def test_generated_file_is_what_the_lock_gives(relative: str, options: tuple[str, ...]) -> None:
    """Each function's requirements.txt and the bootstrap file are uv.lock exported as they say."""
    wanted = lockfile.export(REPO, options)
    assert (REPO / relative).read_text("utf-8") == wanted, f"{relative} is stale: run `make lock`"


def test_the_check_names_a_stale_file(tmp_path: Path) -> None:
    """`dataset_export_tools.lockfile --check` fails on a hand-edited file; writing fixes it."""
    for file in ("pyproject.toml", lockfile.LOCK, *lockfile.generated_files()):
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_bytes((REPO / file).read_bytes())
    edited = tmp_path / "functions" / "submit" / "requirements.txt"
    edited.write_text(edited.read_text("utf-8") + "requests\n", "utf-8")
    assert lockfile.stale(tmp_path) == ["functions/submit/requirements.txt"]
    assert lockfile.main(["--check", "--root", str(tmp_path)]) == 1
    assert lockfile.main(["--root", str(tmp_path)]) == 0
    assert lockfile.stale(tmp_path) == []
    assert edited.read_bytes() == (REPO / "functions" / "submit" / "requirements.txt").read_bytes()


def test_the_venv_holds_the_locked_versions() -> None:
    """The environment running the tests has every distribution of uv.lock at its version."""
    result = subprocess.run(
        [*lockfile.uv_command(), "sync", "--check", "--locked", "--inexact", "--all-extras"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "UV_OFFLINE": "1", "UV_PROJECT_ENVIRONMENT": sys.prefix},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
