# The three functions, built by Cloud Build from the content-addressed bundles (a code change is
# a new object name, hence a new build and revision) with a dedicated build service account,
# into this deployment's own Artifact Registry repository.
#
# Environment: exactly the variables each function reads (src/dataset_export/deploy_manifest.py;
# tests/unit/test_terraform_wiring.py keeps the two in step). Secrets are pinned to the version
# Terraform created, so a new version is an explicit, reviewed redeploy.

resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Holds only images built from this repository's own source (no data, no secrets); Google-managed encryption is enough.
  project       = var.project_id
  location      = var.region
  repository_id = "export-functions"
  description   = "Container images of the dataset-export Cloud Functions"
  format        = "DOCKER"
  labels        = local.labels

  # Keep the images of the last few deployments (for rollback), drop the rest after 30 days.
  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 5
    }
  }
  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.this]
}

# Public HTTP API. Ingress from anywhere and unauthenticated invocation: the API key in
# x-api-key is the authentication (checked against Firestore), with per-key rate limits.
resource "google_cloudfunctions2_function" "submit" {
  #checkov:skip=CKV_GCP_124:The public API must be reachable from the internet; every request is authenticated by the customer's API key.
  project     = var.project_id
  location    = var.region
  name        = local.function_names.submit
  description = "Dataset export API: POST /dataset/export, status, download links, redelivery"
  labels      = local.labels

  build_config {
    runtime           = "python311"
    entry_point       = "submit"
    service_account   = google_service_account.builder.id
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.bundle["submit"].name
      }
    }
    automatic_update_policy {}
  }

  service_config {
    service_account_email          = google_service_account.submit.email
    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true
    available_cpu                  = "1"
    available_memory               = "512Mi"
    timeout_seconds                = 60
    # functions-framework serves 4 threads per CPU; requests mostly wait on Firestore and DNS.
    max_instance_request_concurrency = 4
    min_instance_count               = var.submit_scaling.min_instances
    max_instance_count               = var.submit_scaling.max_instances

    environment_variables = {
      GOOGLE_CLOUD_PROJECT         = var.project_id
      EXPORT_ENV                   = "production"
      EXPORT_BUCKET                = google_storage_bucket.exports.name
      EXPORT_REQUESTS_TOPIC        = google_pubsub_topic.requests.name
      EXPORT_READY_TOPIC           = google_pubsub_topic.ready.name
      EXPORT_PUBLIC_URL            = local.public_url
      EXPORT_MAX_ROWS              = tostring(var.max_rows)
      EXPORT_MAX_BODY_BYTES        = tostring(var.max_body_bytes)
      EXPORT_RATE_LIMIT_PER_MINUTE = tostring(var.rate_limit_per_minute)
    }

    secret_environment_variables {
      key        = "EXPORT_LINK_SIGNING_KEY"
      project_id = var.project_id
      secret     = google_secret_manager_secret.link_signing_key.secret_id
      version    = google_secret_manager_secret_version.link_signing_key.version
    }
  }

  depends_on = [
    google_project_iam_member.builder_log_writer,
    google_artifact_registry_repository_iam_member.builder_writes_images,
    google_storage_bucket_iam_member.builder_reads_bundles,
    google_project_iam_member.builder_reads_gcf_sources,
    google_secret_manager_secret_iam_member.submit_reads_link_signing_key,
  ]
}

# Export worker, pushed export requests and dead letters by Pub/Sub. Internal ingress only;
# 540 s is the longest an export may run (the push deadline of 600 s sits above it).
resource "google_cloudfunctions2_function" "process" {
  project     = var.project_id
  location    = var.region
  name        = local.function_names.process
  description = "Dataset export worker: runs one export into a gzip object"
  labels      = local.labels

  build_config {
    runtime           = "python311"
    entry_point       = "process"
    service_account   = google_service_account.builder.id
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.bundle["process"].name
      }
    }
    automatic_update_policy {}
  }

  service_config {
    service_account_email          = google_service_account.process.email
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    available_cpu                  = var.process_resources.cpu
    available_memory               = var.process_resources.memory
    timeout_seconds                = 540
    # One export per instance: it uses every core (DuckDB, CSV formatting, gzip) and the memory.
    max_instance_request_concurrency = 1
    min_instance_count               = 0
    max_instance_count               = var.process_resources.max_instances

    environment_variables = {
      GOOGLE_CLOUD_PROJECT = var.project_id
      EXPORT_ENV           = "production"
      EXPORT_BUCKET        = google_storage_bucket.exports.name
      EXPORT_READY_TOPIC   = google_pubsub_topic.ready.name
      EXPORT_DATASET_URI   = local.dataset_uri
    }
  }

  depends_on = [
    google_project_iam_member.builder_log_writer,
    google_artifact_registry_repository_iam_member.builder_writes_images,
    google_storage_bucket_iam_member.builder_reads_bundles,
    google_project_iam_member.builder_reads_gcf_sources,
  ]
}

# Webhook sender, pushed ready messages and the retry tick by Pub/Sub. Internal ingress only.
# A tick sends a batch of due attempts one after another, hence the long timeout.
resource "google_cloudfunctions2_function" "notify" {
  project     = var.project_id
  location    = var.region
  name        = local.function_names.notify
  description = "Dataset export webhooks: signed delivery, retries, attempt log"
  labels      = local.labels

  build_config {
    runtime           = "python311"
    entry_point       = "notify"
    service_account   = google_service_account.builder.id
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.bundle["notify"].name
      }
    }
    automatic_update_policy {}
  }

  service_config {
    service_account_email          = google_service_account.notify.email
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    available_cpu                  = "1"
    available_memory               = "512Mi"
    timeout_seconds                = 540
    # Webhook attempts wait on customers' servers, not on the CPU.
    max_instance_request_concurrency = 4
    min_instance_count               = 0
    max_instance_count               = var.notify_max_instances

    environment_variables = {
      GOOGLE_CLOUD_PROJECT = var.project_id
      EXPORT_ENV           = "production"
      EXPORT_BUCKET        = google_storage_bucket.exports.name
      EXPORT_PUBLIC_URL    = local.public_url
    }

    secret_environment_variables {
      key        = "EXPORT_KEY_ENCRYPTION_KEY"
      project_id = var.project_id
      secret     = google_secret_manager_secret.key_encryption_key.secret_id
      version    = google_secret_manager_secret_version.key_encryption_key.version
    }
    secret_environment_variables {
      key        = "EXPORT_LINK_SIGNING_KEY"
      project_id = var.project_id
      secret     = google_secret_manager_secret.link_signing_key.secret_id
      version    = google_secret_manager_secret_version.link_signing_key.version
    }
  }

  depends_on = [
    google_project_iam_member.builder_log_writer,
    google_artifact_registry_repository_iam_member.builder_writes_images,
    google_storage_bucket_iam_member.builder_reads_bundles,
    google_project_iam_member.builder_reads_gcf_sources,
    google_secret_manager_secret_iam_member.notify_reads_key_encryption_key,
    google_secret_manager_secret_iam_member.notify_reads_link_signing_key,
  ]
}
