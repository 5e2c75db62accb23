"""Unit tests of the local stack's env files: sourcing one exports its variables."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from dataset_export_tools.localstack.envfile import read_env_file, write_env_file

VALUES = {"EXPORT_API_URL": "http://127.0.0.1:18081", "ODD": 'it\'s $HOME; `x` "y"'}


def test_sourcing_the_file_exports_every_variable(tmp_path: Path) -> None:
    """`source stack.env` makes the variables visible to the programs the shell runs next."""
    path = tmp_path / "stack.env"
    write_env_file(path, VALUES, header="a header")
    for name, value in VALUES.items():
        shown = subprocess.run(
            ["sh", "-c", f'. "$1" && exec printenv {name}', "sh", str(path)],
            capture_output=True,
            text=True,
            check=False,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == value + "\n"


def test_file_reads_back_and_is_private(tmp_path: Path) -> None:
    """What is written reads back unchanged, from a file only its owner may read."""
    path = tmp_path / "secrets.env"
    write_env_file(path, VALUES)
    assert read_env_file(path) == VALUES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
