"""The offline schema check of infra/terraform finds nothing there and each planted error.

``tools/tf_schema/check.py`` reads every ``.tf`` file (examples included) against the google
7.46.1 and random 3.9.1 schemas extracted from the cdktn provider packages. Each case below
copies the module, plants one mistake of one kind with a text substitution, and expects the
check to report exactly that kind.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tools.tf_schema import check, extract

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "infra" / "terraform"

#: (kind, file, text to replace, replacement): one planted error each.
PLANTED = [
    (
        check.UNKNOWN_TYPE,
        "scheduler.tf",
        'resource "google_cloud_scheduler_job" "retry_tick" {',
        'resource "google_cloud_schedular_job" "retry_tick" {',
    ),
    (check.UNKNOWN_TYPE, "main.tf", 'data "google_project" "this"', 'data "google_projekt" "this"'),
    (
        check.UNKNOWN_ARGUMENT,
        "pubsub.tf",
        "  ack_deadline_seconds       = each.value.ack_deadline_seconds",
        "  ack_deadline               = each.value.ack_deadline_seconds",
    ),
    (check.UNKNOWN_BLOCK, "pubsub.tf", "  retry_policy {", "  retry_polcy {"),
    (  # a moved block's ``to`` must resolve (its ``from`` is gone by design)
        check.UNDECLARED,
        "firestore.tf",
        '  to   = google_firestore_field.ttl["rateLimits"]',
        '  to   = google_firestore_field.ttls["rateLimits"]',
    ),
    (
        check.ARGUMENT_AS_BLOCK,
        "scheduler.tf",
        "    attributes = {\n",
        "    attributes {\n",
    ),
    (
        check.BLOCK_AS_ARGUMENT,
        "secrets.tf",
        "  replication {\n    auto {}\n  }",
        "  replication = {\n    auto = {}\n  }",
    ),
    (
        check.REPEATED_BLOCK,
        "pubsub.tf",
        '  expiration_policy {\n    ttl = "" # never expires for inactivity\n  }',
        '  expiration_policy {\n    ttl = ""\n  }\n  expiration_policy {\n    ttl = "86400s"\n  }',
    ),
    (
        check.MISSING_REQUIRED,
        "iam.tf",
        '  role    = "roles/datastore.user"\n',
        "",
    ),
    (
        check.COMPUTED_ONLY,
        "functions.tf",
        "    all_traffic_on_latest_revision   = true\n",
        '    all_traffic_on_latest_revision   = true\n    uri = "https://example.com"\n',
    ),
    (
        check.COMPUTED_ONLY,
        "pubsub.tf",
        '  name    = "${var.prefix}-ready"\n',
        '  name    = "${var.prefix}-ready"\n  effective_labels = {}\n',
    ),
    (
        check.TYPE_MISMATCH,
        "scheduler.tf",
        "    retry_count = 0",
        '    retry_count = "none"',
    ),
    (
        check.TYPE_MISMATCH,
        "pubsub.tf",
        '  message_retention_duration = "604800s"',
        '  message_retention_duration = ["604800s"]',
    ),
    (
        check.TYPE_MISMATCH,
        "functions.tf",
        "    all_traffic_on_latest_revision   = true",
        '    all_traffic_on_latest_revision   = "yes"',
    ),
    (
        check.UNKNOWN_ARGUMENT,
        "pubsub.tf",
        "      max_delivery_attempts = dead_letter_policy.value",
        "      max_attempts = dead_letter_policy.value",
    ),
    (
        check.PROVIDER_VERSION,
        "versions.tf",
        'version = "7.46.1"',
        'version = "~> 7.0"',
    ),
    (check.UNDECLARED, "scheduler.tf", "var.retry_tick_schedule", "var.retry_schedule"),
    (
        check.UNKNOWN_ATTRIBUTE,
        "scheduler.tf",
        "google_pubsub_topic.retry_tick.id",
        "google_pubsub_topic.retry_tick.identifier",
    ),
    (
        check.UNKNOWN_ATTRIBUTE,
        "outputs.tf",
        "google_storage_bucket.exports.name",
        "google_storage_bucket.exports.nme",
    ),
    (
        check.INSTANCE_KEY,
        "iam.tf",
        "google_service_account.function[each.key].member",
        "google_service_account.function.member",
    ),
    (
        check.INSTANCE_KEY,
        "storage.tf",
        "bucket       = google_storage_bucket.sources.name",
        "bucket       = google_storage_bucket.sources[0].name",
    ),
    # The example root is checked too: its provider block, versions and module call.
    (
        check.UNKNOWN_ARGUMENT,
        "examples/simple/main.tf",
        "  region         = var.region\n",
        "  region         = var.region\n  zones          = []\n",
    ),
    (
        check.PROVIDER_VERSION,
        "examples/simple/versions.tf",
        'version = "3.9.1"',
        'version = "~> 3.7"',
    ),
    (
        check.MODULE_ARGUMENT,
        "examples/simple/main.tf",
        "  prefix                    = var.prefix",
        "  name_prefix               = var.prefix",
    ),
    (
        check.MISSING_REQUIRED,
        "examples/simple/main.tf",
        "  project_id                = var.project_id\n",
        "",
    ),
    (check.PARSE_ERROR, "outputs.tf", 'output "topics" {', 'output "topics" {{'),
    # The BigQuery resources (bigquery.tf) are checked like the rest.
    (
        check.UNKNOWN_ARGUMENT,
        "bigquery.tf",
        "  default_table_expiration_ms = var.bigquery_temp_table_expiration_hours",
        "  default_table_expiration    = var.bigquery_temp_table_expiration_hours",
    ),
    (
        check.TYPE_MISMATCH,
        "bigquery.tf",
        "  delete_contents_on_destroy = true",
        '  delete_contents_on_destroy = "always"',
    ),
    (
        check.MISSING_REQUIRED,
        "bigquery.tf",
        "  dataset_id = each.value.dataset\n",
        "",
    ),
    (
        check.COMPUTED_ONLY,
        "bigquery.tf",
        "  location                    = var.bigquery_location\n",
        '  location                    = var.bigquery_location\n  self_link = "x"\n',
    ),
    # References in templates nested in an expression's strings are checked too.
    (
        check.UNKNOWN_ATTRIBUTE,
        "main.tf",
        '"gs://${google_storage_bucket.datasets.name}/',
        '"gs://${google_storage_bucket.datasets.nme}/',
    ),
    (
        check.UNKNOWN_ATTRIBUTE,
        "bigquery.tf",
        'google_bigquery_dataset.temp["source"].dataset_id',
        'google_bigquery_dataset.temp["source"].dataset_name',
    ),
]


def run_check(root: Path) -> list[check.Problem]:
    """The problems the check finds under ``root``."""
    return check.check([root])


def test_the_module_and_its_examples_pass() -> None:
    """The module, the bundles module and the example have no problem."""
    problems = run_check(TERRAFORM)
    assert problems == [], "\n".join(map(str, problems))
    checked = {p.parent for p in TERRAFORM.rglob("*.tf")}
    assert checked == {TERRAFORM, TERRAFORM / "modules/bundles", TERRAFORM / "examples/simple"}


@pytest.mark.parametrize(
    ("kind", "file", "old", "new"), PLANTED, ids=[f"{k}:{f}" for k, f, _, _ in PLANTED]
)
def test_each_planted_error_is_found(
    tmp_path: Path, kind: str, file: str, old: str, new: str
) -> None:
    """One mistake planted in a copy is reported, with its kind, and nothing else is."""
    root = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, root, ignore=shutil.ignore_patterns(".terraform*"))
    target = root / file
    text = target.read_text("utf-8")
    assert text.count(old) >= 1, f"{old!r} is not in {file}"
    target.write_text(text.replace(old, new, 1), "utf-8")
    problems = run_check(root)
    assert problems, f"planting {new!r} in {file} went unnoticed"
    assert {p.kind for p in problems} == {kind}, "\n".join(map(str, problems))
    assert all(p.file.name == target.name for p in problems), "\n".join(map(str, problems))


def test_the_command_fails_with_one_line_per_problem(tmp_path: Path) -> None:
    """``check.py DIR`` exits 1 and prints ``file:line: address: message [kind]``."""
    root = tmp_path / "terraform"
    shutil.copytree(TERRAFORM, root)
    scheduler = root / "scheduler.tf"
    scheduler.write_text(scheduler.read_text("utf-8").replace("time_zone", "timezone"), "utf-8")
    result = subprocess.run(
        [sys.executable, str(REPO / "tools/tf_schema/check.py"), str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1, result
    (line,) = result.stdout.splitlines()
    assert "scheduler.tf:" in line
    assert "google_cloud_scheduler_job.retry_tick: timezone: no such argument" in line
    assert "(did you mean time_zone?)" in line
    assert line.endswith(f"[{check.UNKNOWN_ARGUMENT}]")


def test_the_schema_is_the_pinned_providers() -> None:
    """The committed schema came from google 7.46.1 and random 3.9.1 and has what we use."""
    providers = check.load_schema()["providers"]
    assert {name: p["version"] for name, p in providers.items()} == {
        "google": "7.46.1",
        "random": "3.9.1",
    }
    for package in extract.PACKAGES:
        assert providers[package.local_name]["extracted_from"] == (
            f"{package.distribution}=={package.distribution_version}"
        )
    function = providers["google"]["resource"]["google_cloudfunctions2_function"]
    assert function["blocks"]["service_config"]["list"] is False
    secrets = function["blocks"]["service_config"]["block"]["blocks"]
    assert secrets["secret_environment_variables"]["list"] is True
    assert "uri" in function["blocks"]["service_config"]["block"]["computed"]
    assert {"name", "location"} <= set(function["required"])
    assert "result" in providers["random"]["ephemeral"]["random_password"]["computed"]
    google = providers["google"]["resource"]
    dataset = google["google_bigquery_dataset"]
    assert {"default_table_expiration_ms", "delete_contents_on_destroy", "location"} <= set(
        dataset["attrs"]
    )
    assert dataset["required"] == ["dataset_id"]
    member = google["google_bigquery_dataset_iam_member"]
    assert set(member["required"]) == {"dataset_id", "member", "role"}
    assert set(google["google_project_iam_member"]["required"]) == {"member", "project", "role"}
    size = check.SCHEMA.stat().st_size
    assert size < 300_000, f"{size} bytes: keep the committed schema compact"


def _jsii_property(
    name: str, anchor: str | None, kind: dict[str, Any], optional: bool = True
) -> dict[str, Any]:
    docs = {"summary": "x"}
    if anchor:
        docs["remarks"] = f"Docs at Terraform Registry: {{@link https://r/t#{anchor} T#{anchor}}}"
    found: dict[str, Any] = {"name": name, "docs": docs, "type": kind}
    if optional:
        found["optional"] = True
    return found


def test_extraction_maps_jsii_types_to_arguments_and_blocks(tmp_path: Path) -> None:
    """Anchors name arguments; a struct is a single block, an array of structs a list; getters
    that are not arguments are computed."""
    struct = {"kind": "interface", "datatype": True}
    resolvable = {"fqn": "cdktn.IResolvable"}
    types = {
        "p.provider.Google": {
            "kind": "class",
            "base": "cdktn.TerraformProvider",
            "docs": {
                "summary": "Represents a {@link https://registry.terraform.io/providers/"
                "hashicorp/google/7.46.1/docs google}."
            },
        },
        "p.provider.GoogleConfig": {
            **struct,
            "properties": [_jsii_property("project", "project", {"primitive": "string"})],
        },
        "p.thing.Thing": {
            "kind": "class",
            "base": "cdktn.TerraformResource",
            "docs": {
                "summary": "Represents a {@link https://registry.terraform.io/providers/"
                "hashicorp/google/7.46.1/docs/resources/thing google_thing}."
            },
            "properties": [
                {"name": "tfResourceType", "static": True},
                {"name": "nameInput"},
                {"name": "name"},
                {"name": "createTime"},
            ],
        },
        "p.thing.ThingConfig": {
            **struct,
            "properties": [
                _jsii_property("name", "name", {"primitive": "string"}, optional=False),
                _jsii_property("buildAttribute", "build", {"primitive": "number"}),
                _jsii_property(
                    "enabled",
                    "enabled",
                    {"union": {"types": [{"primitive": "boolean"}, resolvable]}},
                ),
                _jsii_property(
                    "tags",
                    None,
                    {"collection": {"kind": "array", "elementtype": {"primitive": "string"}}},
                ),
                _jsii_property("spec", "spec", {"fqn": "p.thing.ThingSpec"}),
                _jsii_property(
                    "rule",
                    "rule",
                    {
                        "union": {
                            "types": [
                                resolvable,
                                {
                                    "collection": {
                                        "kind": "array",
                                        "elementtype": {"fqn": "p.thing.ThingRule"},
                                    }
                                },
                            ]
                        }
                    },
                ),
            ],
        },
        "p.thing.ThingSpec": {
            **struct,
            "properties": [_jsii_property("size", "size", {"primitive": "number"}, optional=False)],
        },
        "p.thing.ThingSpecOutputReference": {
            "kind": "class",
            "properties": [
                {"name": "sizeInput"},
                {"name": "size"},
                {"name": "uri"},
                {"name": "internalValue"},
            ],
        },
        "p.thing.ThingRule": {
            **struct,
            "properties": [
                _jsii_property(
                    "labels",
                    "labels",
                    {"collection": {"kind": "map", "elementtype": {"primitive": "string"}}},
                )
            ],
        },
    }
    package = extract.Package("google", "hashicorp/google", "7.46.1", "pkg", "1.0.0")
    schema = extract.extract(package, {"types": types, "version": "1.0.0"})
    assert schema["provider"] == {"attrs": {"project": "string"}}
    thing = schema["resource"]["google_thing"]
    assert thing["attrs"] == {
        "build": "number",
        "enabled": "bool",
        "name": "string",
        "tags": "list(string)",
    }
    assert thing["required"] == ["name"]
    assert thing["computed"] == ["create_time"]
    assert thing["blocks"]["spec"]["list"] is False
    assert thing["blocks"]["spec"]["block"] == {
        "attrs": {"size": "number"},
        "required": ["size"],
        "computed": ["uri"],
    }
    assert thing["blocks"]["rule"]["list"] is True
    assert thing["blocks"]["rule"]["block"]["attrs"] == {"labels": "map(string)"}


def test_the_committed_schema_is_compact_json() -> None:
    """providers.json.gz is one gzipped JSON document with sorted keys (reproducible)."""
    raw = gzip.decompress(check.SCHEMA.read_bytes())
    data = json.loads(raw)
    assert raw == json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
