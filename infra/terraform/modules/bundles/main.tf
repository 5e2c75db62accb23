# The function bundles `make bundle` writes: build/bundles/<function>-<sha256>.zip and
# manifest.json ({"bundles": {"<function>": {"file": ..., "sha256": ...}}}).
#
# Terraform's file() fails with a long message about files "distributed as part of the
# configuration" when the manifest is missing, as in a fresh checkout. So the manifest is read
# with try(), and the missing, incomplete or stale cases each stop the plan with one error that
# says what to run. Until then the outputs hold placeholders, so nothing else fails first: every
# resource that uses them depends on terraform_data.manifest, whose preconditions fail.
# No provider: tests/unit/test_terraform_bundles.py plans this module with real Terraform.

locals {
  manifest = "${var.directory}/manifest.json"
  built    = fileexists(local.manifest)
  listed   = try(jsondecode(file(local.manifest)).bundles, {})
  files = {
    for name in var.functions : name => {
      file   = try(local.listed[name].file, "${name}-not-built.zip")
      path   = "${var.directory}/${try(local.listed[name].file, "${name}-not-built.zip")}"
      sha256 = try(local.listed[name].sha256, "")
    }
  }
  unlisted = local.built ? sort(setsubtract(var.functions, keys(local.listed))) : []
  stale = local.built ? sort([
    for name, bundle in local.files : name
    if !contains(local.unlisted, name) && try(filesha256(bundle.path), "") != bundle.sha256
  ]) : []
}

resource "terraform_data" "manifest" {
  lifecycle {
    precondition {
      condition     = local.built
      error_message = "No function bundles in ${var.directory}: run `make bundle` in the repository root, then plan again."
    }
    precondition {
      condition     = length(local.unlisted) == 0
      error_message = "${local.manifest} has no bundle for ${join(", ", local.unlisted)}: run `make bundle` again."
    }
    precondition {
      condition     = length(local.stale) == 0
      error_message = "The bundles of ${join(", ", local.stale)} do not match ${local.manifest}: run `make bundle` again."
    }
  }
}
