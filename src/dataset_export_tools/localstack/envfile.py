"""Shell-sourceable `export KEY=value` files (stack.env, secrets.env, ports.env)."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=value lines as `write_env_file` writes them; {} when the file is missing.

    Blank lines, comments and an optional leading `export` are accepted so a hand-edited
    file still reads.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, rest = line.partition("=")
        if not sep or not key.isidentifier():
            continue
        parts = shlex.split(rest, comments=True)
        values[key] = parts[0] if parts else ""
    return values


def write_env_file(path: Path, values: Mapping[str, str], header: str = "") -> None:
    """Write `export KEY=value` lines (values shell-quoted where needed) with mode 0600, so
    that `source`-ing the file in a shell exports the variables to what it runs next.

    The file is created 0600 before any byte is written and then renamed into place, so the
    secrets it holds are never readable by others, not even for a moment.
    """
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"export {key}={shlex.quote(value)}" for key, value in values.items()]
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o600)  # O_CREAT's mode only applies to a new file
    tmp.replace(path)
