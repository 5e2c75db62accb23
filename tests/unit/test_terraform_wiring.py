"""The Terraform in infra/terraform is wired the way the code reads and talks.

Three sources are compared, none of them trusted alone: the code (``config.py`` and the
functions' ``main.py`` and ``wiring.py`` builders, read with ``ast``), the deployment contract
(``dataset_export_tools.deploy_manifest``) and the HCL (read with python-hcl2). The module describes
its functions in one map, ``local.functions``, from which the functions, their service
accounts, push subscriptions and IAM are made with ``for_each``: the tests read that map, and
check that the resources take each value from it. Renaming an environment variable, secret,
topic or entry point on one side only, or changing a default on one side only, fails a test.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import inspect
import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from dataset_export import config as config_module
from dataset_export.config import DEFAULT_FIRESTORE_DATABASE, Settings, firestore_database_problem
from dataset_export.core import parts
from dataset_export.core.errors import ConfigError
from dataset_export.core.source import (
    DATASET_ID,
    DEFAULT_BIGQUERY_LOCATION,
    MIN_BYTES_BILLED,
    ParquetSource,
    bigquery_location_problem,
    parse_bigquery_dataset,
    parse_bigquery_table,
    parse_dataset_source,
)
from dataset_export_tools.deploy_manifest import (
    COMMON_ENV,
    DEAD_LETTER_TOPIC,
    FUNCTIONS,
    NOT_DEPLOYED,
    PARTS_TOPIC,
    RETRY_TICK_KIND,
    RETRY_TICK_TOPIC,
    TOPICS,
    FunctionSpec,
)

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "infra" / "terraform"
PACKAGE = REPO / "src" / "dataset_export"
CONFIG = PACKAGE / "config.py"
WIRING = PACKAGE / "wiring.py"

ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]+")
#: ``${TYPE.NAME.attr}`` or ``${TYPE.NAME[key].attr}``: the resource a reference points at.
REF = re.compile(r"\$\{(?P<type>[a-z0-9_]+)\.(?P<name>[a-z0-9_]+)(?:\[(?P<key>[^\]]+)\])?\.")
#: Handlers that run long, whose push deadline must exceed the function's own timeout.
LONG_HANDLERS = {("process", "/"), ("notify", "/tick")}
#: Pub/Sub's largest ack deadline (the push timeout).
MAX_ACK_DEADLINE = 600
QUERY_UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
#: A BigQuery source table (var.bigquery_source_table), with which the BigQuery resources exist.
SOURCE_TABLE = "warehouse-prod.listings.rental_listings"


# --- the HCL -------------------------------------------------------------------------------


class Unevaluable(ValueError):
    """An HCL expression beyond what :func:`evaluate` understands."""


@dataclass(frozen=True)
class Scope:
    """What names mean while evaluating: variable values, ``each`` and iteration variables."""

    variables: Mapping[str, Any] = dataclass_field(default_factory=dict)
    each: tuple[str, Any] | None = None
    names: Mapping[str, Any] = dataclass_field(default_factory=dict)

    def top(self) -> Scope:
        """The module-level scope (locals and variables see no ``each``)."""
        return Scope(self.variables)


@dataclass(frozen=True)
class Terraform:
    """The module's resources, locals, variables and module calls."""

    resources: Mapping[str, Mapping[str, Mapping[str, Any]]]
    locals: Mapping[str, Any]
    variables: Mapping[str, Mapping[str, Any]]
    modules: Mapping[str, Mapping[str, Any]]

    def of_type(self, kind: str) -> Mapping[str, Mapping[str, Any]]:
        """Every resource of one type, by name."""
        return self.resources.get(kind, {})

    def default(self, variable: str) -> Any:
        """A variable's default, with the defaults of ``optional()`` object attributes."""
        body = self.variables[variable]
        value = body.get("default")
        found = re.fullmatch(r"\$\{object\(\{(.*)\}\)\}", str(body.get("type", "")), re.DOTALL)
        if isinstance(value, dict) and found:
            value = dict(value)
            for name, text in re.findall(r"(\w+)\s*=\s*optional\(\w+,\s*([^()]+?)\)", found[1]):
                value.setdefault(name, ast.literal_eval(text.strip()))
        return value

    # -- evaluation of the simple expressions the tests need (names, references, defaults)

    def evaluate(self, value: Any, scope: Scope | None = None) -> Any:
        """The value of ``value``: a literal, a template or one reference, in ``scope``."""
        scope = scope or Scope()
        if isinstance(value, dict):
            return {k: self.evaluate(v, scope) for k, v in value.items()}
        if isinstance(value, list):
            return [self.evaluate(v, scope) for v in value]
        if not isinstance(value, str):
            return value
        whole = _whole_expression(value)
        if whole is not None:
            return self._expression(whole, scope)
        parts = []
        for literal, expression in _template_parts(value):
            parts.append(literal)
            if expression is not None:
                parts.append(str(self._expression(expression, scope)))
        return "".join(parts)

    def _expression(self, text: str, scope: Scope) -> Any:
        text = text.strip()
        branches = _conditional(text)
        if branches is not None:
            condition, yes, no = branches
            return self._expression(yes if self._expression(condition, scope) else no, scope)
        if text == "null":
            return None
        comparison = _comparison(text)
        if comparison is not None:
            left, operator, right = comparison
            equal = self._expression(left, scope) == self._expression(right, scope)
            return equal if operator == "==" else not equal
        call = re.fullmatch(r"replace\((.*)\)", text)
        if call:
            # Terraform's replace() with a plain substring (a /regex/ is not needed here).
            value, old, new = (self._expression(a, scope) for a in _top_level_split(call[1], ","))
            assert not str(old).startswith("/"), f"{text}: a regex replace"
            return str(value).replace(str(old), str(new))
        call = re.fullmatch(r"tostring\((.*)\)", text)
        if call:
            return str(self._expression(call[1], scope))
        call = re.fullmatch(r"coalesce\((.*)\)", text)
        if call:
            for argument in _top_level_split(call[1], ","):
                value = self._expression(argument, scope)
                if value is not None and value != "":
                    return value
            raise Unevaluable(f"{text}: every argument is null or empty")
        loop = re.fullmatch(r'\{for (\w+) in keys\(local\.(\w+)\) : \1 => "(.*)"\}', text)
        if loop:
            keys = self.locals[loop[2]]
            return {
                k: self.evaluate(f"{loop[3]}", Scope(scope.variables, None, {loop[1]: k}))
                for k in keys
            }
        if text.startswith('"') and _string_end(text, 0) == len(text) - 1:
            return self.evaluate(text[1:-1], scope)
        parts = [
            self._expression(p[1], scope) if isinstance(p, tuple) else p for p in _path_parts(text)
        ]
        return self._path(parts, scope)

    def _path(self, parts: list[str | int], scope: Scope) -> Any:
        head = parts[0]
        if head in scope.names:
            return self._walk(scope.names[head], parts[1:], scope)
        if head == "var" and isinstance(parts[1], str):
            name = parts[1]
            value = scope.variables[name] if name in scope.variables else self.default(name)
            return self._walk(value, parts[2:], scope.top())
        if head == "local" and isinstance(parts[1], str):
            return self._walk(self.locals[parts[1]], parts[2:], scope.top())
        if head == "each" and scope.each is not None:
            if parts[1:2] == ["key"]:
                return scope.each[0]
            if parts[1:2] == ["value"]:
                return self._walk(scope.each[1], parts[2:], scope.top())
        if isinstance(head, str) and head in self.resources and len(parts) >= 3:
            body = self.resources[head][str(parts[1])]
            rest = parts[2:]
            inner = scope.top()
            if "for_each" in body:
                key = rest[0]
                rest = rest[1:]
                inner = Scope(scope.variables, (str(key), self.for_each(body, scope)[key]))
            elif "count" in body and rest and isinstance(rest[0], int):
                rest = rest[1:]  # every instance of a counted resource has the same arguments
            if len(rest) == 1 and rest[0] in body:
                return self.evaluate(body[str(rest[0])], inner)
        raise Unevaluable(".".join(map(str, parts)))

    def _walk(self, value: Any, rest: list[str | int], scope: Scope) -> Any:
        for part in rest:
            value = self.evaluate(value, scope)
            value = value[part]
        return self.evaluate(value, scope)

    def for_each(self, body: Mapping[str, Any], scope: Scope | None = None) -> dict[str, Any]:
        """The instances of a ``for_each`` over a local map (or the flattened subscriptions, or
        the BigQuery source table, which depend on the variables of ``scope``)."""
        source = body["for_each"]
        if source == "${local.push_subscriptions}":
            return push_subscriptions()
        if source == "${local.bigquery}":
            return bigquery_instances(scope or Scope())
        match = re.fullmatch(r"\$\{local\.(\w+)\}", source)
        if match is None:
            raise Unevaluable(source)
        found = self.locals[match[1]]
        assert isinstance(found, dict), source
        return dict(found)


def _whole_expression(value: str) -> str | None:
    """The expression of ``${...}`` when that is the whole value."""
    parts = list(_template_parts(value))
    if len(parts) == 1 and parts[0][0] == "" and parts[0][1] is not None:
        return parts[0][1]
    return None


def _template_parts(value: str) -> Iterator[tuple[str, str | None]]:
    """``(literal, expression)`` pairs of a template (strings inside expressions respected)."""
    i, literal = 0, []
    while i < len(value):
        if value.startswith("$${", i):
            literal.append("${")
            i += 3
        elif value.startswith("${", i):
            depth, j, in_string = 0, i + 2, False
            while j < len(value):
                char = value[j]
                if in_string:
                    if char == "\\":
                        j += 1
                    elif char == '"':
                        in_string = False
                elif char == '"':
                    in_string = True
                elif char == "{":
                    depth += 1
                elif char == "}":
                    if depth == 0:
                        break
                    depth -= 1
                j += 1
            yield "".join(literal), value[i + 2 : j]
            literal, i = [], j + 1
        else:
            literal.append(value[i])
            i += 1
    if literal or not value:
        yield "".join(literal), None


def _string_end(text: str, start: int) -> int:
    """The index of the quote that closes the string opening at ``text[start]``."""
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == '"':
            return i
        if text.startswith("${", i):
            i = _bracket_end(text, i + 1)
        i += 1
    raise Unevaluable(f"unterminated string in {text}")


def _bracket_end(text: str, start: int) -> int:
    """The index of the bracket that closes the one at ``text[start]`` (strings skipped)."""
    closing = {"(": ")", "[": "]", "{": "}"}[text[start]]
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _string_end(text, i)
        elif char in "([{":
            i = _bracket_end(text, i)
        elif char == closing:
            return i
        i += 1
    raise Unevaluable(f"unbalanced {text[start]} in {text}")


def _top_level(text: str) -> Iterator[tuple[int, str]]:
    """``(index, char)`` of the characters outside strings and brackets."""
    i = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            i = _string_end(text, i)
        elif char in "([{":
            i = _bracket_end(text, i)
        else:
            yield i, char
        i += 1


def _top_level_split(text: str, separator: str) -> list[str]:
    """``text`` split at the separators outside strings and brackets."""
    cuts = [i for i, char in _top_level(text) if char == separator]
    bounds = [-1, *cuts, len(text)]
    return [text[a + 1 : b].strip() for a, b in itertools.pairwise(bounds)]


def _conditional(text: str) -> tuple[str, str, str] | None:
    """``(condition, true, false)`` of ``condition ? true : false``, or None."""
    marks = [(i, char) for i, char in _top_level(text) if char in "?:"]
    if not marks or marks[0][1] != "?":
        return None
    depth = 0
    for i, char in marks[1:]:
        if char == "?":
            depth += 1
        elif depth:
            depth -= 1
        else:
            question = marks[0][0]
            return text[:question].strip(), text[question + 1 : i].strip(), text[i + 1 :].strip()
    return None


def _comparison(text: str) -> tuple[str, str, str] | None:
    """``(left, "==" or "!=", right)`` of a comparison outside strings and brackets, or None."""
    marks = list(_top_level(text))
    for (i, first), (j, second) in itertools.pairwise(marks):
        if j == i + 1 and first in "=!" and second == "=":
            return text[:i].strip(), first + second, text[j + 1 :].strip()
    return None


def _path_parts(text: str) -> list[str | int | tuple[str, str]]:
    """``a.b["c"][0][each.key].d`` -> ``["a", "b", "c", 0, ("ref", "each.key"), "d"]``."""
    pattern = r'\.?([A-Za-z_][\w-]*)|\["([^"]*)"\]|\[(\d+)\]|\[([a-z_.]+)\]'
    tokens = re.findall(pattern, text)
    if re.sub(pattern, "", text).strip() or not tokens:
        raise Unevaluable(text)
    parts: list[str | int | tuple[str, str]] = []
    for name, key, index, ref in tokens:
        if ref:
            parts.append(("ref", ref))
        elif index:
            parts.append(int(index))
        else:
            parts.append(name or key)
    return parts


def _one(blocks: Any) -> Mapping[str, Any]:
    assert isinstance(blocks, list), blocks
    assert len(blocks) == 1, blocks
    block = blocks[0]
    assert isinstance(block, dict)
    return block


def address(value: Any) -> tuple[str, str] | None:
    """The (type, name) a reference such as ``${google_pubsub_topic.ready.id}`` points at."""
    match = REF.match(value) if isinstance(value, str) else None
    return (match["type"], match["name"]) if match else None


def _load(directory: Path) -> Terraform:
    options = SerializationOptions(
        with_comments=False, explicit_blocks=False, strip_string_quotes=True
    )
    resources: dict[str, dict[str, dict[str, Any]]] = {}
    local_values: dict[str, Any] = {}
    variables: dict[str, dict[str, Any]] = {}
    modules: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open(encoding="utf-8") as handle:
            document = hcl2.load(handle, serialization_options=options)
        for block in document.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    assert name not in resources.setdefault(kind, {}), f"{kind}.{name} twice"
                    resources[kind][name] = body
        for block in document.get("locals", []):
            local_values.update(block)
        for block in document.get("variable", []):
            variables.update(block)
        for block in document.get("module", []):
            modules.update(block)
    return Terraform(resources, local_values, variables, modules)


@functools.cache
def terraform() -> Terraform:
    """Every ``*.tf`` file of the module (the examples are separate roots)."""
    return _load(TERRAFORM)


def functions_map() -> Mapping[str, Mapping[str, Any]]:
    """``local.functions``: the one description of the three functions."""
    found = terraform().locals["functions"]
    assert isinstance(found, dict)
    return found


def function_entry(spec: FunctionSpec) -> Mapping[str, Any]:
    """The entry of ``local.functions`` for ``spec``."""
    entries = functions_map()
    assert spec.name in entries, f"local.functions has {sorted(entries)}, not {spec.name}"
    return entries[spec.name]


def function_resource() -> Mapping[str, Any]:
    """The one google_cloudfunctions2_function, made from ``local.functions``."""
    (body,) = terraform().of_type("google_cloudfunctions2_function").values()
    assert body["for_each"] == "${local.functions}"
    return body


def deployed_name(name: str, scope: Scope | None = None) -> str:
    """The planned name of function ``name``."""
    tf = terraform()
    body = function_resource()
    value = tf.evaluate(
        body["name"], Scope((scope or Scope()).variables, (name, functions_map()[name]))
    )
    assert isinstance(value, str)
    return value


def push_subscriptions() -> dict[str, dict[str, Any]]:
    """``local.push_subscriptions``: every function's pushes by key, with its function.

    The HCL flattens ``local.functions[*].pushes`` with a ``for`` expression, which this
    mirrors; the test below checks that the expression is this flattening.
    """
    found: dict[str, dict[str, Any]] = {}
    for function, entry in functions_map().items():
        for key, push in entry["pushes"].items():
            assert key not in found, f"push subscription {key} twice"
            found[key] = {**push, "function": function}
    return found


def bigquery_instances(scope: Scope) -> dict[str, dict[str, str]]:
    """``local.bigquery``: ``{"source": {project, dataset, table}}`` when
    ``var.bigquery_source_table`` is set in ``scope`` (else its default), or ``{}``.

    The HCL splits the variable with a conditional, which this mirrors; a test below checks
    that the expression is this split.
    """
    table = scope.variables.get(
        "bigquery_source_table", terraform().default("bigquery_source_table")
    )
    if table is None:
        return {}
    project, dataset, name = str(table).split(".")
    return {"source": {"project": project, "dataset": dataset, "table": name}}


def topic_key_name(key: str, scope: Scope | None = None) -> str:
    """The planned name of the topic ``local.topics[key]``."""
    tf = terraform()
    reference = tf.locals["topics"][key]
    match = re.fullmatch(r"\$\{google_pubsub_topic\.(\w+)\}", reference)
    assert match, reference
    name = tf.evaluate(tf.of_type("google_pubsub_topic")[match[1]]["name"], scope)
    assert isinstance(name, str)
    return name


def topic_name(reference: Any) -> str:
    """The name of the topic a reference points at (asserting that topic exists)."""
    ref = address(reference)
    assert ref is not None, f"{reference} is not a reference"
    assert ref[0] == "google_pubsub_topic", f"{reference} is not a topic"
    body = terraform().of_type("google_pubsub_topic").get(ref[1])
    assert body is not None, f"{reference}: no such topic"
    name = terraform().evaluate(body["name"])
    assert isinstance(name, str)
    return name


def flattened(local: str) -> str:
    """The text of a local, whitespace collapsed (python-hcl2 writes ``] ...`` for ``]...``)."""
    return re.sub(r"\s+", " ", str(terraform().locals[local])).replace("] ...", "]...")


# --- the code ------------------------------------------------------------------------------


def _env_call(node: ast.AST) -> tuple[str, str | None] | None:
    """``(name, default)`` of ``env.get``, ``need``, ``key32`` and ``integer`` calls."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    first = node.args[0]
    if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
        return None
    func = node.func
    is_get = (
        isinstance(func, ast.Attribute)
        and func.attr == "get"
        and isinstance(func.value, ast.Name)
        and func.value.id in {"env", "environ"}
    )
    if not (is_get or (isinstance(func, ast.Name) and func.id in {"need", "key32", "integer"})):
        return None
    if not ENV_NAME.fullmatch(first.value):
        return None
    default = node.args[1] if len(node.args) > 1 else None
    literal = default.value if isinstance(default, ast.Constant) else None
    return first.value, literal if isinstance(literal, str) else None


@dataclass(frozen=True)
class ConfigFacts:
    """What ``config.py`` reads: env names (with string defaults) and Settings field -> env."""

    env_defaults: Mapping[str, str | None]
    required: frozenset[str]
    field_env: Mapping[str, str]
    property_fields: Mapping[str, frozenset[str]]


@functools.cache
def config_facts() -> ConfigFacts:
    """Read config.py with ``ast``."""
    tree = ast.parse(CONFIG.read_text("utf-8"))
    env_defaults: dict[str, str | None] = {}
    required: set[str] = set()
    for node in ast.walk(tree):
        found = _env_call(node)
        if found:
            env_defaults[found[0]] = env_defaults.get(found[0]) or found[1]
            func = node.func if isinstance(node, ast.Call) else None
            if isinstance(func, ast.Name) and func.id == "need":
                required.add(found[0])
    settings = next(
        n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Settings"
    )
    from_env = next(
        n for n in ast.walk(settings) if isinstance(n, ast.FunctionDef) and n.name == "from_env"
    )
    assigned = {
        n.targets[0].id: n.value
        for n in ast.walk(from_env)
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)
    }

    def env_of(expr: ast.AST, seen: frozenset[str] = frozenset()) -> str | None:
        for sub in ast.walk(expr):
            found = _env_call(sub)
            if found:
                return found[0]
        for sub in ast.walk(expr):
            if isinstance(sub, ast.Name) and sub.id in assigned and sub.id not in seen:
                return env_of(assigned[sub.id], seen | {sub.id})
        return None

    construct = next(
        n
        for n in ast.walk(from_env)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "cls"
    )
    field_env = {}
    for keyword in construct.keywords:
        name = env_of(keyword.value)
        assert keyword.arg is not None
        assert name is not None, f"cannot tell which variable sets Settings.{keyword.arg}"
        field_env[keyword.arg] = name
    property_fields = {
        n.name: frozenset(
            a.attr
            for a in ast.walk(n)
            if isinstance(a, ast.Attribute)
            and isinstance(a.value, ast.Name)
            and a.value.id == "self"
        )
        for n in settings.body
        if isinstance(n, ast.FunctionDef)
        and any(isinstance(d, ast.Name) and d.id == "property" for d in n.decorator_list)
    }
    return ConfigFacts(env_defaults, frozenset(required), field_env, property_fields)


@dataclass(frozen=True)
class FunctionFacts:
    """What one function's code uses: entry point, trigger, settings, topics, paths."""

    entry_points: Mapping[str, str]
    settings_used: frozenset[str]
    settings_required: frozenset[str]
    published_settings: frozenset[str]
    literals: frozenset[str]


def _settings_attrs(tree: ast.AST) -> set[str]:
    return {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute)
        and isinstance(n.value, ast.Name)
        and n.value.id == "settings"
    }


def _wiring_functions() -> dict[str, ast.FunctionDef]:
    tree = ast.parse(WIRING.read_text("utf-8"))
    return {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}


def _reachable(names: set[str], defs: Mapping[str, ast.FunctionDef]) -> Iterator[ast.FunctionDef]:
    seen: set[str] = set()
    todo = [n for n in names if n in defs]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        yield defs[name]
        todo.extend(
            c.func.id
            for c in ast.walk(defs[name])
            if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id in defs
        )


@functools.cache
def function_facts(name: str) -> FunctionFacts:
    """Read ``functions/<name>/main.py`` and the wiring.py builders it calls."""
    main = ast.parse((REPO / "functions" / name / "main.py").read_text("utf-8"))
    entry_points = {}
    for node in main.body:
        if isinstance(node, ast.FunctionDef):
            for decorator in node.decorator_list:
                if (
                    isinstance(decorator, ast.Attribute)
                    and isinstance(decorator.value, ast.Name)
                    and decorator.value.id == "functions_framework"
                    and decorator.attr in {"http", "cloud_event"}
                ):
                    entry_points[node.name] = decorator.attr
    builders = {
        alias.asname or alias.name
        for node in ast.walk(main)
        if isinstance(node, ast.ImportFrom) and node.module == "dataset_export.wiring"
        for alias in node.names
    }
    used = _settings_attrs(main)
    required: set[str] = set()
    published: set[str] = set()
    for fn in _reachable(builders, _wiring_functions()):
        used |= _settings_attrs(fn)
        for call in ast.walk(fn):
            if not isinstance(call, ast.Call):
                continue
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr == "require":
                required |= {a.value for a in call.args if isinstance(a, ast.Constant)}
            if isinstance(func, ast.Name) and func.id == "PubSubPublisher" and len(call.args) > 1:
                topic = call.args[1]
                assert isinstance(topic, ast.Attribute), ast.dump(topic)
                published.add(topic.attr)
    literals = frozenset(
        n.value for n in ast.walk(main) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    )
    return FunctionFacts(
        entry_points,
        frozenset(used - {"require"}),
        frozenset(required),
        frozenset(published),
        literals,
    )


def env_names_of(settings_attrs: frozenset[str]) -> set[str]:
    """The environment variables behind Settings fields and properties."""
    facts = config_facts()
    names: set[str] = set()
    for attr in settings_attrs:
        fields = facts.property_fields.get(attr, frozenset({attr}))
        for field in fields:
            assert field in facts.field_env, f"settings.{attr} is not a Settings field"
            names.add(facts.field_env[field])
    return names


SPECS = sorted(FUNCTIONS.values(), key=lambda s: s.name)
IDS = [s.name for s in SPECS]


# --- code <-> manifest ---------------------------------------------------------------------


def test_every_function_folder_is_in_the_manifest() -> None:
    """The manifest lists exactly the folders under functions/."""
    folders = {p.parent.name for p in (REPO / "functions").glob("*/main.py")}
    assert folders == set(FUNCTIONS)


def test_manifest_accounts_for_every_setting_config_reads() -> None:
    """Each variable config.py reads is deployed to some function or listed as not deployed."""
    read = set(config_facts().env_defaults)
    deployed = set().union(*(s.env | s.secrets for s in SPECS))
    assert read == deployed | set(NOT_DEPLOYED), (
        f"read by config.py only: {sorted(read - deployed - set(NOT_DEPLOYED))}; "
        f"in the manifest only: {sorted((deployed | set(NOT_DEPLOYED)) - read)}"
    )
    assert not deployed & set(NOT_DEPLOYED)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_manifest_matches_what_each_function_reads(spec: FunctionSpec) -> None:
    """A function's settings (main.py and its wiring builders) are exactly its manifest env."""
    facts = function_facts(spec.name)
    used = env_names_of(facts.settings_used)
    required = env_names_of(facts.settings_required)
    deployable = spec.env | spec.secrets
    assert used - deployable <= set(NOT_DEPLOYED), (
        f"{spec.name} reads {sorted(used - deployable - set(NOT_DEPLOYED))} "
        "but the manifest does not deploy them"
    )
    assert required <= deployable, f"{spec.name} requires {sorted(required - deployable)}"
    assert config_facts().required <= spec.env, "config.py's need() settings go everywhere"
    assert spec.env >= COMMON_ENV
    unused = deployable - used - COMMON_ENV
    assert not unused, (
        f"the manifest deploys {sorted(unused)} to {spec.name}, which never reads them"
    )


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_manifest_names_the_topics_each_function_publishes_to(spec: FunctionSpec) -> None:
    """The topics a function's publishers are built with are its manifest's ``publishes``."""
    published = env_names_of(function_facts(spec.name).published_settings)
    assert published == set(spec.publishes)
    assert spec.publishes <= spec.env


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_entry_point_and_trigger_type_match_the_code(spec: FunctionSpec) -> None:
    """main.py defines the manifest's entry point with the matching decorator."""
    entry_points = function_facts(spec.name).entry_points
    assert spec.entry_point in entry_points, f"main.py defines {sorted(entry_points)}"
    expected = "http" if spec.trigger == "http" else "cloud_event"
    assert entry_points[spec.entry_point] == expected


@pytest.mark.parametrize(
    ("spec", "path"),
    [(s, p.path) for s in SPECS for p in s.pushes if p.path != "/"],
    ids=lambda v: v if isinstance(v, str) else v.name,
)
def test_every_push_path_is_handled_by_the_function(spec: FunctionSpec, path: str) -> None:
    """A subscription pushing to a path other than / targets a path main.py looks for."""
    assert path in function_facts(spec.name).literals


def test_topics_the_code_defaults_to_are_the_manifest_topics() -> None:
    """config.py's default topic names are the deployment's topic names."""
    defaults = {
        name: default
        for name, default in config_facts().env_defaults.items()
        if name.endswith("_TOPIC")
    }
    assert set(defaults.values()) <= TOPICS
    assert defaults.get("EXPORT_DEAD_LETTER_TOPIC") == DEAD_LETTER_TOPIC


# --- manifest <-> Terraform ----------------------------------------------------------------


def test_local_functions_is_the_manifest_and_makes_the_resources() -> None:
    """The map names the manifest's functions; functions, accounts and IAM iterate over it."""
    tf = terraform()
    assert set(functions_map()) == set(FUNCTIONS)
    assert function_resource()["for_each"] == "${local.functions}"
    for kind, name in [
        ("google_service_account", "function"),
        ("google_project_iam_member", "function_uses_firestore"),
        ("google_cloud_run_v2_service_iam_member", "function_invoker"),
        ("google_storage_bucket_object", "bundle"),
    ]:
        assert tf.of_type(kind)[name]["for_each"] == "${local.functions}", f"{kind}.{name}"
    for kind, name, local in [
        ("google_pubsub_topic_iam_member", "function_publishes", "function_publishes"),
        ("google_secret_manager_secret_iam_member", "function_reads_secret", "function_secrets"),
        ("google_storage_bucket_iam_member", "function_bucket_role", "function_bucket_roles"),
        ("google_pubsub_subscription", "push", "push_subscriptions"),
    ]:
        assert tf.of_type(kind)[name]["for_each"] == f"${{local.{local}}}", f"{kind}.{name}"
    # The one flattening push_subscriptions() mirrors.
    assert flattened("push_subscriptions") == (
        "${merge([for function, spec in local.functions : "
        "{for key, push in spec.pushes : key => merge(push, {function = function})}]...)}"
    )


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_terraform_sets_exactly_the_environment_each_function_reads(spec: FunctionSpec) -> None:
    """Plain and secret environment variables in the map are the manifest's, no more, no less."""
    entry = function_entry(spec)
    plain = set(entry["environment"])
    secret = set(entry["secrets"])
    assert plain == set(spec.env), (
        f"missing: {sorted(spec.env - plain)}; not read by {spec.name}: {sorted(plain - spec.env)}"
    )
    assert secret == set(spec.secrets), (
        f"missing: {sorted(spec.secrets - secret)}; extra: {sorted(secret - spec.secrets)}"
    )
    assert not plain & secret
    assert entry["environment"].get("EXPORT_ENV") == "production"
    service = _one(function_resource()["service_config"])
    assert service["environment_variables"] == "${each.value.environment}"
    (dynamic,) = service["dynamic"]
    mounted = dynamic["secret_environment_variables"]
    assert mounted["for_each"] == "${each.value.secrets}"
    assert _one(mounted["content"])["key"] == "${secret_environment_variables.key}"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_terraform_entry_point_runtime_and_bundle_match(spec: FunctionSpec) -> None:
    """Entry point, trigger, Python runtime and bundle object are the function's own."""
    tf = terraform()
    entry = function_entry(spec)
    assert entry["entry_point"] == spec.entry_point
    assert entry["trigger"] == spec.trigger
    build = _one(function_resource()["build_config"])
    assert build["entry_point"] == "${each.value.entry_point}"
    assert build["runtime"] == "${var.python_runtime}"
    assert tf.default("python_runtime") == "python311"
    storage = _one(_one(build["source"])["storage_source"])
    assert storage["object"] == "${google_storage_bucket_object.bundle[each.key].name}"
    assert deployed_name(spec.name) == spec.deployed_name
    assert tf.evaluate("${local.function_names}")[spec.name] == spec.deployed_name


def test_each_function_runs_as_its_own_service_account() -> None:
    """Three functions, three runtime service accounts with distinct IDs."""
    tf = terraform()
    service = _one(function_resource()["service_config"])
    assert service["service_account_email"] == "${google_service_account.function[each.key].email}"
    body = tf.of_type("google_service_account")["function"]
    ids = {tf.evaluate(body["account_id"], Scope(each=(name, {}))) for name in functions_map()}
    assert len(ids) == len(FUNCTIONS)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_topic_variables_name_existing_topics_the_code_agrees_on(spec: FunctionSpec) -> None:
    """Each *_TOPIC variable points at a declared topic whose name is config.py's default."""
    for name, value in function_entry(spec)["environment"].items():
        if name.endswith("_TOPIC"):
            defaults = config_facts().env_defaults
            assert name in defaults, f"Terraform sets {name}, which config.py never reads"
            assert topic_name(value) == defaults[name], name


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_functions_may_publish_to_their_topics_and_those_are_consumed(spec: FunctionSpec) -> None:
    """The map's ``publishes`` are the topics of the manifest's, each pushed somewhere."""
    tf = terraform()
    entry = function_entry(spec)
    environment = entry["environment"]
    wanted = {topic_name(environment[variable]) for variable in spec.publishes}
    granted = {topic_key_name(key) for key in entry["publishes"]}
    assert granted == wanted, f"{spec.name} may publish to {granted}, needs {wanted}"
    pushed = {p.topic for s in SPECS for p in s.pushes}
    assert wanted <= pushed
    binding = tf.of_type("google_pubsub_topic_iam_member")["function_publishes"]
    assert binding["role"] == "roles/pubsub.publisher"
    assert binding["topic"] == "${local.topics[each.value.topic].name}"
    assert binding["member"] == "${google_service_account.function[each.value.function].member}"
    assert flattened("function_publishes") == (
        "${merge([for function, spec in local.functions : {for topic in spec.publishes : "
        '"${function}-${topic}" => {function = function, topic = topic}}]...)}'
    )


def test_terraform_declares_the_manifest_topics() -> None:
    """The HCL declares exactly the manifest's topics, and local.topics names them all."""
    tf = terraform()
    names = {tf.evaluate(t["name"]) for t in tf.of_type("google_pubsub_topic").values()}
    assert names == set(TOPICS)
    assert {topic_key_name(key) for key in tf.locals["topics"]} == set(TOPICS)


@pytest.mark.parametrize(
    ("spec", "push"),
    [(s, p) for s in SPECS for p in s.pushes],
    ids=lambda v: v.subscription if hasattr(v, "subscription") else v.name,
)
def test_push_subscriptions_deliver_the_manifest_topics(spec: FunctionSpec, push: Any) -> None:
    """Topic, function, path, deadline, retention and dead-lettering match the manifest."""
    tf = terraform()
    body = tf.of_type("google_pubsub_subscription")["push"]
    planned = {
        tf.evaluate(body["name"], Scope(each=(key, value))): value
        for key, value in push_subscriptions().items()
    }
    assert push.subscription in planned, sorted(planned)
    entry = planned[push.subscription]
    assert entry["function"] == spec.name
    assert topic_key_name(entry["topic"]) == push.topic
    assert entry["path"] == push.path
    assert entry["ack_deadline_seconds"] == push.ack_deadline_seconds
    assert entry["retention_seconds"] == push.retention_seconds
    assert entry["max_delivery_attempts"] == push.max_delivery_attempts
    sizing = tf.evaluate(function_entry(spec)["sizing"])
    if (spec.name, push.path) in LONG_HANDLERS:
        assert push.ack_deadline_seconds > sizing["timeout_seconds"], "it would be pushed again"
    assert push.ack_deadline_seconds <= MAX_ACK_DEADLINE


def test_push_subscriptions_take_each_value_from_the_map() -> None:
    """The subscription resource uses the map's topic, path, deadline and dead-lettering."""
    body = terraform().of_type("google_pubsub_subscription")["push"]
    assert body["topic"] == "${local.topics[each.value.topic].id}"
    assert body["ack_deadline_seconds"] == "${each.value.ack_deadline_seconds}"
    assert body["message_retention_duration"] == "${each.value.retention_seconds}s"
    push = _one(body["push_config"])
    uri = "${google_cloudfunctions2_function.this[each.value.function].service_config[0].uri}"
    assert push["push_endpoint"] == uri + '${trimsuffix(each.value.path, "/")}'
    token = _one(push["oidc_token"])
    assert token["audience"] == uri
    assert token["service_account_email"] == "${google_service_account.pubsub_push.email}"
    (dynamic,) = body["dynamic"]
    policy = dynamic["dead_letter_policy"]
    assert policy["for_each"] == (
        "${each.value.max_delivery_attempts == null ? [] : [each.value.max_delivery_attempts]}"
    )
    content = _one(policy["content"])
    assert content["max_delivery_attempts"] == "${dead_letter_policy.value}"
    assert topic_name(content["dead_letter_topic"]) == DEAD_LETTER_TOPIC


def test_no_subscription_outside_the_manifest() -> None:
    """Every push subscription in the HCL is one the manifest knows."""
    tf = terraform()
    assert set(tf.of_type("google_pubsub_subscription")) == {"push"}
    body = tf.of_type("google_pubsub_subscription")["push"]
    planned = {
        tf.evaluate(body["name"], Scope(each=(k, v))) for k, v in push_subscriptions().items()
    }
    assert planned == {p.subscription for s in SPECS for p in s.pushes}


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_only_trigger_identities_may_invoke(spec: FunctionSpec) -> None:
    """HTTP: public ingress and allUsers; Pub/Sub-triggered: internal, the push identity only."""
    tf = terraform()
    entry = function_entry(spec)
    assert (
        _one(function_resource()["service_config"])["ingress_settings"] == "${each.value.ingress}"
    )
    binding = tf.of_type("google_cloud_run_v2_service_iam_member")["function_invoker"]
    assert binding["name"] == "${google_cloudfunctions2_function.this[each.key].name}"
    assert binding["role"] == "roles/run.invoker"
    assert binding["member"] == (
        '${each.value.invoker == "allUsers" ? "allUsers" : '
        "google_service_account.pubsub_push.member}"
    )
    if spec.trigger == "http":
        assert entry["ingress"] == "ALLOW_ALL"
        assert entry["invoker"] == "allUsers"
        assert entry["pushes"] == {}
        return
    assert entry["ingress"] == "ALLOW_INTERNAL_ONLY"
    assert entry["invoker"] == "pubsub_push"
    assert entry["pushes"], f"{spec.name} is pushed nothing"


def test_pubsub_agent_can_dead_letter_and_mint_push_tokens() -> None:
    """Publisher on the dead-letter topic, subscriber on each dead-lettering subscription."""
    tf = terraform()
    agent = tf.locals["pubsub_agent"]
    assert "@gcp-sa-pubsub.iam.gserviceaccount.com" in agent
    publishes = tf.of_type("google_pubsub_topic_iam_member")["pubsub_agent_publishes_dead_letters"]
    assert topic_name(publishes["topic"]) == DEAD_LETTER_TOPIC
    assert publishes["member"] == "${local.pubsub_agent}"
    forwards = tf.of_type("google_pubsub_subscription_iam_member")[
        "pubsub_agent_forwards_dead_letters"
    ]
    assert forwards["for_each"] == (
        "${{for key, push in local.push_subscriptions : key => push "
        "if push.max_delivery_attempts != null}}"
    )
    assert forwards["subscription"] == "${google_pubsub_subscription.push[each.key].name}"
    dead_lettering = {
        f"export-{key}"
        for key, push in push_subscriptions().items()
        if push["max_delivery_attempts"] is not None
    }
    assert dead_lettering == {
        p.subscription for s in SPECS for p in s.pushes if p.max_delivery_attempts is not None
    }
    assert "export-parts-process" in dead_lettering
    assert forwards["role"] == "roles/pubsub.subscriber"
    assert forwards["member"] == "${local.pubsub_agent}"
    mints = tf.of_type("google_service_account_iam_member")["pubsub_agent_mints_push_tokens"]
    assert mints["service_account_id"] == "${google_service_account.pubsub_push.name}"
    assert mints["role"] == "roles/iam.serviceAccountTokenCreator"
    assert mints["member"] == "${local.pubsub_agent}"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_secrets_are_mounted_pinned_and_readable(spec: FunctionSpec) -> None:
    """Each secret names a declared secret, mounted at the pinned version, that it may read."""
    tf = terraform()
    service = _one(function_resource()["service_config"])
    (dynamic,) = service["dynamic"]
    content = _one(dynamic["secret_environment_variables"]["content"])
    assert content["secret"] == (
        "${google_secret_manager_secret.this[secret_environment_variables.value].secret_id}"
    )
    assert content["version"] == (
        "${google_secret_manager_secret_version.this[secret_environment_variables.value].version}"
    )
    for secret in function_entry(spec)["secrets"].values():
        assert secret in tf.locals["secrets"], secret
    for kind in ("google_secret_manager_secret", "google_secret_manager_secret_version"):
        assert tf.of_type(kind)["this"]["for_each"] == "${local.secrets}"
    reads = tf.of_type("google_secret_manager_secret_iam_member")["function_reads_secret"]
    assert reads["secret_id"] == "${google_secret_manager_secret.this[each.value.secret].secret_id}"
    assert reads["role"] == "roles/secretmanager.secretAccessor"
    assert reads["member"] == "${google_service_account.function[each.value.function].member}"
    assert flattened("function_secrets") == (
        "${merge([for function, spec in local.functions : {for variable, secret in spec.secrets : "
        '"${function}-${secret}" => {function = function, secret = secret}}]...)}'
    )


def test_submit_signs_urls_as_itself_and_may_read_exports() -> None:
    """signBlob on its own account only, and read access to the objects it signs URLs for."""
    tf = terraform()
    signs = tf.of_type("google_service_account_iam_member")["submit_signs_as_itself"]
    assert signs["service_account_id"] == '${google_service_account.function["submit"].name}'
    assert signs["member"] == '${google_service_account.function["submit"].member}'
    assert signs["role"] == "roles/iam.serviceAccountTokenCreator"
    roles = function_entry(FUNCTIONS["submit"])["bucket_roles"]
    assert {
        "bucket": "exports",
        "role": "roles/storage.objectViewer",
        "object_prefix": None,
    } in roles
    assert tf.locals["buckets"]["exports"] == "${google_storage_bucket.exports}"
    grant = tf.of_type("google_storage_bucket_iam_member")["function_bucket_role"]
    assert grant["bucket"] == "${local.buckets[each.value.bucket].name}"
    assert grant["role"] == "${each.value.role}"
    assert grant["member"] == "${google_service_account.function[each.value.function].member}"


#: Project-level roles granted without a condition, because their permissions exist only on
#: projects: log writing (the builder), BigQuery jobs and Storage Read sessions (process, only
#: with a BigQuery source). None of them reads or writes any data by itself.
UNCONDITIONED_PROJECT_ROLES = {
    "roles/logging.logWriter",
    "roles/bigquery.jobUser",
    "roles/bigquery.readSessionUser",
}


def test_no_primitive_or_broad_project_roles() -> None:
    """Project-level grants: Firestore and the source read, each limited by a condition; logs,
    BigQuery jobs and read sessions, which exist only on projects."""
    allowed = {"roles/datastore.user", "roles/storage.objectViewer"} | UNCONDITIONED_PROJECT_ROLES
    for name, body in terraform().of_type("google_project_iam_member").items():
        assert body["role"] in allowed, name
        if body["role"] not in UNCONDITIONED_PROJECT_ROLES:
            assert "condition" in body, f"{name} must be limited by a condition"
    for entry in functions_map().values():
        assert all(
            grant["role"].startswith("roles/storage.object") for grant in entry["bucket_roles"]
        )


def test_retry_tick_is_scheduled_onto_the_tick_topic() -> None:
    """Cloud Scheduler publishes ``kind=retry-tick`` messages to the topic pushed to /tick."""
    job = _one(list(terraform().of_type("google_cloud_scheduler_job").values()))
    target = _one(job["pubsub_target"])
    assert topic_name(target["topic_name"]) == RETRY_TICK_TOPIC
    assert target["attributes"] == {"kind": RETRY_TICK_KIND}
    from dataset_export_tools.localstack import scheduler

    assert scheduler.TICK_KIND == RETRY_TICK_KIND


def test_local_stack_mirrors_the_manifest_subscriptions() -> None:
    """The emulator stack creates the same subscriptions with the same delivery limits."""
    from dataset_export_tools.localstack import provisioning

    pushes = {p.subscription: p for s in SPECS for p in s.pushes}
    assert pushes[provisioning.PROCESS_SUBSCRIPTION].topic == provisioning.REQUESTS_TOPIC
    assert pushes[provisioning.PROCESS_SUBSCRIPTION].max_delivery_attempts == (
        provisioning.PROCESS_MAX_DELIVERY_ATTEMPTS
    )
    assert (
        pushes[provisioning.PROCESS_SUBSCRIPTION].ack_deadline_seconds
        == provisioning.PROCESS_ACK_DEADLINE
    )
    assert pushes[provisioning.NOTIFY_SUBSCRIPTION].topic == provisioning.READY_TOPIC
    assert (
        pushes[provisioning.NOTIFY_SUBSCRIPTION].max_delivery_attempts
        == provisioning.MAX_DELIVERY_ATTEMPTS
    )
    assert (
        pushes[provisioning.NOTIFY_SUBSCRIPTION].ack_deadline_seconds
        == provisioning.NOTIFY_ACK_DEADLINE
    )
    parts_push = pushes[provisioning.PARTS_SUBSCRIPTION]
    assert parts_push.topic == provisioning.PARTS_TOPIC == PARTS_TOPIC
    assert parts_push.path == "/"
    assert parts_push.max_delivery_attempts == provisioning.PROCESS_MAX_DELIVERY_ATTEMPTS
    assert parts_push.ack_deadline_seconds == provisioning.PROCESS_ACK_DEADLINE
    assert pushes[provisioning.DEAD_LETTER_SUBSCRIPTION].topic == provisioning.DEAD_LETTER_TOPIC
    assert pushes[provisioning.TICK_SUBSCRIPTION].topic == provisioning.TICK_TOPIC


def test_firestore_ttl_policies_cover_the_expiring_collections() -> None:
    """TTL on expiresOn of exactly the collections the store writes expiresOn into."""
    from dataset_export.adapters import firestore_store

    tf = terraform()
    ttl = set()
    for body in tf.of_type("google_firestore_field").values():
        if "ttl_config" not in body:
            continue
        instances = tf.for_each(body) if "for_each" in body else {None: None}
        for key, value in instances.items():
            scope = Scope(each=None if key is None else (key, value))
            ttl.add((tf.evaluate(body["collection"], scope), tf.evaluate(body["field"], scope)))
    assert ttl == {
        (firestore_store.IDEMPOTENCY, "expiresOn"),
        (firestore_store.RATE_LIMITS, "expiresOn"),
        (firestore_store.DATASET_VERSIONS, "expiresOn"),
    }
    source = Path(firestore_store.__file__).read_text("utf-8")
    assert source.count('"expiresOn"') >= 3


# --- Firestore: one database per deployment ------------------------------------------------

#: Database IDs, and whether Firestore takes them (4-63 characters of a-z, 0-9 and hyphens, a
#: letter first, no hyphen last, not UUID-like; or "(default)").
DATABASE_IDS = {
    "(default)": True,
    "export-db": True,
    "a-db": True,
    "default": True,
    "a" * 63: True,
    "abc": False,
    "a" * 64: False,
    "": False,
    "Export-db": False,
    "(DEFAULT)": False,
    "1abc": False,
    "abc-": False,
    "ab_c": False,
    "af8fad5b-d9cb-469f-a165-70867728950e": False,
}


def test_every_function_uses_the_database_the_module_makes() -> None:
    """Each function is given the database this module creates, whose fields it also manages."""
    tf = terraform()
    for spec in SPECS:
        assert "EXPORT_FIRESTORE_DATABASE" in spec.env, spec.name
        environment = function_entry(spec)["environment"]
        assert environment["EXPORT_FIRESTORE_DATABASE"] == "${local.firestore_database}"
    database = tf.of_type("google_firestore_database")["this"]
    assert database["name"] == "${local.firestore_database_id}"
    assert database["count"] == "${var.create_firestore_database ? 1 : 0}"
    # Functions, fields and IAM wait for the database: the local is its name when it is made.
    assert "google_firestore_database.this[0].name" in tf.locals["firestore_database"]
    for name, body in tf.of_type("google_firestore_field").items():
        assert body["database"] == "${local.firestore_database}", name
    assert tf.evaluate("${local.firestore_database}") == "export-db"
    existing = Scope({"create_firestore_database": False})
    assert tf.evaluate("${local.firestore_database}", existing) == "export-db"


def test_the_code_defaults_to_the_projects_database_which_terraform_can_choose() -> None:
    """config.py defaults to ``(default)``; Terraform always sets the variable, to that if asked."""
    tf = terraform()
    assert config_facts().field_env["firestore_database"] == "EXPORT_FIRESTORE_DATABASE"
    assert DEFAULT_FIRESTORE_DATABASE == "(default)"
    minimal = {"GOOGLE_CLOUD_PROJECT": "p", "EXPORT_BUCKET": "b"}
    assert Settings.from_env(minimal).firestore_database == DEFAULT_FIRESTORE_DATABASE
    assert tf.default("firestore_database") is None
    assert tf.evaluate("${local.firestore_database}", Scope({"prefix": "staging"})) == "staging-db"
    chosen = Scope({"firestore_database": DEFAULT_FIRESTORE_DATABASE, "prefix": "staging"})
    assert tf.evaluate("${local.firestore_database}", chosen) == DEFAULT_FIRESTORE_DATABASE


@pytest.mark.parametrize("directory", ["", "examples/simple"])
def test_terraform_and_the_code_accept_the_same_database_ids(directory: str) -> None:
    """var.firestore_database's validation and config.py's check agree on every sample ID."""
    variable = _load(TERRAFORM / directory).variables["firestore_database"]
    assert variable["default"] is None
    condition = str(_one(variable["validation"])["condition"])
    assert "var.firestore_database == null" in condition
    assert f'var.firestore_database == "{DEFAULT_FIRESTORE_DATABASE}"' in condition
    id_rule, uuid_rule = re.findall(r'regex\("\^(.*?)\$", var\.firestore_database\)', condition)
    assert f'!can(regex("^{uuid_rule}$"' in condition
    for value, valid in DATABASE_IDS.items():
        in_terraform = value == DEFAULT_FIRESTORE_DATABASE or bool(
            re.fullmatch(id_rule, value) and not re.fullmatch(uuid_rule, value)
        )
        assert in_terraform == valid, f"Terraform on {value!r}"
        assert (firestore_database_problem(value) is None) == valid, f"config.py on {value!r}"


def test_firestore_access_is_limited_to_the_deployments_database() -> None:
    """roles/datastore.user is conditioned on this deployment's database, so two never share."""
    tf = terraform()
    grant = tf.of_type("google_project_iam_member")["function_uses_firestore"]
    assert grant["role"] == "roles/datastore.user"
    expression = _one(grant["condition"])["expression"]
    for prefix in ("export", "staging"):
        scope = Scope({"prefix": prefix, "project_id": "my-project"})
        assert tf.evaluate(expression, scope) == (
            f'resource.name == "projects/my-project/databases/{prefix}-db"'
        )
    chosen = Scope({"firestore_database": "(default)", "project_id": "my-project"})
    assert tf.evaluate(expression, chosen) == (
        'resource.name == "projects/my-project/databases/(default)"'
    )


# --- BigQuery: only with a source table ----------------------------------------------------

#: The resources bigquery.tf makes, each over local.bigquery.
BIGQUERY_RESOURCES = {
    ("google_bigquery_dataset", "temp"),
    ("google_project_iam_member", "process_runs_bigquery_jobs"),
    ("google_project_iam_member", "process_creates_read_sessions"),
    ("google_bigquery_dataset_iam_member", "process_reads_source"),
    ("google_bigquery_dataset_iam_member", "process_writes_results"),
}
#: Table references, and whether BigQuery (as config.py checks it) takes them.
SOURCE_TABLES = {
    SOURCE_TABLE: True,
    "abcdef.a.b": True,
    "a" + "b" * 28 + "c.d.t": True,
    f"my-project.{'d' * 1024}.{'t' * 1024}": True,
    "my-project.Listings_2026.rental-listings-v2": True,
    "abcde.d.t": False,
    "a" + "b" * 29 + "c.d.t": False,
    "My-project.d.t": False,
    "my-project-.d.t": False,
    "my-project.list-ings.t": False,
    f"my-project.{'d' * 1025}.t": False,
    f"my-project.d.{'t' * 1025}": False,
    "my-project.d.rental listings": False,
    "my-project.d": False,
    "my-project.d.t.x": False,
    "my-project..t": False,
    "example.com:my-project.d.t": False,
    "": False,
}


def _bigquery_scope(table: str | None = SOURCE_TABLE, **variables: Any) -> Scope:
    return Scope({"project_id": "my-project", "bigquery_source_table": table, **variables})


def test_bigquery_resources_exist_only_with_a_source_table() -> None:
    """Every BigQuery resource iterates over local.bigquery: one instance with a table, none
    without; the two APIs are enabled only then."""
    tf = terraform()
    made = {
        (kind, name)
        for kind, resources in tf.resources.items()
        for name, body in resources.items()
        if body.get("for_each") == "${local.bigquery}"
    }
    assert made == BIGQUERY_RESOURCES
    assert flattened("bigquery") == (
        "${var.bigquery_source_table == null ? {} : {source = {"
        'project = split(".", var.bigquery_source_table)[0], '
        'dataset = split(".", var.bigquery_source_table)[1], '
        'table = split(".", var.bigquery_source_table)[2]}}}'
    )
    assert tf.default("bigquery_source_table") is None
    assert bigquery_instances(Scope()) == {}
    assert bigquery_instances(_bigquery_scope()) == {
        "source": {"project": "warehouse-prod", "dataset": "listings", "table": "rental_listings"}
    }
    services = flattened("services")
    assert services.endswith(
        ', var.bigquery_source_table == null ? [] : ["bigquery.googleapis.com", '
        '"bigquerystorage.googleapis.com"])}'
    )
    assert services.count("bigquery") == 3  # the condition and the two APIs, nowhere else


@pytest.mark.parametrize("table", [None, SOURCE_TABLE])
def test_process_is_given_a_configuration_the_code_accepts(table: str | None) -> None:
    """Without a table process gets the Parquet object (DuckDB); with one, the bq:// table and the
    temporary dataset (BigQuery): config.py accepts both as Terraform plans them."""
    tf = terraform()
    scope = _bigquery_scope(table, prefix="staging")
    environment = tf.evaluate(function_entry(FUNCTIONS["process"])["environment"], scope)
    settings = Settings.from_env(environment)
    source = parse_dataset_source(environment["EXPORT_DATASET_URI"])
    assert settings.dataset_source == source
    if table is None:
        assert source == ParquetSource("gs://my-project-staging-datasets/rental_listings.parquet")
        assert settings.engine == "duckdb"
        assert environment["EXPORT_BIGQUERY_TEMP_DATASET"] == ""
        assert settings.bigquery_temp_dataset is None
        return
    assert source == parse_bigquery_table(table)
    assert environment["EXPORT_DATASET_URI"] == f"bq://{table}"
    assert settings.engine == "bigquery"
    assert environment["EXPORT_BIGQUERY_TEMP_DATASET"] == "my-project.staging_tmp"
    assert settings.bigquery_temp_dataset == parse_bigquery_dataset("my-project.staging_tmp")
    # The dataset the variable names is the one the module creates (process waits for it).
    assert 'google_bigquery_dataset.temp["source"].dataset_id' in str(
        tf.locals["bigquery_temp_dataset"]
    )


def test_bigquery_settings_default_as_the_code_defaults() -> None:
    """Location and byte cap: the same defaults both sides, and the cap's floor is BigQuery's."""
    tf = terraform()
    entry = function_entry(FUNCTIONS["process"])["environment"]
    assert entry["EXPORT_BIGQUERY_LOCATION"] == "${var.bigquery_location}"
    assert entry["EXPORT_BIGQUERY_MAX_BYTES_BILLED"] == "${tostring(var.bigquery_max_bytes_billed)}"
    assert entry["EXPORT_BIGQUERY_TEMP_DATASET"] == "${local.bigquery_temp_dataset}"
    code = Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p", "EXPORT_BUCKET": "b"})
    assert tf.default("bigquery_location") == code.bigquery_location == DEFAULT_BIGQUERY_LOCATION
    assert tf.default("bigquery_max_bytes_billed") == code.bigquery_max_bytes_billed
    condition = str(_one(tf.variables["bigquery_max_bytes_billed"]["validation"])["condition"])
    assert f"var.bigquery_max_bytes_billed >= {MIN_BYTES_BILLED}" in condition


def _terraform_regex(variable: str, directory: str = "") -> str:
    """The one regex a variable's validation applies (in the module or an example), unescaped
    from HCL."""
    condition = str(
        _one(_load(TERRAFORM / directory).variables[variable]["validation"])["condition"]
    )
    (pattern,) = re.findall(rf'regex\("(.*?)", var\.{variable}\)', condition)
    return pattern.replace("\\\\", "\\")


def test_terraform_and_the_code_accept_the_same_source_tables() -> None:
    """var.bigquery_source_table's validation (its regex, and 1024 at most per ID) and config.py's
    check agree on every sample table."""
    condition = str(_one(terraform().variables["bigquery_source_table"]["validation"])["condition"])
    assert condition.startswith("${var.bigquery_source_table == null || (")
    assert "length(id) <= 1024" in condition
    assert 'slice(split(".", var.bigquery_source_table), 1, 3)' in condition
    pattern = _terraform_regex("bigquery_source_table")
    assert _terraform_regex("bigquery_source_table", "examples/simple") == pattern
    for table, valid in SOURCE_TABLES.items():
        ids = table.split(".")
        in_terraform = bool(re.fullmatch(pattern.strip("^$"), table)) and all(
            len(i) <= 1024 for i in ids[1:3]
        )
        assert in_terraform == valid, f"Terraform on {table[:60]!r}"
        try:
            parse_bigquery_table(table)
        except ValueError:
            in_code = False
        else:
            in_code = True
        assert in_code == valid, f"config.py on {table[:60]!r}"


def test_terraform_and_the_code_accept_the_same_locations() -> None:
    """var.bigquery_location's regex and config.py's check agree."""
    pattern = _terraform_regex("bigquery_location").strip("^$")
    assert _terraform_regex("bigquery_location", "examples/simple").strip("^$") == pattern
    for location in ("US", "EU", "us-central1", "europe-west4", "us", "mars", "US-CENTRAL1", ""):
        in_terraform = bool(re.fullmatch(pattern, location))
        assert in_terraform == (bigquery_location_problem(location) is None), location


def test_the_temporary_dataset_expires_what_a_crash_leaves() -> None:
    """In the source's location, tables expire after var.bigquery_temp_table_expiration_hours
    (24), never sooner than a 6-hour read session; always removable; the module's labels."""
    tf = terraform()
    dataset = tf.of_type("google_bigquery_dataset")["temp"]
    assert dataset["project"] == "${var.project_id}"
    assert dataset["location"] == "${var.bigquery_location}"
    assert dataset["default_table_expiration_ms"] == (
        "${var.bigquery_temp_table_expiration_hours * 3600000}"
    )
    assert tf.default("bigquery_temp_table_expiration_hours") == 24
    validation = str(_one(tf.variables["bigquery_temp_table_expiration_hours"]["validation"]))
    assert "var.bigquery_temp_table_expiration_hours >= 6" in validation
    assert dataset["delete_contents_on_destroy"] is True
    assert dataset["labels"] == "${local.labels}"
    assert dataset["depends_on"] == ["${google_project_service.this}"]


def test_process_gets_exactly_the_bigquery_roles_it_needs() -> None:
    """jobUser and readSessionUser on this project, dataViewer on the source dataset, dataEditor
    on the temporary dataset: all to process, nothing to submit or notify."""
    tf = terraform()
    process = '${google_service_account.function["process"].member}'
    scope = _bigquery_scope()
    (key,) = bigquery_instances(scope)
    each = Scope(scope.variables, (key, bigquery_instances(scope)[key]))
    grants = {}
    for kind, name in BIGQUERY_RESOURCES - {("google_bigquery_dataset", "temp")}:
        body = tf.of_type(kind)[name]
        assert body["member"] == process, name
        target = (tf.evaluate(body["project"], each), tf.evaluate(body.get("dataset_id"), each))
        grants[body["role"]] = (kind, target)
    assert grants == {
        "roles/bigquery.jobUser": ("google_project_iam_member", ("my-project", None)),
        "roles/bigquery.readSessionUser": ("google_project_iam_member", ("my-project", None)),
        "roles/bigquery.dataViewer": (
            "google_bigquery_dataset_iam_member",
            ("warehouse-prod", "listings"),
        ),
        "roles/bigquery.dataEditor": (
            "google_bigquery_dataset_iam_member",
            ("my-project", "export_tmp"),
        ),
    }
    writes = tf.of_type("google_bigquery_dataset_iam_member")["process_writes_results"]
    assert writes["dataset_id"] == "${google_bigquery_dataset.temp[each.key].dataset_id}"


def test_exports_outlive_their_download_links() -> None:
    """The lifecycle rule deletes only export objects, and only after the links' 30 days."""
    from dataset_export.core.links import LINK_LIFETIME
    from dataset_export.service.process import object_name

    tf = terraform()
    condition = exports_bucket_rules()["exports/"]
    age_days = tf.evaluate(condition["age"])
    assert isinstance(age_days, int)
    assert dt.timedelta(days=age_days) > LINK_LIFETIME
    assert object_name(QUERY_UUID, "csv").startswith("exports/")
    assert tf.default("export_retention_days") == age_days


def exports_bucket_rules() -> dict[str, Mapping[str, Any]]:
    """The exports bucket's lifecycle conditions by the one prefix each matches (all delete)."""
    rules = {}
    for rule in terraform().of_type("google_storage_bucket")["exports"]["lifecycle_rule"]:
        assert _one(rule["action"]) == {"type": "Delete"}
        condition = _one(rule["condition"])
        (prefix,) = condition["matches_prefix"]
        assert prefix not in rules, f"two rules for {prefix}"
        rules[prefix] = condition
    return rules


def test_temporary_objects_expire_as_a_backstop() -> None:
    """A rule deletes what is left under tmp/ after var.tmp_object_age_days (2), never exports."""
    from dataset_export.service.process import object_name

    tf = terraform()
    rules = exports_bucket_rules()
    assert set(rules) == {"exports/", parts.TMP_PREFIX}
    condition = rules[parts.TMP_PREFIX]
    assert condition["age"] == "${var.tmp_object_age_days}"
    assert tf.default("tmp_object_age_days") == 2
    validation = str(_one(tf.variables["tmp_object_age_days"]["validation"])["condition"])
    assert "var.tmp_object_age_days >= 1" in validation  # age 0 would delete running parts
    for name in (
        parts.part_object_name(QUERY_UUID, 0, 1),
        parts.part_object_name(QUERY_UUID, 1023, 5),
        parts.header_object_name(QUERY_UUID),
        parts.composed_object_name(QUERY_UUID),
    ):
        assert name.startswith(parts.TMP_PREFIX)
        assert not name.startswith("exports/")
    for fmt in ("csv", "jsonl"):
        assert not object_name(QUERY_UUID, fmt).startswith(parts.TMP_PREFIX)


def test_process_may_delete_only_its_temporary_objects() -> None:
    """The only grant that can delete objects is process's objectUser, conditioned on tmp/."""
    tf = terraform()
    deleting = {"roles/storage.objectUser", "roles/storage.objectAdmin", "roles/storage.admin"}
    conditioned = [
        (name, grant)
        for name, entry in functions_map().items()
        for grant in entry["bucket_roles"]
        if grant["role"] in deleting or grant["object_prefix"] is not None
    ]
    assert conditioned == [
        (
            "process",
            {"bucket": "exports", "role": "roles/storage.objectUser", "object_prefix": "tmp/"},
        )
    ]
    assert parts.TMP_PREFIX == "tmp/"
    grant = tf.of_type("google_storage_bucket_iam_member")["function_bucket_role"]
    (dynamic,) = grant["dynamic"]
    policy = dynamic["condition"]
    assert policy["for_each"] == (
        "${each.value.object_prefix == null ? [] : [each.value.object_prefix]}"
    )
    expression = _one(policy["content"])["expression"]
    assert expression == (
        'resource.name.startsWith("projects/_/buckets/'
        '${local.buckets[each.value.bucket].name}/objects/${condition.value}")'
    )
    assert tf.locals["buckets"]["exports"] == "${google_storage_bucket.exports}"


def test_bundle_objects_read_the_manifest_the_bundler_writes() -> None:
    """One bundle object per function, uploaded from the manifest ``make bundle`` writes."""
    from dataset_export_tools import bundle

    tf = terraform()
    bundles = _load(TERRAFORM / "modules" / "bundles")
    assert f'/{bundle.MANIFEST}"' in bundles.locals["manifest"] + '"'
    call = tf.modules["bundles"]
    assert call["source"] == "./modules/bundles"
    assert call["functions"] == "${keys(local.functions)}"
    assert call["directory"] == "${local.bundle_dir}"
    objects = tf.of_type("google_storage_bucket_object")["bundle"]
    assert objects["for_each"] == "${local.functions}"
    assert objects["source"] == "${module.bundles.files[each.key].path}"
    assert objects["name"] == "bundles/${module.bundles.files[each.key].file}"


# --- defaults both sides state -------------------------------------------------------------


def _integer_defaults() -> dict[str, int]:
    """``integer("NAME", default)`` calls of config.py: the code's numeric defaults."""
    tree = ast.parse(CONFIG.read_text("utf-8"))
    found = {}
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "integer"
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
        ):
            found[str(node.args[0].value)] = _constant(node.args[1])
    return found


def _constant(node: ast.expr) -> int:
    """The value of an integer literal, of a constant config.py imports (``DEFAULT_PART_ROWS``)
    or of products and sums of them (``64 * 1024``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        value = getattr(config_module, node.id)
        assert isinstance(value, int), f"config.py default {node.id} = {value!r}"
        return value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult | ast.Add | ast.Pow):
        left, right = _constant(node.left), _constant(node.right)
        if isinstance(node.op, ast.Mult):
            return left * right
        return left + right if isinstance(node.op, ast.Add) else int(left**right)
    raise AssertionError(f"config.py default {ast.unparse(node)} is not a constant")


def _variable_behind(value: Any) -> str | None:
    """``x`` when an environment value is ``var.x`` or ``tostring(var.x)``."""
    match = re.fullmatch(r"\$\{(?:tostring\()?var\.(\w+)\)?\}", str(value))
    return match[1] if match else None


def test_every_numeric_default_is_the_same_in_terraform_and_the_code() -> None:
    """Each setting with a default in config.py that Terraform sets from a variable agrees."""
    tf = terraform()
    code = _integer_defaults()
    assert {
        "EXPORT_MAX_ROWS",
        "EXPORT_MAX_BODY_BYTES",
        "EXPORT_RATE_LIMIT_PER_MINUTE",
        "EXPORT_PART_ROWS",
        "EXPORT_MAX_PARTS",
    } <= set(code)
    assert code["EXPORT_PART_ROWS"] == parts.DEFAULT_PART_ROWS
    assert code["EXPORT_MAX_PARTS"] == parts.DEFAULT_MAX_PARTS
    compared = set()
    for entry in functions_map().values():
        for name, value in entry["environment"].items():
            variable = _variable_behind(value)
            if name in code:
                assert variable is not None, f"{name} = {value} is not set from a variable"
                assert tf.default(variable) == code[name], (
                    f"var.{variable} defaults to {tf.default(variable)}, config.py to {code[name]}"
                )
                compared.add(name)
    assert compared == set(code), f"never deployed: {sorted(set(code) - compared)}"


def test_the_readme_states_the_code_defaults() -> None:
    """The README's configuration table gives config.py's defaults for the numeric settings."""
    text = (REPO / "README.md").read_text("utf-8")
    for name, default in _integer_defaults().items():
        row = re.search(rf"^\| `{name}` \|.*\| ([^|]+) \|$", text, re.MULTILINE)
        assert row, f"README has no row for {name}"
        stated = re.sub(r"[\s,_]", "", row[1])
        assert stated.isdigit(), f"README: {name} = {row[1]}"
        assert int(stated) == default, f"README: {name} = {row[1]}, config.py: {default}"


def test_timeouts_leave_room_for_what_the_code_does_in_them() -> None:
    """notify outlasts a retry tick's budget plus one webhook; a webhook fits its push deadline."""
    from dataset_export.adapters.webhook_sender import WebhookSender
    from dataset_export.service.notify import TICK_BUDGET

    tf = terraform()
    webhook = inspect.signature(WebhookSender).parameters["total_timeout"].default
    notify = tf.evaluate(function_entry(FUNCTIONS["notify"])["sizing"])
    assert notify["timeout_seconds"] >= TICK_BUDGET.total_seconds() + webhook
    ready = push_subscriptions()["ready-notify"]
    assert ready["ack_deadline_seconds"] > webhook
    process = tf.evaluate(function_entry(FUNCTIONS["process"])["sizing"])
    for work in ("requests-process", "parts-process"):
        assert process["timeout_seconds"] < push_subscriptions()[work]["ack_deadline_seconds"]
    assert process["concurrency"] == 1


def test_max_parts_is_bounded_as_the_code_bounds_it() -> None:
    """var.max_parts accepts exactly 1 to MAX_PARTS_LIMIT, as config.py does."""
    tf = terraform()
    condition = str(_one(tf.variables["max_parts"]["validation"])["condition"])
    assert "var.max_parts >= 1" in condition
    assert f"var.max_parts <= {parts.MAX_PARTS_LIMIT}" in condition
    base = {"GOOGLE_CLOUD_PROJECT": "p", "EXPORT_BUCKET": "b"}
    limit = str(parts.MAX_PARTS_LIMIT)
    assert Settings.from_env({**base, "EXPORT_MAX_PARTS": limit}).max_parts == int(limit)
    with pytest.raises(ConfigError):
        Settings.from_env({**base, "EXPORT_MAX_PARTS": str(parts.MAX_PARTS_LIMIT + 1)})
    assert "var.part_rows >= 1" in str(_one(tf.variables["part_rows"]["validation"])["condition"])


# --- variables -----------------------------------------------------------------------------


@pytest.mark.parametrize("directory", ["", "modules/bundles", "examples/simple"])
def test_every_variable_is_described_typed_and_validated(directory: str) -> None:
    """Each variable has a description and a type; each that is not a bool has a validation."""
    variables = _load(TERRAFORM / directory).variables
    assert variables
    for name, body in variables.items():
        assert body.get("description"), name
        assert body.get("type"), name
        if body["type"] != "bool":
            assert body.get("validation"), f"variable {name} has no validation"


def test_the_authoritative_audit_config_is_off_by_default() -> None:
    """google_project_iam_audit_config replaces the project's settings: only when asked for."""
    tf = terraform()
    audit = tf.of_type("google_project_iam_audit_config")["storage"]
    assert audit["count"] == "${var.enable_storage_data_access_logs ? 1 : 0}"
    assert tf.default("enable_storage_data_access_logs") is False


# --- names ---------------------------------------------------------------------------------

#: The argument that names each kind of resource this module creates.
NAME_ARGUMENT = {
    "google_cloudfunctions2_function": "name",
    "google_service_account": "account_id",
    "google_pubsub_topic": "name",
    "google_pubsub_subscription": "name",
    "google_storage_bucket": "name",
    "google_secret_manager_secret": "secret_id",
    "google_logging_metric": "name",
    "google_monitoring_alert_policy": "display_name",
    "google_cloud_scheduler_job": "name",
    "google_artifact_registry_repository": "repository_id",
    "google_firestore_database": "name",
    "google_bigquery_dataset": "dataset_id",
}
#: Resources that are not named (bindings, objects inside a prefixed parent) or are the
#: project's own, shared by every deployment in it, and why.
UNNAMED = {
    "google_storage_bucket_object": "inside the prefixed sources bucket",
    "google_secret_manager_secret_version": "a version of a prefixed secret",
    "google_monitoring_dashboard": "named inside dashboard_json: checked below",
    "google_project_service": "APIs are enabled per project",
    "google_firestore_field": "fields inside the deployment's own database",
    "google_project_iam_audit_config": "the project's audit settings (off by default)",
}


def planned_names(prefix: str) -> set[tuple[str, str]]:
    """``(type, name)`` of everything the module names, for one prefix (with a BigQuery source
    table, so that everything exists)."""
    tf = terraform()
    scope = Scope(
        {"prefix": prefix, "project_id": "my-project", "bigquery_source_table": SOURCE_TABLE}
    )
    names = set()
    for kind, resources in tf.resources.items():
        if kind.endswith(("_iam_member", "_iam_binding")) or kind in UNNAMED:
            continue
        assert kind in NAME_ARGUMENT, f"{kind}: which argument names it, and is it prefixed?"
        for body in resources.values():
            instances = tf.for_each(body, scope) if "for_each" in body else {"": None}
            for key, value in instances.items():
                each = (key, value) if "for_each" in body else None
                name = tf.evaluate(body[NAME_ARGUMENT[kind]], Scope(scope.variables, each))
                names.add((kind, name))
    (dashboard,) = tf.of_type("google_monitoring_dashboard").values()
    assert "displayName = local.dashboard_name" in dashboard["dashboard_json"]
    names.add(("google_monitoring_dashboard", tf.evaluate("${local.dashboard_name}", scope)))
    return names


def test_two_prefixes_give_disjoint_names() -> None:
    """Every name the module plans differs between two prefixes, so both fit in one project."""
    first, second = planned_names("export"), planned_names("staging")
    assert len(first) == len(second)
    kinds = {kind for kind, _ in first}
    assert kinds >= set(NAME_ARGUMENT) | {"google_monitoring_dashboard"}
    assert not {n for _, n in first} & {n for _, n in second}, sorted(first & second)
    assert ("google_storage_bucket", "my-project-staging-exports") in second
    assert ("google_pubsub_topic", "staging-parts") in second
    assert ("google_pubsub_subscription", "staging-parts-process") in second
    assert ("google_bigquery_dataset", "staging_tmp") in second
    assert ("google_bigquery_dataset", "export_tmp") in first


def test_names_fit_google_clouds_rules_at_the_longest_prefix() -> None:
    """With an 18-character prefix and a 30-character project ID every name is still valid."""
    tf = terraform()
    prefix = "a" * 17 + "z"
    assert re.fullmatch(_prefix_pattern(), prefix)
    scope = Scope({"prefix": prefix, "project_id": "p" * 30})
    accounts = tf.of_type("google_service_account")
    for name, body in accounts.items():
        keys = tf.for_each(body) if "for_each" in body else {"": None}
        for key in keys:
            each = (key, {}) if "for_each" in body else None
            account = tf.evaluate(body["account_id"], Scope(scope.variables, each))
            assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account), (name, account)
    for body in tf.of_type("google_storage_bucket").values():
        bucket = tf.evaluate(body["name"], scope)
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]", bucket), bucket
        assert "google" not in bucket
    for name in functions_map():
        assert len(deployed_name(name, scope)) <= 49  # Cloud Run service names
    for shortest_or_longest in (Scope({"prefix": "a"}), scope):
        database = tf.evaluate("${local.firestore_database_id}", shortest_or_longest)
        assert firestore_database_problem(database) is None, database
    # Dataset IDs: letters, digits and underscores, at most 1024 (the prefix's hyphens mapped).
    for sample in ("a", "staging-eu", prefix, "a-" * 8 + "bc"):
        assert re.fullmatch(_prefix_pattern(), sample), sample
        dataset = tf.evaluate("${local.bigquery_temp_dataset_id}", Scope({"prefix": sample}))
        assert DATASET_ID.fullmatch(dataset), (sample, dataset)
        assert dataset == sample.replace("-", "_") + "_tmp"
    public_url = str(tf.locals["public_url"])
    assert public_url.endswith('.cloudfunctions.net/${var.prefix}-submit")}')
    assert deployed_name("submit") == "export-submit"


def _prefix_pattern() -> str:
    condition = str(_one(terraform().variables["prefix"]["validation"])["condition"])
    match = re.search(r'regex\("\^(.*?)\$", var\.prefix\)', condition)
    assert match, condition
    return match[1]
