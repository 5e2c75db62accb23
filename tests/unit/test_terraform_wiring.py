"""The Terraform in infra/terraform is wired the way the code reads and talks.

Three sources are compared, none of them trusted alone: the code (``config.py`` and the
functions' ``main.py`` and ``wiring.py`` builders, read with ``ast``), the deployment contract
(``dataset_export.deploy_manifest``) and the HCL (read with python-hcl2). Renaming an
environment variable, secret, topic or entry point on one side only fails a test here.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from dataset_export.deploy_manifest import (
    COMMON_ENV,
    DEAD_LETTER_TOPIC,
    FUNCTIONS,
    NOT_DEPLOYED,
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
REF = re.compile(r"\$\{(?P<type>[a-z0-9_]+)\.(?P<name>[a-z0-9_]+)(?:\[\"(?P<key>\w+)\"\])?\.")
SA_MEMBER = re.compile(r"serviceAccount:\$\{google_service_account\.(\w+)\.email\}")
#: Handlers that run long, whose push deadline must exceed the function's own timeout.
LONG_HANDLERS = {("process", "/"), ("notify", "/tick")}


# --- the HCL -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Terraform:
    """The module's resources, locals and variable defaults."""

    resources: Mapping[str, Mapping[str, Mapping[str, Any]]]
    locals: Mapping[str, Any]
    variables: Mapping[str, Mapping[str, Any]]

    def of_type(self, kind: str) -> Mapping[str, Mapping[str, Any]]:
        """Every resource of one type, by name."""
        return self.resources.get(kind, {})

    def resolve(self, value: Any) -> Any:
        """A literal for ``value`` when it is one, a local, a variable default or a name."""
        if not isinstance(value, str):
            return value
        whole = re.fullmatch(r"\$\{([^{}]*)\}", value)
        if whole is None:
            return value
        path = whole.group(1)
        if path.startswith("local."):
            node: Any = self.locals
            for part in path.split(".")[1:]:
                node = node[part]
            return self.resolve(node)
        if path.startswith("var."):
            return self.resolve(self.variables[path[4:]].get("default"))
        ref = REF.match(value)
        if ref and path.endswith((".name", ".secret_id")) and "[" not in path:
            body = self.of_type(ref["type"]).get(ref["name"])
            if body is not None:
                return self.resolve(body.get(path.rsplit(".", 1)[1]))
        return value


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


@functools.cache
def terraform() -> Terraform:
    """Load every ``*.tf`` file of the module (the examples are separate roots)."""
    options = SerializationOptions(
        with_comments=False, explicit_blocks=False, strip_string_quotes=True
    )
    resources: dict[str, dict[str, dict[str, Any]]] = {}
    local_values: dict[str, Any] = {}
    variables: dict[str, dict[str, Any]] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
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
    return Terraform(resources, local_values, variables)


def function_resource(spec: FunctionSpec) -> Mapping[str, Any]:
    """The google_cloudfunctions2_function deploying ``spec``."""
    tf = terraform()
    found = [
        body
        for body in tf.of_type("google_cloudfunctions2_function").values()
        if tf.resolve(body["name"]) == spec.deployed_name
    ]
    assert len(found) == 1, f"expected one function named {spec.deployed_name}, found {found}"
    return found[0]


def function_address(spec: FunctionSpec) -> tuple[str, str]:
    """The Terraform address of ``spec``'s function."""
    tf = terraform()
    for name, body in tf.of_type("google_cloudfunctions2_function").items():
        if tf.resolve(body["name"]) == spec.deployed_name:
            return ("google_cloudfunctions2_function", name)
    raise AssertionError(f"no function named {spec.deployed_name}")


def runtime_account(spec: FunctionSpec) -> str:
    """The google_service_account name the function runs as."""
    ref = address(_one(function_resource(spec)["service_config"])["service_account_email"])
    assert ref is not None
    assert ref[0] == "google_service_account", ref
    return ref[1]


def member(value: Any) -> str:
    """``sa:<name>``, ``pubsub-agent`` or the literal member of an IAM binding."""
    resolved = terraform().resolve(value)
    match = SA_MEMBER.fullmatch(str(resolved))
    if match:
        return f"sa:{match.group(1)}"
    if "@gcp-sa-pubsub.iam.gserviceaccount.com" in str(resolved):
        return "pubsub-agent"
    return str(resolved)


def bindings(kind: str, target_key: str, target: tuple[str, str], role: str) -> set[str]:
    """Members granted ``role`` on the resource at ``target`` by ``kind`` bindings."""
    return {
        member(body["member"])
        for body in terraform().of_type(kind).values()
        if address(body[target_key]) == target and body["role"] == role
    }


def topic_name(reference: Any) -> str:
    """The name of the topic a reference points at (asserting that topic exists)."""
    ref = address(reference)
    assert ref is not None, f"{reference} is not a reference"
    assert ref[0] == "google_pubsub_topic", f"{reference} is not a topic"
    body = terraform().of_type("google_pubsub_topic").get(ref[1])
    assert body is not None, f"{reference}: no such topic"
    name = terraform().resolve(body["name"])
    assert isinstance(name, str)
    return name


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


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_terraform_sets_exactly_the_environment_each_function_reads(spec: FunctionSpec) -> None:
    """Plain and secret environment variables in the HCL are the manifest's, no more, no less."""
    service = _one(function_resource(spec)["service_config"])
    plain = set(service.get("environment_variables", {}))
    secret = {block["key"] for block in service.get("secret_environment_variables", [])}
    assert plain == set(spec.env), (
        f"missing: {sorted(spec.env - plain)}; not read by {spec.name}: {sorted(plain - spec.env)}"
    )
    assert secret == set(spec.secrets), (
        f"missing: {sorted(spec.secrets - secret)}; extra: {sorted(secret - spec.secrets)}"
    )
    assert not plain & secret
    assert service["environment_variables"].get("EXPORT_ENV") == "production"


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_terraform_entry_point_runtime_and_bundle_match(spec: FunctionSpec) -> None:
    """Entry point, Python runtime and the bundle object are the function's own."""
    build = _one(function_resource(spec)["build_config"])
    assert build["entry_point"] == spec.entry_point
    assert build["runtime"] == "python311"
    storage = _one(_one(build["source"])["storage_source"])
    assert storage["object"] == f'${{google_storage_bucket_object.bundle["{spec.name}"].name}}'
    assert terraform().locals["function_names"] == {
        s.name: s.deployed_name for s in FUNCTIONS.values()
    }


def test_each_function_runs_as_its_own_service_account() -> None:
    """Three functions, three distinct runtime service accounts."""
    accounts = [runtime_account(s) for s in SPECS]
    assert len(set(accounts)) == len(accounts)
    assert set(accounts) <= set(terraform().of_type("google_service_account"))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_topic_variables_name_existing_topics_the_code_agrees_on(spec: FunctionSpec) -> None:
    """Each *_TOPIC variable points at a declared topic whose name is config.py's default."""
    env = _one(function_resource(spec)["service_config"])["environment_variables"]
    for name, value in env.items():
        if name.endswith("_TOPIC"):
            defaults = config_facts().env_defaults
            assert name in defaults, f"Terraform sets {name}, which config.py never reads"
            assert topic_name(value) == defaults[name], name


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_functions_may_publish_to_their_topics_and_those_are_consumed(spec: FunctionSpec) -> None:
    """Publisher on each topic the function publishes to; each such topic is pushed somewhere."""
    env = _one(function_resource(spec)["service_config"])["environment_variables"]
    pushed = {p.topic for s in SPECS for p in s.pushes}
    for variable in spec.publishes:
        topic = address(env[variable])
        assert topic is not None
        granted = bindings(
            "google_pubsub_topic_iam_member", "topic", topic, "roles/pubsub.publisher"
        )
        assert f"sa:{runtime_account(spec)}" in granted, f"{spec.name} cannot publish to {topic}"
        assert topic_name(env[variable]) in pushed


def test_terraform_declares_the_manifest_topics() -> None:
    """The HCL declares exactly the manifest's topics."""
    tf = terraform()
    names = {tf.resolve(t["name"]) for t in tf.of_type("google_pubsub_topic").values()}
    assert names == set(TOPICS)


def _subscriptions() -> dict[str, tuple[str, Mapping[str, Any]]]:
    """Subscription name -> (function name, body)."""
    tf = terraform()
    by_address = {function_address(s): s.name for s in SPECS}
    found = {}
    for body in tf.of_type("google_pubsub_subscription").values():
        push = _one(body["push_config"])
        target = address(push["push_endpoint"])
        assert target in by_address, f"{body['name']} pushes to {push['push_endpoint']}"
        found[tf.resolve(body["name"])] = (by_address[target], body)
    return found


def push_identity(subscription: Mapping[str, Any]) -> str:
    """The google_service_account a push subscription authenticates as."""
    token = _one(_one(subscription["push_config"])["oidc_token"])
    account = address(token["service_account_email"])
    assert account is not None
    assert account[0] == "google_service_account"
    assert (
        token["audience"] == _one(subscription["push_config"])["push_endpoint"].split("}")[0] + "}"
    )
    return account[1]


@pytest.mark.parametrize(
    ("spec", "push"),
    [(s, p) for s in SPECS for p in s.pushes],
    ids=lambda v: v.subscription if hasattr(v, "subscription") else v.name,
)
def test_push_subscriptions_deliver_the_manifest_topics(spec: FunctionSpec, push: Any) -> None:
    """Topic, function, path, deadline, retention and dead-lettering match the manifest."""
    subscriptions = _subscriptions()
    assert push.subscription in subscriptions
    function, body = subscriptions[push.subscription]
    assert function == spec.name
    assert topic_name(body["topic"]) == push.topic
    endpoint = _one(body["push_config"])["push_endpoint"]
    suffix = endpoint.split("}", 1)[1]
    assert (suffix or "/") == push.path
    assert body["ack_deadline_seconds"] == push.ack_deadline_seconds
    assert body["message_retention_duration"] == f"{push.retention_seconds}s"
    policy = body.get("dead_letter_policy")
    if push.max_delivery_attempts is None:
        assert policy is None
    else:
        assert _one(policy)["max_delivery_attempts"] == push.max_delivery_attempts
        assert topic_name(_one(policy)["dead_letter_topic"]) == DEAD_LETTER_TOPIC
    timeout = _one(function_resource(spec)["service_config"])["timeout_seconds"]
    if (spec.name, push.path) in LONG_HANDLERS:
        assert push.ack_deadline_seconds > timeout, "a slow handler would be pushed again"


def test_no_subscription_outside_the_manifest() -> None:
    """Every push subscription in the HCL is one the manifest knows."""
    declared = {p.subscription for s in SPECS for p in s.pushes}
    assert set(_subscriptions()) == declared


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_only_trigger_identities_may_invoke(spec: FunctionSpec) -> None:
    """HTTP: public ingress and allUsers; Pub/Sub-triggered: internal, the push identity only."""
    service = _one(function_resource(spec)["service_config"])
    invokers = bindings(
        "google_cloud_run_v2_service_iam_member",
        "name",
        function_address(spec),
        "roles/run.invoker",
    )
    if spec.trigger == "http":
        assert service["ingress_settings"] == "ALLOW_ALL"
        assert invokers == {"allUsers"}
        return
    assert service["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    pushers = {
        push_identity(body) for function, body in _subscriptions().values() if function == spec.name
    }
    assert invokers == {f"sa:{name}" for name in pushers}


def test_pubsub_agent_can_dead_letter_and_mint_push_tokens() -> None:
    """Publisher on the dead-letter topic, subscriber on each dead-lettering subscription."""
    tf = terraform()
    dead_letter = ("google_pubsub_topic", "dead_letter")
    assert topic_name("${google_pubsub_topic.dead_letter.name}") == DEAD_LETTER_TOPIC
    publishers = bindings(
        "google_pubsub_topic_iam_member", "topic", dead_letter, "roles/pubsub.publisher"
    )
    assert "pubsub-agent" in publishers
    for name, body in tf.of_type("google_pubsub_subscription").items():
        if "dead_letter_policy" in body:
            subscribers = bindings(
                "google_pubsub_subscription_iam_member",
                "subscription",
                ("google_pubsub_subscription", name),
                "roles/pubsub.subscriber",
            )
            assert "pubsub-agent" in subscribers, name
    for _, body in _subscriptions().values():
        minters = bindings(
            "google_service_account_iam_member",
            "service_account_id",
            ("google_service_account", push_identity(body)),
            "roles/iam.serviceAccountTokenCreator",
        )
        assert "pubsub-agent" in minters


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_secrets_are_mounted_pinned_and_readable(spec: FunctionSpec) -> None:
    """Each secret variable names a declared secret its function may access, at a pinned version."""
    tf = terraform()
    service = _one(function_resource(spec)["service_config"])
    for block in service.get("secret_environment_variables", []):
        secret = address(block["secret"])
        assert secret is not None, block
        assert secret[0] == "google_secret_manager_secret", block
        assert secret[1] in tf.of_type("google_secret_manager_secret")
        assert block["version"] == f"${{google_secret_manager_secret_version.{secret[1]}.version}}"
        version = tf.of_type("google_secret_manager_secret_version")[secret[1]]
        assert address(version["secret"]) == secret
        readers = bindings(
            "google_secret_manager_secret_iam_member",
            "secret_id",
            secret,
            "roles/secretmanager.secretAccessor",
        )
        assert f"sa:{runtime_account(spec)}" in readers, f"{spec.name} cannot read {secret[1]}"


def test_submit_signs_urls_as_itself_and_may_read_exports() -> None:
    """signBlob on its own account only, and read access to the objects it signs URLs for."""
    account = runtime_account(FUNCTIONS["submit"])
    signers = bindings(
        "google_service_account_iam_member",
        "service_account_id",
        ("google_service_account", account),
        "roles/iam.serviceAccountTokenCreator",
    )
    assert signers == {f"sa:{account}"}
    readers = bindings(
        "google_storage_bucket_iam_member",
        "bucket",
        ("google_storage_bucket", "exports"),
        "roles/storage.objectViewer",
    )
    assert f"sa:{account}" in readers


def test_no_primitive_or_broad_project_roles() -> None:
    """Project-level grants are limited to Firestore, build logs and the conditional source read."""
    allowed = {"roles/datastore.user", "roles/logging.logWriter", "roles/storage.objectViewer"}
    for name, body in terraform().of_type("google_project_iam_member").items():
        assert body["role"] in allowed, name
        if body["role"] == "roles/storage.objectViewer":
            assert "condition" in body, f"{name} must be limited by a condition"


def test_retry_tick_is_scheduled_onto_the_tick_topic() -> None:
    """Cloud Scheduler publishes ``kind=retry-tick`` messages to the topic pushed to /tick."""
    job = _one(list(terraform().of_type("google_cloud_scheduler_job").values()))
    target = _one(job["pubsub_target"])
    assert topic_name(target["topic_name"]) == RETRY_TICK_TOPIC
    assert target["attributes"] == {"kind": RETRY_TICK_KIND}
    from dataset_export.localstack import scheduler

    assert scheduler.TICK_KIND == RETRY_TICK_KIND


def test_local_stack_mirrors_the_manifest_subscriptions() -> None:
    """The emulator stack creates the same subscriptions with the same delivery limits."""
    from dataset_export.localstack import provisioning

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
    assert pushes[provisioning.DEAD_LETTER_SUBSCRIPTION].topic == provisioning.DEAD_LETTER_TOPIC
    assert pushes[provisioning.TICK_SUBSCRIPTION].topic == provisioning.TICK_TOPIC


def test_firestore_ttl_policies_cover_the_expiring_collections() -> None:
    """TTL on expiresOn of exactly the collections the store writes expiresOn into."""
    from dataset_export.adapters import firestore_store

    ttl = {
        (body["collection"], body["field"])
        for body in terraform().of_type("google_firestore_field").values()
        if "ttl_config" in body
    }
    assert ttl == {
        (firestore_store.IDEMPOTENCY, "expiresOn"),
        (firestore_store.RATE_LIMITS, "expiresOn"),
    }
    source = Path(firestore_store.__file__).read_text("utf-8")
    assert source.count('"expiresOn"') >= 2


def test_exports_outlive_their_download_links() -> None:
    """The lifecycle rule deletes only export objects, and only after the links' 30 days."""
    from dataset_export.core.links import LINK_LIFETIME
    from dataset_export.service.process import object_name

    tf = terraform()
    rule = _one(tf.of_type("google_storage_bucket")["exports"]["lifecycle_rule"])
    condition = _one(rule["condition"])
    age_days = tf.resolve(condition["age"])
    assert isinstance(age_days, int)
    assert dt.timedelta(days=age_days) > LINK_LIFETIME
    (prefix,) = condition["matches_prefix"]
    assert object_name("0f8fad5b-d9cb-469f-a165-70867728950e", "csv").startswith(prefix)
    assert tf.resolve(f"${{{'var.export_retention_days'}}}") == age_days


def test_bundle_objects_read_the_manifest_the_bundler_writes() -> None:
    """One bundle object per function, uploaded from the manifest ``make bundle`` writes."""
    from dataset_export import bundle

    tf = terraform()
    assert f'/{bundle.MANIFEST}")' in tf.locals["bundles"]
    objects = tf.of_type("google_storage_bucket_object")["bundle"]
    assert objects["for_each"] == "${local.function_names}"
    assert objects["source"] == "${local.bundle_dir}/${local.bundles[each.key].file}"
