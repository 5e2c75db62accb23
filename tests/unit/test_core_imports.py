"""The pure core imports nothing but the standard library, pydantic and itself."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "src" / "dataset_export" / "core"
ALLOWED_THIRD_PARTY = frozenset({"pydantic"})


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module) for every import in ``path``, nested ones included."""
    package = ".".join(("dataset_export", *path.relative_to(CORE.parent).parent.parts))
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.lineno, node.module or ""
                continue
            # A relative import: resolve it against the package of the module that holds it.
            parts = package.split(".")
            base = parts[: len(parts) - (node.level - 1)]
            yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])


def _verdict(module: str) -> str | None:
    """Why ``module`` may not be imported by the core, or None when it may."""
    top = module.split(".")[0]
    if top == "dataset_export":
        if module == "dataset_export.core" or module.startswith("dataset_export.core."):
            return None
        return "a module outside the core"
    if top in sys.stdlib_module_names or top in ALLOWED_THIRD_PARTY:
        return None
    return "neither the standard library nor pydantic"


def test_the_core_has_modules_to_check() -> None:
    """The walk below really finds the core's modules (so it cannot pass vacuously)."""
    names = {p.name for p in CORE.glob("*.py")}
    assert {"catalog.py", "query.py", "request.py", "errors.py"} <= names


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_only_the_standard_library_and_pydantic(path: Path) -> None:
    """Every import in a core module, nested or not, is stdlib, pydantic or the core itself."""
    offending = [
        f"{path.name}:{line} imports {module} ({reason})"
        for line, module in _imports(path)
        if (reason := _verdict(module)) is not None
    ]
    assert offending == []


def test_the_check_rejects_what_it_should() -> None:
    """The verdict refuses third-party and out-of-core imports and accepts the allowed ones."""
    assert _verdict("pyarrow.compute") is not None
    assert _verdict("cryptography.hazmat.primitives.ciphers.aead") is not None
    assert _verdict("dataset_export.engine.duckdb_engine") is not None
    assert _verdict("dataset_export.adapters") is not None
    assert _verdict("dataset_export") is not None
    assert _verdict("json") is None
    assert _verdict("__future__") is None
    assert _verdict("pydantic") is None
    assert _verdict("dataset_export.core.catalog") is None
