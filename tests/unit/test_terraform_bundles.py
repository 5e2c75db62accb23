"""``terraform plan`` on a fresh checkout stops with one line that says to run ``make bundle``.

The module reads the bundles through ``infra/terraform/modules/bundles``, which needs no
provider, so real Terraform plans it here offline: a root that calls it and uses its output the
way storage.tf does (one resource per function) is planned without bundles, with the bundles
``make bundle`` writes, with a stale bundle and with a function missing from the manifest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dataset_export_tools import bundle
from dataset_export_tools.deploy_manifest import FUNCTIONS

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "infra" / "terraform" / "modules" / "bundles"


def plan(tmp_path: Path, bundles: Path) -> subprocess.CompletedProcess[str]:
    """``terraform init`` and ``plan`` of a root using the bundles module like storage.tf."""
    assert shutil.which("terraform"), "Terraform is needed (it ships on this kind of machine)"
    root = tmp_path / "root"
    root.mkdir()
    functions = json.dumps(sorted(FUNCTIONS))
    (root / "main.tf").write_text(
        f"""
module "bundles" {{
  source    = "{MODULE}"
  directory = "{bundles}"
  functions = {functions}
}}

resource "terraform_data" "bundle" {{
  for_each = toset({functions})
  input    = module.bundles.files[each.key].path
}}
""",
        "utf-8",
    )
    config = tmp_path / "terraformrc"
    config.write_text("", "utf-8")
    env = {
        **os.environ,
        "TF_CLI_CONFIG_FILE": str(config),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "TF_DATA_DIR": str(tmp_path / "data"),
        "CHECKPOINT_DISABLE": "1",
    }
    init = subprocess.run(
        ["terraform", f"-chdir={root}", "init", "-backend=false", "-no-color"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert init.returncode == 0, init.stderr
    return subprocess.run(
        ["terraform", f"-chdir={root}", "plan", "-no-color", "-lock=false"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The message of each of the plan's errors (Terraform wraps it at 78 columns)."""
    blocks = result.stderr.split("Error: ")[1:]
    return [" ".join(block.strip().split("\n\n")[-1].split()) for block in blocks]


def test_without_bundles_plan_says_run_make_bundle(tmp_path: Path) -> None:
    """No build/bundles: one error, whose message is one line naming `make bundle`."""
    result = plan(tmp_path, tmp_path / "build" / "bundles")
    assert result.returncode == 1
    assert errors(result) == [
        f"No function bundles in {tmp_path}/build/bundles: run `make bundle` in the "
        "repository root, then plan again."
    ], result.stderr


def test_with_the_bundles_make_bundle_writes_plan_works(tmp_path: Path) -> None:
    """After `make bundle` the plan succeeds and uploads each function's own zip."""
    out = tmp_path / "bundles"
    built = bundle.build_all(REPO, out)
    result = plan(tmp_path, out)
    assert result.returncode == 0, result.stderr
    for item in built:
        assert str(item.path) in result.stdout


@pytest.mark.parametrize("broken", ["stale", "unlisted"])
def test_a_stale_or_incomplete_manifest_says_run_it_again(tmp_path: Path, broken: str) -> None:
    """A zip changed after `make bundle`, or a function left out: one error, run it again."""
    out = tmp_path / "bundles"
    built = bundle.build_all(REPO, out)
    victim = next(b for b in built if b.name == "notify")
    if broken == "stale":
        victim.path.write_bytes(victim.path.read_bytes() + b"\0")
        expected = (
            f"The bundles of notify do not match {out}/manifest.json: run `make bundle` again."
        )
    else:
        manifest = json.loads((out / bundle.MANIFEST).read_text("utf-8"))
        del manifest["bundles"]["notify"]
        (out / bundle.MANIFEST).write_text(json.dumps(manifest), "utf-8")
        expected = f"{out}/manifest.json has no bundle for notify: run `make bundle` again."
    result = plan(tmp_path, out)
    assert result.returncode == 1
    assert errors(result) == [expected], result.stderr
