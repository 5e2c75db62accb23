"""Every import is a declared dependency, checked module by module.

deptry (``make deps``) maps imports to distributions by their top-level name only, so any one
google-* distribution satisfies every ``google.*`` import. These tests map each imported module to
the distribution whose files provide it (``google.api_core`` -> google-api-core), and check it
against pyproject.toml: the deployed code and its tooling package (src, functions) may import the
``[project]`` dependencies and extras; tests, bench and tools/ may import the dev group too.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
RUNTIME_TREES = ("src", "functions")
DEV_TREES = ("tests", "bench", "tools")
#: Modules of this repository: the two packages, the test package, tools/ (the Terraform schema
#: checker), the functions' ``main`` and the benchmark scripts that import one another.
FIRST_PARTY = frozenset(
    {
        "dataset_export",
        "dataset_export_tools",
        "tests",
        "tools",
        "main",
        *(p.stem for p in (REPO / "bench").glob("*.py")),
    }
)
MODULE_SUFFIXES = (".py", ".so", ".pyd")


def imports(trees: Iterable[str]) -> dict[str, list[str]]:
    """Every absolute import under ``trees`` (lazy ones inside functions too) -> where it is."""
    found: dict[str, list[str]] = defaultdict(list)
    for tree in trees:
        for path in sorted((REPO / tree).rglob("*.py")):
            if "node_modules" in path.parts:
                continue
            where = path.relative_to(REPO).as_posix()
            for node in ast.walk(ast.parse(path.read_text("utf-8"), filename=where)):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    # ``from google.cloud import storage`` imports google.cloud.storage
                    names = [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                for name in names:
                    found[name].append(f"{where}:{node.lineno}")
    return dict(found)


@functools.cache
def module_owners() -> dict[str, frozenset[str]]:
    """Each module or package the installed distributions' files provide -> those distributions."""
    owners: dict[str, set[str]] = defaultdict(set)
    for dist in md.distributions():
        name = canonicalize_name(dist.metadata["Name"])
        for file in dist.files or ():
            parts = file.parts
            if not parts or not file.name.endswith(MODULE_SUFFIXES) or ".." in parts:
                continue
            if parts[0].endswith((".dist-info", ".data")):
                continue
            stem = file.name.split(".", 1)[0]  # _speedups.cpython-311-x86_64-linux-gnu.so
            dotted = [*parts[:-1], stem] if stem != "__init__" else list(parts[:-1])
            if dotted:
                owners[".".join(dotted)].add(name)
    return {module: frozenset(names) for module, names in owners.items()}


def owners_of(module: str) -> frozenset[str]:
    """The distributions providing ``module``: its own files or its nearest parent package's."""
    table = module_owners()
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = table.get(".".join(parts[:end]))
        if found:
            return found
    return frozenset()


def declared(*, dev: bool) -> set[str]:
    """pyproject.toml's dependencies and every extra; with ``dev``, the dev group as well."""
    document = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    project = document["project"]
    texts = [*project["dependencies"]]
    for extra in project.get("optional-dependencies", {}).values():
        texts.extend(extra)
    groups = document.get("dependency-groups", {})

    def group(name: str) -> list[str]:
        out = []
        for item in groups[name]:
            out.extend(group(item["include-group"]) if isinstance(item, dict) else [item])
        return out

    if dev:
        texts.extend(group("dev"))
    return {canonicalize_name(Requirement(text).name) for text in texts}


def undeclared(trees: Iterable[str], allowed: set[str]) -> list[str]:
    """The third-party imports under ``trees`` that no distribution in ``allowed`` provides."""
    problems = []
    for module, where in sorted(imports(trees).items()):
        top = module.split(".", 1)[0]
        if top in sys.stdlib_module_names or top in FIRST_PARTY:
            continue
        owners = owners_of(module)
        if not owners & allowed:
            problems.append(
                f"{module} (from {sorted(owners) or 'nothing installed'}) at {where[0]}"
            )
    return problems


def test_the_deployed_code_and_tooling_import_only_declared_dependencies() -> None:
    """Each module src and functions import comes from a [project] dependency or extra."""
    assert undeclared(RUNTIME_TREES, declared(dev=False)) == []


def test_tests_and_bench_import_only_declared_dependencies() -> None:
    """Each module tests, bench and tools import comes from a declared or a dev dependency."""
    assert undeclared(DEV_TREES, declared(dev=True)) == []


def test_every_runtime_dependency_is_imported() -> None:
    """No [project] dependency is declared that src and functions never import."""
    used = set().union(*(owners_of(module) for module in imports(RUNTIME_TREES)))
    assert sorted(declared(dev=False) - used) == []


def test_the_lookup_tells_namespace_siblings_apart() -> None:
    """google.api_core and google.auth are their own distributions, not any google-* one."""
    assert owners_of("google.api_core.exceptions") == {"google-api-core"}
    assert owners_of("google.auth.transport.requests") == {"google-auth"}
    assert owners_of("google.cloud.storage") == {"google-cloud-storage"}
    assert owners_of("yaml") == {"pyyaml"}
