"""Reproducible, content-addressed deploy bundles of the three Cloud Functions.

``python -m dataset_export_tools.bundle`` (``make bundle``) writes
``build/bundles/<name>-<sha256>.zip`` for each function: its ``main.py``, its ``requirements.txt``
(``uv.lock`` exported for the function: every distribution pinned with its hashes; it refuses to
build from one that differs from the lock, see ``dataset_export_tools.lockfile``) and the whole
``dataset_export`` package, plus ``build/bundles/manifest.json``, which Terraform reads to upload
each zip under its content-addressed name. ``dataset_export`` holds only what the functions run
(the local stack, generator, demo, CLI, lock tooling and this bundler live in
``dataset_export_tools``, the fakes in ``tests/``), so nothing is picked out by name; only the
bytecode caches the interpreter writes are left behind. The same sources give the same
bytes on every machine (sorted entries, fixed timestamps and modes, stored rather than deflated
so no zlib version matters), so a redeploy happens exactly when the code changed.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import lockfile
from .deploy_manifest import FUNCTIONS

PACKAGE = "dataset_export"
#: The earliest timestamp a zip entry can carry: every entry gets it.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
#: What the interpreter writes beside the sources (never part of a bundle).
BYTECODE_DIR = "__pycache__"
BYTECODE_SUFFIXES = frozenset({".pyc", ".pyo"})
MANIFEST = "manifest.json"


class BundleError(RuntimeError):
    """A function's sources are missing or the output cannot be written."""


@dataclass(frozen=True)
class Bundle:
    """One built zip."""

    name: str
    path: Path
    sha256: str


def repo_root() -> Path:
    """The repository holding these sources (``src/dataset_export_tools`` -> root)."""
    return Path(__file__).resolve().parents[2]


def _package_files(package_dir: Path) -> Iterator[tuple[str, Path]]:
    for path in sorted(package_dir.rglob("*")):
        relative = path.relative_to(package_dir)
        if not path.is_file() or BYTECODE_DIR in relative.parts[:-1]:
            continue
        if path.suffix in BYTECODE_SUFFIXES:
            continue
        yield f"{PACKAGE}/{relative.as_posix()}", path


def bundle_entries(root: Path, name: str) -> list[tuple[str, Path]]:
    """The (name in the zip, source file) pairs of one function's bundle, sorted."""
    function_dir = root / "functions" / name
    entries = [("main.py", function_dir / "main.py")]
    entries.append(("requirements.txt", function_dir / "requirements.txt"))
    missing = [str(path) for _, path in entries if not path.is_file()]
    if missing:
        raise BundleError(f"function '{name}' is missing {', '.join(missing)}")
    package_dir = root / "src" / PACKAGE
    if not (package_dir / "__init__.py").is_file():
        raise BundleError(f"no package at {package_dir}")
    entries.extend(_package_files(package_dir))
    return sorted(entries)


def zip_bytes(entries: Sequence[tuple[str, Path]]) -> bytes:
    """A zip of ``entries`` that depends only on their names and contents."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for arcname, path in entries:
            info = zipfile.ZipInfo(arcname, date_time=ZIP_EPOCH)
            info.create_system = 3  # Unix, so the mode below is honoured everywhere
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_STORED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def build_bundle(root: Path, name: str, out_dir: Path) -> Bundle:
    """Write ``<out_dir>/<name>-<sha256>.zip`` and remove that function's older bundles."""
    data = zip_bytes(bundle_entries(root, name))
    digest = hashlib.sha256(data).hexdigest()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{name}-{digest}.zip"
    if not target.exists() or target.read_bytes() != data:
        partial = target.with_suffix(".zip.part")
        partial.write_bytes(data)
        partial.replace(target)
    for stale in out_dir.glob(f"{name}-*.zip"):
        if stale != target:
            stale.unlink()
    return Bundle(name, target, digest)


def build_all(root: Path, out_dir: Path, names: Sequence[str] = ()) -> list[Bundle]:
    """Build the named functions' bundles (all of them by default) and write the manifest."""
    chosen = list(names) or sorted(FUNCTIONS)
    unknown = sorted(set(chosen) - set(FUNCTIONS))
    if unknown:
        raise BundleError(f"unknown function(s): {', '.join(unknown)}")
    bundles = [build_bundle(root, name, out_dir) for name in chosen]
    manifest_path = out_dir / MANIFEST
    manifest: dict[str, dict[str, str]] = {}
    if manifest_path.is_file():
        previous = json.loads(manifest_path.read_text("utf-8")).get("bundles", {})
        manifest = {k: v for k, v in previous.items() if k in FUNCTIONS and k not in chosen}
    for bundle in bundles:
        manifest[bundle.name] = {"file": bundle.path.name, "sha256": bundle.sha256}
    document = {"bundles": dict(sorted(manifest.items()))}
    manifest_path.write_text(json.dumps(document, indent=2) + "\n", "utf-8")
    return bundles


def check_requirements(root: Path, names: Sequence[str] = ()) -> None:
    """Fail unless the named functions' ``requirements.txt`` are what ``uv.lock`` gives."""
    wanted = {f"functions/{name}/requirements.txt" for name in (names or FUNCTIONS)}
    behind = [path for path in lockfile.stale(root) if path in wanted]
    if behind:
        raise BundleError(f"{', '.join(behind)} differ from {lockfile.LOCK}: run `make lock`")


def main(argv: Sequence[str] | None = None) -> int:
    """Check the requirements against the lock, build the bundles; print one line per zip."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_export_tools.bundle", description=__doc__
    )
    parser.add_argument("names", nargs="*", help="functions to bundle (default: all)")
    parser.add_argument("--root", type=Path, default=None, help="repository root")
    parser.add_argument("--out", type=Path, default=None, help="default: <root>/build/bundles")
    args = parser.parse_args(argv)
    root: Path = args.root or repo_root()
    out: Path = args.out or root / "build" / "bundles"
    try:
        check_requirements(root, args.names)
        bundles = build_all(root, out, args.names)
    except (BundleError, lockfile.LockError, OSError) as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 1
    for bundle in bundles:
        size = bundle.path.stat().st_size
        print(f"{bundle.path} ({size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
