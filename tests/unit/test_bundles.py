"""The functions' deploy bundles: reproducible, complete, importable, installed from the lock."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from dataset_export_tools import bundle, lockfile
from dataset_export_tools.deploy_manifest import FUNCTIONS, FunctionSpec

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "src" / "dataset_export"
TOOLS = REPO / "src" / "dataset_export_tools"
#: Code that must never ship in a function bundle: the tools package (local stack, dataset
#: generator, demo, operator CLI, bundler, deploy manifest) and the fakes of the tests.
TOOLING_SOURCES = (*sorted(TOOLS.rglob("*.py")), REPO / "tests" / "fakes.py")
SPECS = sorted(FUNCTIONS.values(), key=lambda s: s.name)
IDS = [s.name for s in SPECS]
#: Imported only when present: httpx loads its command line (the httpx[cli] extra) if these
#: happen to be installed, as in the dev venv; in the cloud they are absent and httpx skips it.
OPTIONAL_IMPORTS = frozenset({"pygments", "rich"})

# Run in a fresh interpreter with the extracted bundle first on sys.path: import main (without
# calling the function), the modules it imports lazily, and report which files got loaded.
PROBE = r"""
import sys

at_start = set(sys.modules)  # loaded by the interpreter and site .pth files, not by the bundle
import importlib, json, sysconfig
from pathlib import Path

bundle_dir, entry_point, lazy = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.path.insert(0, bundle_dir)
import main
import dataset_export
from functions_framework import _function_registry

for name in lazy:
    importlib.import_module(name)
site = [Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")]
files = set()
for name, module in list(sys.modules.items()):
    path = getattr(module, "__file__", None) if name not in at_start else None
    if not path:
        continue
    resolved = Path(path).resolve()
    for root in site:
        if resolved.is_relative_to(root):
            files.add(resolved.relative_to(root).as_posix())
print(json.dumps({
    "entry_point_callable": callable(getattr(main, entry_point, None)),
    "signature": _function_registry.REGISTRY_MAP.get(entry_point),
    "package_file": dataset_export.__file__,
    "modules": sorted(sys.modules),
    "site_files": sorted(files),
}))
"""


def _runtime_package_files() -> list[str]:
    """The deployed package's files as a bundle names them (sources only, no bytecode)."""
    return [
        f"dataset_export/{path.relative_to(RUNTIME).as_posix()}"
        for path in sorted(RUNTIME.rglob("*"))
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix not in {".pyc", ".pyo"}
    ]


def _definitions(source: bytes) -> set[str]:
    """The public names a module defines at its top level: classes, functions, constants."""
    names = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


def _imported_roots(source: bytes) -> set[str]:
    """The top-level packages a module imports by absolute name, lazily imported ones too."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.partition(".")[0])
    return roots


@functools.cache
def built(out: Path) -> dict[str, bundle.Bundle]:
    """Build every bundle into ``out`` once."""
    return {b.name: b for b in bundle.build_all(REPO, out)}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bundle.Bundle]:
    """All three bundles, built into a temporary directory."""
    return built(tmp_path_factory.mktemp("bundles"))


def test_two_builds_give_identical_content_addressed_zips(
    bundles: dict[str, bundle.Bundle], tmp_path: Path
) -> None:
    """Building again elsewhere yields the same bytes, and each name carries its sha256."""
    again = {b.name: b for b in bundle.build_all(REPO, tmp_path)}
    assert set(again) == set(bundles) == set(FUNCTIONS)
    for name, first in bundles.items():
        data = first.path.read_bytes()
        assert again[name].path.read_bytes() == data
        assert hashlib.sha256(data).hexdigest() == first.sha256
        assert first.path.name == f"{name}-{first.sha256}.zip"
    manifest = json.loads((tmp_path / bundle.MANIFEST).read_text("utf-8"))
    assert manifest["bundles"] == {
        n: {"file": b.path.name, "sha256": b.sha256} for n, b in again.items()
    }


def test_a_code_change_changes_the_object_name(tmp_path: Path) -> None:
    """Editing one packaged file gives every bundle a new name; a rebuild drops the old zip."""
    root = tmp_path / "repo"
    for name in FUNCTIONS:
        (root / "functions" / name).mkdir(parents=True)
        for file in ("main.py", "requirements.txt"):
            (root / "functions" / name / file).write_bytes(
                (REPO / "functions" / name / file).read_bytes()
            )
    package = root / "src" / "dataset_export"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""x"""\n', "utf-8")
    out = tmp_path / "out"
    before = bundle.build_all(root, out)
    (package / "__init__.py").write_text('"""y"""\n', "utf-8")
    after = bundle.build_all(root, out)
    assert all(a.sha256 != b.sha256 for a, b in zip(before, after, strict=True))
    assert sorted(p.name for p in out.glob("*.zip")) == sorted(a.path.name for a in after)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_bundle_holds_main_requirements_and_the_package_only(
    spec: FunctionSpec, bundles: dict[str, bundle.Bundle]
) -> None:
    """main.py and requirements.txt at the root, the runtime package, nothing generated."""
    with zipfile.ZipFile(bundles[spec.name].path) as archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        assert names == sorted(names)
        assert archive.read("main.py") == (REPO / "functions" / spec.name / "main.py").read_bytes()
        requirements = REPO / "functions" / spec.name / "requirements.txt"
        assert archive.read("requirements.txt") == requirements.read_bytes()
    assert {"dataset_export/__init__.py", "dataset_export/openapi.json"} <= set(names)
    assert set(names) == {"main.py", "requirements.txt"} | set(_runtime_package_files())
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    assert {i.date_time for i in infos} == {bundle.ZIP_EPOCH}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_no_bundle_holds_tooling_or_fake_code(
    spec: FunctionSpec, bundles: dict[str, bundle.Bundle]
) -> None:
    """No local-stack, generator, demo, CLI or fake module ships, nor an import or copy of one."""
    tooling_definitions = set().union(*(_definitions(p.read_bytes()) for p in TOOLING_SOURCES))
    tooling_definitions.discard("main")
    # The check has teeth: the stack, the generator, the demo, the CLI and the fakes are in it.
    wanted = {"up", "generate_dataset", "SEED_DATASET", "CliError", "build_all", "InMemoryStore"}
    assert wanted <= tooling_definitions
    tooling_paths = {p.relative_to(TOOLS).as_posix() for p in TOOLS.rglob("*.py")}
    with zipfile.ZipFile(bundles[spec.name].path) as archive:
        modules = {n: archive.read(n) for n in archive.namelist() if n.endswith(".py")}
    packaged = {n.removeprefix("dataset_export/") for n in modules if n != "main.py"}
    assert not [n for n in modules if n.startswith("dataset_export_tools/")]
    stray = sorted((packaged & tooling_paths) - {"__init__.py"})
    assert not stray, f"tooling modules in the bundle: {stray}"
    assert not packaged & {"testing.py", "fakes.py"}
    for name, source in modules.items():
        imported = _imported_roots(source) & {"dataset_export_tools", "tests", "fakes"}
        assert not imported, f"{name} imports {sorted(imported)}"
        copied = _definitions(source) & tooling_definitions
        assert not copied, f"{name} defines tooling's {sorted(copied)}"


def _probe(spec: FunctionSpec, archive: Path, into: Path) -> dict[str, object]:
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(into)
    result = subprocess.run(
        [
            sys.executable,
            "-I",  # no PYTHONPATH, no user site, not the current directory
            "-c",
            PROBE,
            str(into),
            spec.entry_point,
            json.dumps(list(spec.runtime_modules)),
        ],
        cwd=into,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "GOOGLE_CLOUD_PROJECT": "bundle-test"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@functools.cache
def _file_owners() -> dict[str, str]:
    owners = {}
    for dist in md.distributions():
        for file in dist.files or ():
            owners[file.as_posix()] = canonicalize_name(dist.metadata["Name"])
    return owners


def _requirements(spec: FunctionSpec) -> list[tuple[Requirement, list[str]]]:
    """Each requirement of the function's requirements.txt with its ``--hash`` values."""
    text = (REPO / "functions" / spec.name / "requirements.txt").read_text("utf-8")
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement, *options = line.split(" --")
        hashes = [o.removeprefix("hash=") for o in options if o.startswith("hash=")]
        assert len(hashes) == len(options), f"{spec.name}: unexpected options in {line!r}"
        out.append((Requirement(requirement.strip()), hashes))
    return out


def _installed_by(spec: FunctionSpec) -> set[str]:
    """The distributions pip installs here from the function's requirements.txt."""
    return {
        canonicalize_name(r.name)
        for r, _ in _requirements(spec)
        if r.marker is None or r.marker.evaluate()
    }


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_extracted_bundle_imports_and_exposes_its_entry_point(
    spec: FunctionSpec, bundles: dict[str, bundle.Bundle], tmp_path: Path
) -> None:
    """Imported from the extracted zip in a fresh interpreter, main exposes the entry point."""
    report = _probe(spec, bundles[spec.name].path, tmp_path)
    assert report["entry_point_callable"] is True
    assert report["signature"] == ("http" if spec.trigger == "http" else "cloudevent")
    assert str(report["package_file"]).startswith(str(tmp_path)), "imported the repo's copy"
    modules = report["modules"]
    assert isinstance(modules, list)
    for forbidden in spec.forbidden:
        assert forbidden not in modules, f"{spec.name} loads {forbidden}"
    assert not [m for m in modules if m.partition(".")[0] in {"dataset_export_tools", "fakes"}]
    site_files = report["site_files"]
    assert isinstance(site_files, list)
    owners = _file_owners()
    loaded = {owners[f] for f in site_files if f in owners} - {"dataset-export"}
    loaded -= OPTIONAL_IMPORTS
    installed = _installed_by(spec)
    assert loaded <= installed, (
        f"{spec.name} imports {sorted(loaded - installed)}, not installed by its requirements.txt"
    )


def _direct_dependencies(spec: FunctionSpec) -> set[str]:
    """pyproject.toml's dependencies plus those of the function's extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    texts = [*project["dependencies"]]
    for extra in spec.extras:
        texts.extend(project["optional-dependencies"][extra])
    return {canonicalize_name(Requirement(t).name) for t in texts}


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_requirements_are_pinned_with_hashes_as_the_tested_venv(spec: FunctionSpec) -> None:
    """Every distribution pinned with == and its hashes, at the version the tests ran with."""
    requirements = _requirements(spec)
    names = {canonicalize_name(r.name) for r, _ in requirements}
    assert _direct_dependencies(spec) <= names
    assert not names & {canonicalize_name(f) for f in spec.forbidden}
    for requirement, hashes in requirements:
        pinned = re.fullmatch(r"==([0-9][0-9A-Za-z.]*)", str(requirement.specifier))
        assert pinned, f"{requirement} is not pinned with =="
        assert hashes, f"{requirement} has no --hash"
        if requirement.marker is None or requirement.marker.evaluate():
            version = pinned.group(1)
            assert version == md.version(requirement.name), f"{requirement}: the venv differs"


def test_bundle_refuses_requirements_that_differ_from_the_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """make bundle stops, naming the file and `make lock`, when a requirements.txt is stale."""
    root = tmp_path / "repo"
    for file in ("pyproject.toml", lockfile.LOCK):
        (root / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / file, root / file)
    shutil.copytree(REPO / "functions", root / "functions")
    shutil.copytree(REPO / "src", root / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    stale = root / "functions" / "notify" / "requirements.txt"
    stale.write_text(stale.read_text("utf-8").replace("httpx==", "httpx>="), "utf-8")
    assert bundle.main(["--root", str(root), "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "functions/notify/requirements.txt" in error
    assert "make lock" in error
    assert "submit" not in error
    assert not (tmp_path / "out").exists()
    assert bundle.main(["--root", str(root), "--out", str(tmp_path / "out"), "submit"]) == 0
