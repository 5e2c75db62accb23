"""Extract the Terraform provider schemas ``check.py`` needs from the cdktn provider wheels.

A one-off run by a maintainer when the provider version changes; its output,
``tools/tf_schema/providers.json.gz``, is committed. No Terraform provider can be downloaded
here, but the PyPI packages ``cdktn-provider-google`` and ``cdktn-provider-random`` are generated
from the providers' schemas, and their jsii manifests (``.jsii``, inside a ``.jsii.tgz`` inside
the wheel) keep what a checker needs:

- each resource, data source and ephemeral resource class names its Terraform type in its doc
  link (``{@link https://registry.terraform.io/.../pubsub_topic google_pubsub_topic}``);
- its ``...Config`` interface has one property per argument and nested block; the doc anchor of
  each property (``...#message_retention_duration``) is the argument's snake_case name;
- a property typed by a struct is a block that may appear at most once, an array of structs a
  repeatable block; a property that is not ``optional`` is required;
- computed-only attributes are absent from the config but present as getters on the class (and
  on a block's ``...OutputReference``): those are what may be read but never set.

Usage (downloads the two wheels, ~67 MB, into a temporary directory unless given)::

    .venv/bin/python tools/tf_schema/extract.py [--wheels DIR]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "providers.json.gz"


@dataclass(frozen=True)
class Package:
    """One cdktn provider package and the Terraform provider it was generated from."""

    local_name: str
    source: str
    version: str
    distribution: str
    distribution_version: str

    @property
    def wheel_glob(self) -> str:
        """The file name pattern of its wheel."""
        return f"{self.distribution.replace('-', '_')}-{self.distribution_version}-*.whl"


PACKAGES = (
    Package("google", "hashicorp/google", "7.46.1", "cdktn-provider-google", "20.3.1"),
    Package("random", "hashicorp/random", "3.9.1", "cdktn-provider-random", "15.0.1"),
)

KINDS = {
    "cdktn.TerraformResource": "resource",
    "cdktn.TerraformDataSource": "data",
    "cdktn.TerraformEphemeralResource": "ephemeral",
    "cdktn.TerraformProvider": "provider",
}
TYPE_LINK = re.compile(r"\{@link https://registry\.terraform\.io/\S+ ([a-z0-9_]+)\}")
ANCHOR = re.compile(r"Docs at Terraform Registry: \{@link \S+#([a-z0-9_]+) \S+\}")
PRIMITIVES = {"string": "string", "number": "number", "boolean": "bool", "any": "any"}


def snake(name: str) -> str:
    """cdktn's camelCase back to Terraform's snake_case (used only where no anchor exists)."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def read_manifest(wheel: Path) -> dict[str, Any]:
    """The ``.jsii`` manifest inside the wheel's ``_jsii/*.jsii.tgz``."""
    with zipfile.ZipFile(wheel) as archive:
        (member,) = [n for n in archive.namelist() if n.endswith(".jsii.tgz")]
        data = archive.read(member)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        handle = tar.extractfile("package/.jsii")
        assert handle is not None
        manifest: dict[str, Any] = json.load(handle)
    return manifest


class Extractor:
    """Turns one manifest's types into compact block schemas."""

    def __init__(self, types: Mapping[str, Any]) -> None:
        self.types = types
        self.memo: dict[str, dict[str, Any]] = {}
        self.guessed: list[str] = []

    def _struct(self, fqn: str) -> Mapping[str, Any] | None:
        found: Mapping[str, Any] | None = self.types.get(fqn)
        if found and found.get("kind") == "interface" and found.get("datatype"):
            return found
        return None

    def _block_of(self, kind: Mapping[str, Any]) -> tuple[str, bool] | None:
        """``(struct fqn, repeatable)`` when a property type is a nested block."""
        if "fqn" in kind and self._struct(kind["fqn"]):
            return kind["fqn"], False
        for member in kind.get("union", {}).get("types", []):
            collection = member.get("collection", {})
            element = collection.get("elementtype", {})
            if collection.get("kind") == "array" and self._struct(element.get("fqn", "")):
                return element["fqn"], True
        return None

    def _type_of(self, kind: Mapping[str, Any], where: str) -> str:
        """The Terraform type of an attribute's jsii type."""
        if "primitive" in kind:
            return PRIMITIVES[kind["primitive"]]
        if "collection" in kind:
            collection = kind["collection"]
            element = self._type_of(collection["elementtype"], where)
            return f"{'list' if collection['kind'] == 'array' else 'map'}({element})"
        if "union" in kind:
            members = [t for t in kind["union"]["types"] if t.get("fqn") != "cdktn.IResolvable"]
            if len(members) == 1:
                return self._type_of(members[0], where)
        if kind.get("fqn") == "cdktn.IResolvable":
            return "any"
        raise ValueError(f"{where}: cannot map jsii type {kind}")

    def _anchor(self, prop: Mapping[str, Any]) -> str:
        docs = prop.get("docs", {})
        text = f"{docs.get('summary', '')} {docs.get('remarks', '')}"
        matches = ANCHOR.findall(text)
        if matches:
            return str(matches[-1])
        self.guessed.append(prop["name"])
        return snake(prop["name"])

    def _computed(self, fqn: str, config_names: Iterable[str]) -> list[str]:
        """Getters of the class (or OutputReference) that are not arguments: computed only."""
        cls = self.types.get(fqn)
        if cls is None:
            return []
        taken = set(config_names)
        found = []
        for prop in cls.get("properties", []):
            name = prop["name"]
            if prop.get("static") or name.endswith("Input") or name == "internalValue":
                continue
            if name in taken:
                continue
            found.append(snake(name))
        return sorted(found)

    def block(self, config_fqn: str, class_fqn: str | None) -> dict[str, Any]:
        """``{"attrs": {name: type}, "required": [...], "blocks": {...}, "computed": [...]}``."""
        key = f"{config_fqn}|{class_fqn}"
        if key in self.memo:
            return self.memo[key]
        struct = self.types[config_fqn]
        attrs: dict[str, str] = {}
        blocks: dict[str, Any] = {}
        required: list[str] = []
        names = []
        for prop in struct.get("properties", []):
            names.append(prop["name"])
            name = self._anchor(prop)
            nested = self._block_of(prop["type"])
            if nested is not None:
                nested_fqn, repeatable = nested
                body = self.block(nested_fqn, f"{nested_fqn}OutputReference")
                blocks[name] = {"list": repeatable, "block": body}
            else:
                attrs[name] = self._type_of(prop["type"], f"{config_fqn}.{prop['name']}")
            if not prop.get("optional"):
                required.append(name)
        result: dict[str, Any] = {"attrs": dict(sorted(attrs.items()))}
        if blocks:
            result["blocks"] = dict(sorted(blocks.items()))
        if required:
            result["required"] = sorted(required)
        computed = self._computed(class_fqn, names) if class_fqn else []
        computed = [c for c in computed if c not in attrs and c not in blocks]
        if computed:
            result["computed"] = computed
        self.memo[key] = result
        return result


def extract(package: Package, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Every resource, data source, ephemeral resource and the provider block of one package."""
    types = manifest["types"]
    extractor = Extractor(types)
    found: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS.values()}
    for fqn, cls in sorted(types.items()):
        kind = KINDS.get(cls.get("base", ""))
        if cls.get("kind") != "class" or kind is None:
            continue
        summary = cls["docs"]["summary"]
        link = TYPE_LINK.search(summary)
        assert link, f"{fqn}: no Terraform type in {summary!r}"
        # The generator links the provider version it read the schema from.
        assert f"/providers/{package.source}/{package.version}/" in summary, summary
        tf_type = link.group(1)
        found[kind][tf_type] = extractor.block(f"{fqn}Config", fqn)
    if extractor.guessed:
        print(
            f"{package.distribution}: {len(extractor.guessed)} argument names without a doc "
            "anchor, converted from camelCase",
            file=sys.stderr,
        )
    (provider,) = found.pop("provider").values()
    return {"provider": provider, **found}


def wheels(directory: Path | None) -> dict[str, Path]:
    """The wheel of each package, downloaded with pip when no directory is given."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="tf-schema-"))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--dest",
                str(directory),
                *(f"{p.distribution}=={p.distribution_version}" for p in PACKAGES),
            ],
            check=True,
        )
    found = {}
    for package in PACKAGES:
        matches = sorted(directory.glob(package.wheel_glob))
        if not matches:
            raise SystemExit(f"no {package.wheel_glob} in {directory}")
        found[package.local_name] = matches[0]
    return found


def main(argv: list[str] | None = None) -> int:
    """Write ``providers.json.gz`` from the two wheels."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="directory holding the two wheels")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    schema: dict[str, Any] = {"format": 1, "providers": {}}
    found = wheels(args.wheels)
    for package in PACKAGES:
        wheel = found[package.local_name]
        manifest = read_manifest(wheel)
        assert manifest["version"] == package.distribution_version, manifest["version"]
        schema["providers"][package.local_name] = {
            "source": package.source,
            "version": package.version,
            "extracted_from": f"{package.distribution}=={package.distribution_version}",
            **extract(package, manifest),
        }
        for kind in ("resource", "data", "ephemeral"):
            count = len(schema["providers"][package.local_name][kind])
            print(f"{package.local_name} {package.version}: {count} {kind}", file=sys.stderr)
    text = json.dumps(schema, sort_keys=True, separators=(",", ":")).encode()
    with args.out.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
        out.write(text)
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({len(text)} bytes of JSON, {size} gzipped)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
