"""Check Terraform files against the google and random provider schemas, offline.

``terraform validate`` needs the provider binaries, which cannot be downloaded here. This reads
every ``*.tf`` file under the given directories with python-hcl2 and checks each module (a
directory) against ``providers.json.gz`` (written by ``extract.py`` from the cdktn provider
packages, generated from google 7.46.1 and random 3.9.1):

- resource, data source and ephemeral resource types that the provider does not have;
- arguments and nested blocks a type does not have, attributes written as blocks and blocks
  written as attributes, a block that may appear once written twice, required arguments and
  blocks left out, computed-only attributes set;
- literals that Terraform cannot convert to the argument's type (``"ten"`` for a number, a list
  for a string);
- references to undeclared variables, locals, resources, data sources and module calls, to
  attributes a resource type does not have, and instance keys missing (``count``/``for_each``)
  or given where there are none;
- module calls with a local source: arguments the module has no variable for, required
  variables left out;
- ``required_providers`` that do not pin the provider version the schema came from.

What it does not do (``terraform validate`` and ``plan`` still do): evaluate expressions, so the
types of computed values, function calls and variable constraints go unchecked; check the
provider's own validations (enums, formats, conflicting arguments, "exactly one of"); check
nested attributes of references beyond one block level.

Usage: ``python tools/tf_schema/check.py [DIR ...]`` (default: ``infra/terraform``). Prints one
line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import gzip
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
from hcl2.utils import SerializationOptions

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCHEMA = HERE / "providers.json.gz"

# Problem kinds (the last word of each line, so a test can tell them apart).
PARSE_ERROR = "parse-error"
UNKNOWN_TYPE = "unknown-type"
UNKNOWN_PROVIDER = "unknown-provider"
UNKNOWN_ARGUMENT = "unknown-argument"
UNKNOWN_BLOCK = "unknown-block"
ARGUMENT_AS_BLOCK = "argument-written-as-block"
BLOCK_AS_ARGUMENT = "block-written-as-argument"
REPEATED_BLOCK = "repeated-single-block"
MISSING_REQUIRED = "missing-required"
COMPUTED_ONLY = "computed-only-set"
TYPE_MISMATCH = "type-mismatch"
PROVIDER_VERSION = "provider-version"
UNDECLARED = "undeclared-reference"
UNKNOWN_ATTRIBUTE = "unknown-attribute"
INSTANCE_KEY = "instance-key"
MODULE_ARGUMENT = "module-argument"

Block = Mapping[str, Any]

META_ARGS = {"count", "for_each", "depends_on", "provider"}
CONDITION: Block = {
    "attrs": {"condition": "bool", "error_message": "string"},
    "required": ["condition", "error_message"],
}
LIFECYCLE: Block = {
    "attrs": {
        "create_before_destroy": "bool",
        "prevent_destroy": "bool",
        "ignore_changes": "any",
        "replace_triggered_by": "any",
    },
    "blocks": {
        "precondition": {"list": True, "block": CONDITION},
        "postcondition": {"list": True, "block": CONDITION},
    },
}
READ_LIFECYCLE: Block = {"attrs": {}, "blocks": LIFECYCLE["blocks"]}
ANY_BLOCK: Block = {"any": True}
META_BLOCKS: Mapping[str, Mapping[str, Block]] = {
    "resource": {"lifecycle": LIFECYCLE, "provisioner": ANY_BLOCK, "connection": ANY_BLOCK},
    "data": {"lifecycle": READ_LIFECYCLE},
    "ephemeral": {"lifecycle": READ_LIFECYCLE},
}
#: Terraform's own resource types (terraform.io/builtin/terraform).
BUILTIN: Mapping[str, Mapping[str, Block]] = {
    "resource": {
        "terraform_data": {
            "attrs": {"input": "any", "triggers_replace": "any"},
            "computed": ["id", "output"],
        }
    },
    "data": {"terraform_remote_state": ANY_BLOCK},
    "ephemeral": {},
}
VARIABLE: Block = {
    "attrs": {
        "type": "any",
        "default": "any",
        "description": "string",
        "sensitive": "bool",
        "nullable": "bool",
        "ephemeral": "bool",
    },
    "blocks": {"validation": {"list": True, "block": CONDITION}},
}
OUTPUT: Block = {
    "attrs": {
        "value": "any",
        "description": "string",
        "sensitive": "bool",
        "ephemeral": "bool",
        "depends_on": "any",
    },
    "blocks": {"precondition": {"list": True, "block": CONDITION}},
    "required": ["value"],
}
MODULE_META = {"source", "version", "count", "for_each", "providers", "depends_on"}
#: Names a reference may start with that are not declarations of the module.
SCOPES = {"each", "count", "path", "self", "terraform"}


@dataclass(frozen=True)
class Problem:
    """One finding: where, what, and its kind."""

    file: Path
    line: int
    address: str
    kind: str
    message: str

    def __str__(self) -> str:
        try:
            shown = self.file.relative_to(REPO)
        except ValueError:
            shown = self.file
        return f"{shown}:{self.line}: {self.address}: {self.message} [{self.kind}]"


@functools.cache
def load_schema(path: Path = SCHEMA) -> dict[str, Any]:
    """The compact provider schemas."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


# --- values --------------------------------------------------------------------------------


def _is_block_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
    )


def _label(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _string_literal(value: str) -> str | None:
    """The text of a quoted string without interpolation, else None (an expression)."""
    if not value.startswith('"'):
        return None
    body = value[1:-1] if value.endswith('"') else value[1:]
    plain = body.replace("$${", "").replace("%%{", "")
    if "${" in plain or "%{" in plain:
        return None
    return body


def literal_kind(value: Any) -> str | None:
    """The kind of a literal (string, number, bool, tuple, object, null); None: an expression."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string" if _string_literal(value) is not None else None
    if isinstance(value, list):
        return "tuple"
    if isinstance(value, dict):
        return "object"
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def conversion_error(value: Any, tf_type: str) -> str | None:
    """Why Terraform cannot convert the literal ``value`` to ``tf_type``, or None."""
    kind = literal_kind(value)
    if kind is None or kind == "null" or tf_type == "any":
        return None
    shown = json.dumps(value) if kind != "string" else value
    if tf_type == "string":
        return None if kind in {"string", "number", "bool"} else f"{shown} is not a string"
    if tf_type == "number":
        if kind == "number":
            return None
        if kind == "string" and _is_number(str(_string_literal(value))):
            return None
        return f"{shown} is not a number"
    if tf_type == "bool":
        if kind == "bool":
            return None
        if kind == "string" and _string_literal(value) in {"true", "false"}:
            return None
        return f"{shown} is not a bool"
    container = re.fullmatch(r"(list|map)\((.+)\)", tf_type)
    if container is None:
        return None
    outer, inner = container.groups()
    if outer == "list":
        if kind != "tuple":
            return f"{shown} is not a list"
        for item in value:
            problem = conversion_error(item, inner)
            if problem:
                return f"element: {problem}"
        return None
    if kind != "object":
        return f"{shown} is not a map"
    for item in value.values():
        problem = conversion_error(item, inner)
        if problem:
            return f"value: {problem}"
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key != "__is_block__":
                yield key
                yield from _strings(item)


def _string_end(text: str, start: int) -> int:
    """The index of the quote closing the string literal that opens at ``text[start]``; the
    templates inside it (``${...}``, ``%{...}``) may hold strings of their own."""
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text.startswith(("$${", "%%{"), i):
            i += 3
            continue
        if text[i] == '"':
            return i
        if text.startswith(("${", "%{"), i):
            i = _template_end(text, i + 2)
        i += 1
    return len(text) - 1


def _template_end(text: str, i: int) -> int:
    """The index of the ``}`` closing a template whose expression starts at ``text[i]``."""
    depth = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _string_end(text, i)
        elif char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return i
            depth -= 1
        i += 1
    return len(text)


def _expression_parts(expression: str) -> Iterator[str]:
    """``expression`` with its string literals emptied, then the expressions of the templates
    inside those literals (``a ? "${b.c}" : d`` gives ``a ? "" : d``, then ``b.c``)."""
    stripped, literals, i = [], [], 0
    while i < len(expression):
        if expression[i] == '"':
            end = _string_end(expression, i)
            literals.append(expression[i : end + 1])
            stripped.append('""')
            i = end + 1
        else:
            stripped.append(expression[i])
            i += 1
    yield "".join(stripped)
    for literal in literals:
        yield from interpolations(literal)


def interpolations(text: str) -> Iterator[str]:
    """The expressions inside ``${...}`` of a serialized value, string literals removed, and
    those of the templates nested in these literals."""
    if not text.startswith('"'):
        if text.startswith("${") and text.endswith("}"):
            yield from _expression_parts(text[2:-1])
        return
    i = 0
    while True:
        start = text.find("${", i)
        if start < 0:
            return
        if start > 0 and text[start - 1] == "$":
            i = start + 2
            continue
        j = _template_end(text, start + 2)
        yield from _expression_parts(text[start + 2 : j])
        i = j + 1


REFERENCE = re.compile(
    r"(?<![\w.\]])(?P<root>[a-z][a-z0-9_]*)\.(?P<name>[a-zA-Z_][\w-]*)"
    r"(?P<index>(?:\[[^\]]*\])?)(?:\.(?P<attr>[a-zA-Z_]\w*))?"
    r"(?P<index2>(?:\[[^\]]*\])?)(?:\.(?P<sub>[a-zA-Z_]\w*))?"
)


# --- modules -------------------------------------------------------------------------------


@dataclass
class Declared:
    """A resource, data source or ephemeral resource declared in a module."""

    kind: str
    type: str
    name: str
    body: Mapping[str, Any]
    file: Path
    line: int

    @property
    def address(self) -> str:
        """Its Terraform address."""
        prefix = "" if self.kind == "resource" else f"{self.kind}."
        return f"{prefix}{self.type}.{self.name}"

    @property
    def has_instances(self) -> bool:
        """Declared with count or for_each."""
        return "count" in self.body or "for_each" in self.body


@dataclass
class Module:
    """The parsed ``*.tf`` files of one directory."""

    directory: Path
    documents: list[tuple[Path, dict[str, Any], str]] = field(default_factory=list)
    declared: dict[tuple[str, str, str], Declared] = field(default_factory=dict)
    variables: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    locals: set[str] = field(default_factory=set)
    modules: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    providers: dict[str, Mapping[str, Any]] = field(default_factory=dict)


def _line(text: str, *labels: str) -> int:
    pattern = r"^\s*" + r"\s+".join(re.escape(label) for label in labels) + r"\s*\{"
    match = re.search(pattern, text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else 1


OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=True, strip_string_quotes=False, preserve_heredocs=True
)


@functools.lru_cache(maxsize=512)
def parse(text: str) -> dict[str, Any]:
    """The python-hcl2 reading of one file's text (cached: treat it as read-only)."""
    document: dict[str, Any] = hcl2.loads(text, serialization_options=OPTIONS)
    return document


def load_module(directory: Path, problems: list[Problem]) -> Module:
    """Parse every ``*.tf`` file of ``directory`` and index its declarations."""
    module = Module(directory)
    for path in sorted(directory.glob("*.tf")):
        text = path.read_text("utf-8")
        try:
            document = parse(text)
        except Exception as error:  # any parser failure is a finding
            problems.append(Problem(path, 1, path.name, PARSE_ERROR, str(error).splitlines()[0]))
            continue
        module.documents.append((path, document, text))
        for kind in ("resource", "data", "ephemeral"):
            for block in document.get(kind, []):
                for raw_type, named in block.items():
                    if raw_type == "__is_block__":
                        continue
                    for raw_name, body in named.items():
                        if raw_name == "__is_block__":
                            continue
                        tf_type, name = _label(raw_type), _label(raw_name)
                        line = _line(text, kind, f'"{tf_type}"', f'"{name}"')
                        module.declared[(kind, tf_type, name)] = Declared(
                            kind, tf_type, name, body, path, line
                        )
        for block in document.get("variable", []):
            for raw_name, body in block.items():
                if raw_name != "__is_block__":
                    module.variables[_label(raw_name)] = body
        for block in document.get("locals", []):
            module.locals |= {k for k in block if k != "__is_block__"}
        for block in document.get("module", []):
            for raw_name, body in block.items():
                if raw_name != "__is_block__":
                    module.modules[_label(raw_name)] = body
        for block in document.get("terraform", []):
            for providers in block.get("required_providers", []):
                for local_name, spec in providers.items():
                    if local_name != "__is_block__" and isinstance(spec, dict):
                        module.providers[local_name] = spec
    return module


# --- checks --------------------------------------------------------------------------------


class Checker:
    """Collects the problems of the modules under some directories."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self.problems: list[Problem] = []

    def report(self, where: Declared | tuple[Path, int, str], kind: str, message: str) -> None:
        """Record one problem."""
        if isinstance(where, Declared):
            file, line, address = where.file, where.line, where.address
        else:
            file, line, address = where
        self.problems.append(Problem(file, line, address, kind, message))

    # -- providers

    def provider_of(self, module: Module, tf_type: str) -> str:
        """The local provider name of a type (its prefix)."""
        del module
        return tf_type.split("_", 1)[0]

    def provider_schema(self, module: Module, local_name: str) -> Mapping[str, Any] | None:
        """The schema of the provider a module knows by ``local_name``."""
        spec = module.providers.get(local_name)
        source = _label(str(spec.get("source", ""))) if spec else f"hashicorp/{local_name}"
        for provider in self.schema["providers"].values():
            if provider["source"] == source:
                found: Mapping[str, Any] = provider
                return found
        return None

    def check_required_providers(self, module: Module) -> None:
        """Every google/random entry pins the version the schema was extracted from."""
        versions_file = next(
            (p for p, d, _ in module.documents if "terraform" in d), module.directory
        )
        for local_name, spec in module.providers.items():
            source = _label(str(spec.get("source", "")))
            provider = self.provider_schema(module, local_name)
            where = (versions_file, 1, f"required_providers.{local_name}")
            if provider is None:
                self.report(where, UNKNOWN_PROVIDER, f"no schema for {source}: extract it first")
                continue
            wanted = provider["version"]
            constraint = _label(str(spec.get("version", "")))
            parts = [p.strip() for p in constraint.split(",")]
            if len(parts) != 1 or parts[0].lstrip("= ").strip() != wanted or "~" in parts[0]:
                self.report(
                    where,
                    PROVIDER_VERSION,
                    f'version = "{constraint}": pin {source} to "{wanted}", the version '
                    "the schema was extracted from",
                )

    # -- blocks

    def check_body(
        self,
        owner: Declared,
        path: str,
        body: Mapping[str, Any],
        schema: Block,
        meta_args: Iterable[str] = (),
        meta_blocks: Mapping[str, Block] | None = None,
    ) -> None:
        """Arguments and blocks of one block body against its schema."""
        if schema.get("any"):
            return
        attrs: Mapping[str, str] = schema.get("attrs", {})
        blocks: Mapping[str, Any] = schema.get("blocks", {})
        computed = set(schema.get("computed", []))
        meta_args = set(meta_args)
        meta_blocks = meta_blocks or {}
        present: set[str] = set()
        where = f"{path}." if path else ""
        for key, value in body.items():
            if key == "__is_block__":
                continue
            if key == "dynamic" and isinstance(value, list) and "dynamic" not in blocks:
                for dynamic in value:
                    for raw_name, spec in dynamic.items():
                        if raw_name == "__is_block__":
                            continue
                        name = _label(raw_name)
                        present.add(name)
                        if name not in blocks:
                            self._unknown(owner, f"{where}{name}", name, attrs, blocks, computed)
                            continue
                        for content in spec.get("content", []) if isinstance(spec, dict) else []:
                            self.check_body(owner, f"{where}{name}", content, blocks[name]["block"])
                continue
            present.add(key)
            if _is_block_list(value):
                if key in meta_blocks:
                    for item in value:
                        self.check_body(owner, f"{where}{key}", item, meta_blocks[key])
                elif key in blocks:
                    if not blocks[key]["list"] and len(value) > 1:
                        self.report(
                            owner,
                            REPEATED_BLOCK,
                            f"{where}{key}: written {len(value)} times, allowed once",
                        )
                    for item in value:
                        self.check_body(owner, f"{where}{key}", item, blocks[key]["block"])
                elif key in attrs:
                    self.report(
                        owner,
                        ARGUMENT_AS_BLOCK,
                        f"{where}{key} is an argument: write `{key} = ...`, not a block",
                    )
                else:
                    self._unknown(owner, f"{where}{key}", key, attrs, blocks, computed, True)
                continue
            if key in meta_args:
                continue
            if key in attrs:
                problem = conversion_error(value, attrs[key])
                if problem:
                    self.report(owner, TYPE_MISMATCH, f"{where}{key} ({attrs[key]}): {problem}")
            elif key in blocks or key in meta_blocks:
                self.report(
                    owner,
                    BLOCK_AS_ARGUMENT,
                    f"{where}{key} is a block: write `{key} {{ ... }}`, not `{key} = ...`",
                )
            else:
                self._unknown(owner, f"{where}{key}", key, attrs, blocks, computed)
        for name in schema.get("required", []):
            if name not in present:
                what = "block" if name in blocks else "argument"
                self.report(owner, MISSING_REQUIRED, f"{where}{name}: required {what} missing")

    def _unknown(
        self,
        owner: Declared,
        shown: str,
        key: str,
        attrs: Mapping[str, str],
        blocks: Mapping[str, Any],
        computed: set[str],
        as_block: bool = False,
    ) -> None:
        if key in computed:
            self.report(owner, COMPUTED_ONLY, f"{shown} is computed by the provider, not set")
            return
        close = difflib.get_close_matches(key, [*attrs, *blocks], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        kind = UNKNOWN_BLOCK if as_block else UNKNOWN_ARGUMENT
        self.report(owner, kind, f"{shown}: no such {'block' if as_block else 'argument'}{hint}")

    def type_schema(self, module: Module, kind: str, tf_type: str) -> Block | None:
        """The schema of a declared type, reporting nothing."""
        if tf_type in BUILTIN[kind]:
            return BUILTIN[kind][tf_type]
        provider = self.provider_schema(module, self.provider_of(module, tf_type))
        if provider is None:
            return None
        found: Block | None = provider[kind].get(tf_type)
        return found

    def check_declared(self, module: Module, item: Declared) -> None:
        """One resource, data source or ephemeral resource."""
        schema = self.type_schema(module, item.kind, item.type)
        if schema is None:
            provider = self.provider_of(module, item.type)
            known = self.provider_schema(module, provider)
            if known is None and item.type not in BUILTIN[item.kind]:
                self.report(item, UNKNOWN_PROVIDER, f"no schema for provider {provider}")
                return
            names = list(known[item.kind]) if known else []
            close = difflib.get_close_matches(item.type, names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.report(item, UNKNOWN_TYPE, f"{item.kind} type {item.type} does not exist{hint}")
            return
        self.check_body(item, "", item.body, schema, META_ARGS, META_BLOCKS[item.kind])

    def check_providers(self, module: Module) -> None:
        """``provider "google" {}`` blocks against the provider's own schema."""
        for path, document, text in module.documents:
            for block in document.get("provider", []):
                for raw_name, body in block.items():
                    if raw_name == "__is_block__":
                        continue
                    name = _label(raw_name)
                    provider = self.provider_schema(module, name)
                    line = _line(text, "provider", f'"{name}"')
                    owner = Declared("provider", name, "", body, path, line)
                    if provider is None:
                        self.report(owner, UNKNOWN_PROVIDER, f"no schema for provider {name}")
                        continue
                    self.check_body(owner, "", body, provider["provider"], {"alias"})

    def check_module_blocks(self, module: Module, modules: Mapping[Path, Module]) -> None:
        """Variables, outputs and calls of local modules."""
        for path, document, text in module.documents:
            for block in document.get("variable", []):
                for raw_name, body in block.items():
                    if raw_name != "__is_block__":
                        line = _line(text, "variable", raw_name)
                        owner = Declared("var", _label(raw_name), "", body, path, line)
                        self.check_body(owner, "", body, VARIABLE)
            for block in document.get("output", []):
                for raw_name, body in block.items():
                    if raw_name != "__is_block__":
                        line = _line(text, "output", raw_name)
                        owner = Declared("output", _label(raw_name), "", body, path, line)
                        self.check_body(owner, "", body, OUTPUT)
            for block in document.get("module", []):
                for raw_name, body in block.items():
                    if raw_name == "__is_block__":
                        continue
                    line = _line(text, "module", raw_name)
                    owner = Declared("module", _label(raw_name), "", body, path, line)
                    source = _string_literal(str(body.get("source", "")))
                    if source is None or not source.startswith("."):
                        continue
                    target = modules.get((module.directory / source).resolve())
                    if target is None:
                        self.report(owner, MODULE_ARGUMENT, f"source {source}: no module there")
                        continue
                    for key in body:
                        if key in MODULE_META or key == "__is_block__":
                            continue
                        if key not in target.variables:
                            close = difflib.get_close_matches(key, list(target.variables), n=1)
                            hint = f" (did you mean {close[0]}?)" if close else ""
                            message = f"{key}: the module has no such variable{hint}"
                            self.report(owner, MODULE_ARGUMENT, message)
                    for name, variable in target.variables.items():
                        if "default" not in variable and name not in body:
                            self.report(
                                owner, MISSING_REQUIRED, f"{name}: required variable missing"
                            )

    # -- references

    def check_references(self, module: Module) -> None:
        """Every ``var.``, ``local.``, ``module.``, ``data.`` and resource reference resolves."""
        resource_types = {t for (k, t, _) in module.declared if k == "resource"}
        for path, document, text in module.documents:
            for top, blocks in document.items():
                for block in blocks if isinstance(blocks, list) else []:
                    for labels, body in _labelled(top, block):
                        line = _line(text, top, *(f'"{label}"' for label in labels))
                        address = ".".join(labels if top == "resource" else [top, *labels])
                        if top in ("moved", "removed") and labels == ["from"]:
                            continue  # an address gone by design (``to`` must resolve)
                        for expression in _strings(body):
                            for inner in interpolations(expression):
                                self._check_expression(
                                    module, (path, line, address), inner, resource_types
                                )

    def _check_expression(
        self,
        module: Module,
        where: tuple[Path, int, str],
        expression: str,
        resource_types: set[str],
    ) -> None:
        for match in REFERENCE.finditer(expression):
            root, name = match["root"], match["name"]
            if root in SCOPES:
                continue
            if root == "var":
                if name not in module.variables:
                    self.report(where, UNDECLARED, f"var.{name} is not declared")
            elif root == "local":
                if name not in module.locals:
                    self.report(where, UNDECLARED, f"local.{name} is not declared")
            elif root == "module":
                if name not in module.modules:
                    self.report(where, UNDECLARED, f"module.{name} is not declared")
            elif root in ("data", "ephemeral"):
                inner = REFERENCE.match(expression, match.start("name"))
                if inner is not None:
                    self._check_instance(module, where, root, inner["root"], inner)
            elif root in resource_types or self._is_provider_type(module, root):
                self._check_instance(module, where, "resource", root, match)

    def _is_provider_type(self, module: Module, root: str) -> bool:
        provider = self.provider_schema(module, root.split("_", 1)[0])
        return provider is not None and "_" in root and root in provider["resource"]

    def _check_instance(
        self,
        module: Module,
        where: tuple[Path, int, str],
        kind: str,
        tf_type: str,
        match: re.Match[str],
    ) -> None:
        name, index, attr = match["name"], match["index"], match["attr"]
        declared = module.declared.get((kind, tf_type, name))
        shown = f"{'' if kind == 'resource' else kind + '.'}{tf_type}.{name}"
        if declared is None:
            self.report(where, UNDECLARED, f"{shown} is not declared")
            return
        if attr is None:
            return
        if declared.has_instances and not index:
            self.report(
                where,
                INSTANCE_KEY,
                f"{shown}.{attr}: {shown} has count or for_each, so it needs an instance key",
            )
        if not declared.has_instances and index and index != "[*]":
            self.report(where, INSTANCE_KEY, f"{shown}{index}: {shown} has no count or for_each")
        schema = self.type_schema(module, kind, tf_type)
        if schema is None or schema.get("any"):
            return
        readable = _readable(schema)
        if attr not in readable:
            close = difflib.get_close_matches(attr, list(readable), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.report(where, UNKNOWN_ATTRIBUTE, f"{shown}.{attr}: no such attribute{hint}")
            return
        sub = match["sub"]
        nested = schema.get("blocks", {}).get(attr)
        if sub and nested is not None:
            inner = _readable(nested["block"])
            if sub not in inner:
                close = difflib.get_close_matches(sub, list(inner), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.report(
                    where, UNKNOWN_ATTRIBUTE, f"{shown}.{attr}.{sub}: no such attribute{hint}"
                )

    # -- all

    def check(self, directories: Iterable[Path]) -> list[Problem]:
        """Check every module (directory with ``*.tf`` files) under ``directories``."""
        found: dict[Path, Module] = {}
        for directory in directories:
            for tf_dir in sorted({p.parent.resolve() for p in directory.rglob("*.tf")}):
                if ".terraform" not in tf_dir.parts:
                    found[tf_dir] = load_module(tf_dir, self.problems)
        for module in found.values():
            self.check_required_providers(module)
            self.check_providers(module)
            for item in module.declared.values():
                self.check_declared(module, item)
            self.check_module_blocks(module, found)
            self.check_references(module)
        unique = dict.fromkeys(self.problems)
        return list(unique)


def _readable(schema: Block) -> set[str]:
    return {"id", *schema.get("attrs", {}), *schema.get("blocks", {}), *schema.get("computed", [])}


def _labelled(top: str, block: Mapping[str, Any]) -> Iterator[tuple[list[str], Any]]:
    """``(labels, body)`` of a parsed top-level block (resource "t" "n" has two labels)."""
    depth = {"resource": 2, "data": 2, "ephemeral": 2}.get(
        top, 0 if top in {"locals", "terraform"} else 1
    )

    def walk(node: Any, labels: list[str]) -> Iterator[tuple[list[str], Any]]:
        if len(labels) == depth or not isinstance(node, dict):
            yield labels, node
            return
        for key, value in node.items():
            if key != "__is_block__":
                yield from walk(value, [*labels, _label(key)])

    yield from walk(block, [])


def check(directories: Iterable[Path], schema: Mapping[str, Any] | None = None) -> list[Problem]:
    """The problems of every module under ``directories``."""
    return Checker(schema if schema is not None else load_schema()).check(directories)


def main(argv: list[str] | None = None) -> int:
    """Print every problem; exit 1 if there is any."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="*", type=Path, default=[REPO / "infra/terraform"])
    args = parser.parse_args(argv)
    problems = check(args.directories)
    for problem in problems:
        print(problem)
    modules = {p.parent for d in args.directories for p in d.rglob("*.tf")}
    providers = load_schema()["providers"]
    versions = ", ".join(f"{p['source']} {p['version']}" for p in providers.values())
    print(
        f"schema check ({versions}): {len(modules)} module(s), {len(problems)} problem(s)",
        file=sys.stderr,
    )
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
