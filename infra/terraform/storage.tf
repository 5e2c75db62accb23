# Three regional buckets, all with uniform bucket-level access (IAM only, no ACLs) and public
# access prevention: customers download through the API's short-lived signed URLs, never
# through public objects. Named PROJECT-PREFIX-{exports,datasets,sources} (main.tf).

# Finished exports: exports/<queryUUID>.<format>.gz, written once (if_generation_match=0). An
# export planned as parts also writes temporary objects under tmp/<queryUUID>/ (its parts, the
# CSV header, intermediate composites), which process deletes once it composed them.
resource "google_storage_bucket" "exports" {
  #checkov:skip=CKV_GCP_78:Objects are create-only (ifGenerationMatch=0) and expire by lifecycle; versioning would only keep deleted exports longer.
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Storage Data Access audit logs (variable enable_storage_data_access_logs, or the project's own audit config), not legacy usage logs.
  name                        = local.bucket_names.exports
  project                     = var.project_id
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection
  labels                      = local.labels

  # Download links promise 30 days; the files go after export_retention_days (35 by default).
  lifecycle_rule {
    condition {
      age            = var.export_retention_days
      matches_prefix = ["exports/"]
    }
    action {
      type = "Delete"
    }
  }

  # A backstop only: process deletes an export's temporary objects itself after composing them,
  # or when the export fails. Whatever a crash leaves behind goes after tmp_object_age_days.
  lifecycle_rule {
    condition {
      age            = var.tmp_object_age_days
      matches_prefix = ["tmp/"]
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.this]
}

# The Parquet dataset the process function queries (uploaded by the operator: see the README, Deploy).
resource "google_storage_bucket" "datasets" {
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Storage Data Access audit logs (variable enable_storage_data_access_logs, or the project's own audit config), not legacy usage logs.
  name                        = local.bucket_names.datasets
  project                     = var.project_id
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = !var.deletion_protection
  labels                      = local.labels

  # A replaced dataset stays restorable for a while (instances cache it per generation).
  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.this]
}

# Content-addressed function bundles (bundles/<name>-<sha256>.zip), read by Cloud Build.
resource "google_storage_bucket" "sources" {
  #checkov:skip=CKV_GCP_78:Every bundle has a unique content-addressed name, so no object is ever overwritten; versioning adds nothing.
  #checkov:skip=CKV_GCP_62:Access is recorded by Cloud Storage Data Access audit logs (variable enable_storage_data_access_logs, or the project's own audit config), not legacy usage logs.
  name                        = local.bucket_names.sources
  project                     = var.project_id
  location                    = var.region
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # Only build inputs: always removable.
  force_destroy = true
  labels        = local.labels

  depends_on = [google_project_service.this]
}

resource "google_storage_bucket_object" "bundle" {
  for_each = local.functions

  bucket       = google_storage_bucket.sources.name
  name         = "bundles/${module.bundles.files[each.key].file}"
  source       = module.bundles.files[each.key].path
  content_type = "application/zip"
}

# Who read or wrote which object: Data Access audit logs for Cloud Storage. Off by default: the
# resource is authoritative for the project's storage.googleapis.com audit config, so it would
# replace what the project's owners configured (and two deployments in one project would
# fight over it). Turn it on only where this deployment owns the project.
resource "google_project_iam_audit_config" "storage" {
  count = var.enable_storage_data_access_logs ? 1 : 0

  project = var.project_id
  service = "storage.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}
