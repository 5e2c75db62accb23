# The three functions, described once in local.functions: the functions, their service
# accounts, their push subscriptions and the IAM they need all come from this map.
# src/dataset_export_tools/deploy_manifest.py is the code's side of the same table;
# tests/unit/test_terraform_wiring.py reads both and fails when they differ.
#
# Each function is built by Cloud Build from its content-addressed bundle (a code change is a
# new object name, hence a new build and revision) with a dedicated build service account, into
# this deployment's own Artifact Registry repository. Secrets are pinned to the version
# Terraform created, so a new version is an explicit, reviewed redeploy.

locals {
  functions = {
    # Public HTTP API. Ingress from anywhere and unauthenticated invocation: the API key in
    # x-api-key is the authentication (checked against Firestore), with per-key rate limits.
    submit = {
      description = "Dataset export API: POST /dataset/export, status, download links, redelivery"
      entry_point = "submit"
      trigger     = "http"
      ingress     = "ALLOW_ALL"
      invoker     = "allUsers"
      sizing      = var.submit_function
      environment = {
        GOOGLE_CLOUD_PROJECT         = var.project_id
        EXPORT_ENV                   = "production"
        EXPORT_BUCKET                = google_storage_bucket.exports.name
        EXPORT_FIRESTORE_DATABASE    = local.firestore_database
        EXPORT_REQUESTS_TOPIC        = google_pubsub_topic.requests.name
        EXPORT_READY_TOPIC           = google_pubsub_topic.ready.name
        EXPORT_PUBLIC_URL            = local.public_url
        EXPORT_MAX_ROWS              = tostring(var.max_rows)
        EXPORT_MAX_BODY_BYTES        = tostring(var.max_body_bytes)
        EXPORT_RATE_LIMIT_PER_MINUTE = tostring(var.rate_limit_per_minute)
      }
      # Environment variable -> key of local.secrets.
      secrets = { EXPORT_LINK_SIGNING_KEY = "link_signing_key" }
      # Accepting an export publishes its request; POST .../redeliver publishes a ready message.
      publishes = ["requests", "ready"]
      # Download links redirect to V4 URLs signed by this account; Cloud Storage authorizes
      # such a GET as the signer, so the signer must be able to read the export objects.
      bucket_roles = [{ bucket = "exports", role = "roles/storage.objectViewer", object_prefix = null }]
      pushes       = {}
    }

    # Export worker, pushed export requests, the parts of exports and dead letters. Internal
    # ingress only; its timeout (540 s by default) is the longest an export, or one part of it,
    # may run, below the 600 s push deadline.
    process = {
      description = "Dataset export worker: runs exports, or their parts, into gzip objects"
      entry_point = "process"
      trigger     = "pubsub"
      ingress     = "ALLOW_INTERNAL_ONLY"
      invoker     = "pubsub_push"
      sizing      = var.process_function
      environment = {
        GOOGLE_CLOUD_PROJECT      = var.project_id
        EXPORT_ENV                = "production"
        EXPORT_BUCKET             = google_storage_bucket.exports.name
        EXPORT_FIRESTORE_DATABASE = local.firestore_database
        EXPORT_READY_TOPIC        = google_pubsub_topic.ready.name
        EXPORT_DATASET_URI        = local.dataset_uri
        EXPORT_PARTS_TOPIC        = google_pubsub_topic.parts.name
        EXPORT_PART_ROWS          = tostring(var.part_rows)
        EXPORT_MAX_PARTS          = tostring(var.max_parts)
        # Read when EXPORT_DATASET_URI is a bq:// table (var.bigquery_source_table); the
        # temporary dataset is "" otherwise (bigquery.tf).
        EXPORT_BIGQUERY_TEMP_DATASET     = local.bigquery_temp_dataset
        EXPORT_BIGQUERY_MAX_BYTES_BILLED = tostring(var.bigquery_max_bytes_billed)
        EXPORT_BIGQUERY_LOCATION         = var.bigquery_location
      }
      secrets = {}
      # A finished export announces itself on the ready topic; an export planned as parts
      # publishes one message per part to the parts topic, pushed back to process.
      publishes = ["ready", "parts"]
      bucket_roles = [
        # Names each export once (a create-only compose of its checked temporary object);
        # objectCreator cannot overwrite or delete. Reads the object an earlier run named when
        # a retried request finds it already there. Downloads the dataset.
        { bucket = "exports", role = "roles/storage.objectCreator", object_prefix = null },
        { bucket = "exports", role = "roles/storage.objectViewer", object_prefix = null },
        { bucket = "datasets", role = "roles/storage.objectViewer", object_prefix = null },
        # Writes, reads and deletes an export's temporary objects (tmp/<queryUUID>/: a single
        # part's upload, the parts, the CSV header, intermediate composites) once the export is
        # named or failed, and a damaged upload at once. The condition keeps it to tmp/:
        # finished exports stay undeletable.
        { bucket = "exports", role = "roles/storage.objectUser", object_prefix = "tmp/" },
      ]
      pushes = {
        # The push timeout equals the ack deadline: 600 s (the maximum) is above process's
        # timeout, so a running export is never delivered a second time concurrently. A
        # duplicate delivery while another instance runs the export is answered 503 (the lease
        # in Firestore decides), which counts as an attempt: hence 10 attempts, not 5.
        requests-process = {
          topic                 = "requests"
          path                  = "/"
          ack_deadline_seconds  = 600
          retention_seconds     = 604800
          maximum_backoff       = "600s"
          max_delivery_attempts = 10
        }
        # One message per part of an export (kind=export-part), to the same path as the
        # requests, with the same deadline and limits: a part runs as long as an export may.
        parts-process = {
          topic                 = "parts"
          path                  = "/"
          ack_deadline_seconds  = 600
          retention_seconds     = 604800
          maximum_backoff       = "600s"
          max_delivery_attempts = 10
        }
        # Dead letters of the requests, parts and ready subscriptions: the /dead-letter handler
        # records the export as failed so the status API says why (a dead-lettered ready
        # message only gets logged: notify owns delivery retries). No dead-letter policy of its
        # own; undelivered messages here page the operator (monitoring.tf).
        dead-letter-process = {
          topic                 = "dead_letter"
          path                  = "/dead-letter"
          ack_deadline_seconds  = 60
          retention_seconds     = 604800
          maximum_backoff       = "600s"
          max_delivery_attempts = null
        }
      }
    }

    # Webhook sender, pushed ready messages and the retry tick. Internal ingress only. A tick
    # sends a batch of due attempts within its time budget, hence the long timeout.
    notify = {
      description = "Dataset export webhooks: signed delivery, retries, attempt log"
      entry_point = "notify"
      trigger     = "pubsub"
      ingress     = "ALLOW_INTERNAL_ONLY"
      invoker     = "pubsub_push"
      sizing      = var.notify_function
      environment = {
        GOOGLE_CLOUD_PROJECT      = var.project_id
        EXPORT_ENV                = "production"
        EXPORT_BUCKET             = google_storage_bucket.exports.name
        EXPORT_FIRESTORE_DATABASE = local.firestore_database
        EXPORT_PUBLIC_URL         = local.public_url
        EXPORT_RETRY_CONCURRENCY  = tostring(var.retry_concurrency)
      }
      # Decrypts the customer's stored API key (the HMAC key of the webhook signatures) and
      # builds the webhook's 30-day download link.
      secrets = {
        EXPORT_KEY_ENCRYPTION_KEY = "key_encryption_key"
        EXPORT_LINK_SIGNING_KEY   = "link_signing_key"
      }
      publishes    = []
      bucket_roles = []
      pushes = {
        # One webhook attempt is bounded (5 s connect, 15 s in total) plus a few Firestore
        # writes, well under the 60 s deadline. Later attempts are scheduled in Firestore and
        # sent by the retry tick, not by Pub/Sub redelivery.
        ready-notify = {
          topic                 = "ready"
          path                  = "/"
          ack_deadline_seconds  = 60
          retention_seconds     = 604800
          maximum_backoff       = "600s"
          max_delivery_attempts = 5
        }
        # Overlapping ticks are safe (each delivery is claimed with a Firestore precondition).
        # The deadline (600 s) sits above notify's timeout. A tick is worthless once the next
        # one is due: kept 10 minutes (the minimum), retried briefly, never dead-lettered.
        retry-tick-notify = {
          topic                 = "retry_tick"
          path                  = "/tick"
          ack_deadline_seconds  = 600
          retention_seconds     = 600
          maximum_backoff       = "60s"
          max_delivery_attempts = null
        }
      }
    }
  }
}

resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Holds only images built from this repository's own source (no data, no secrets); Google-managed encryption is enough.
  project       = var.project_id
  location      = var.region
  repository_id = "${var.prefix}-functions"
  description   = "Container images of the ${local.display_name} Cloud Functions"
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

resource "google_cloudfunctions2_function" "this" {
  #checkov:skip=CKV_GCP_124:The public API (submit) must be reachable from the internet; every request is authenticated by the customer's API key. process and notify are internal only.
  for_each = local.functions

  project     = var.project_id
  location    = var.region
  name        = local.function_names[each.key]
  description = each.value.description
  labels      = local.labels

  build_config {
    runtime           = var.python_runtime
    entry_point       = each.value.entry_point
    service_account   = google_service_account.builder.id
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.bundle[each.key].name
      }
    }
    automatic_update_policy {}
  }

  service_config {
    service_account_email            = google_service_account.function[each.key].email
    ingress_settings                 = each.value.ingress
    all_traffic_on_latest_revision   = true
    available_cpu                    = each.value.sizing.cpu
    available_memory                 = each.value.sizing.memory
    timeout_seconds                  = each.value.sizing.timeout_seconds
    max_instance_request_concurrency = each.value.sizing.concurrency
    min_instance_count               = each.value.sizing.min_instances
    max_instance_count               = each.value.sizing.max_instances
    environment_variables            = each.value.environment

    dynamic "secret_environment_variables" {
      for_each = each.value.secrets
      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = google_secret_manager_secret.this[secret_environment_variables.value].secret_id
        version    = google_secret_manager_secret_version.this[secret_environment_variables.value].version
      }
    }
  }

  depends_on = [
    google_project_iam_member.builder_log_writer,
    google_artifact_registry_repository_iam_member.builder_writes_images,
    google_storage_bucket_iam_member.builder_reads_bundles,
    google_project_iam_member.builder_reads_gcf_sources,
    google_secret_manager_secret_iam_member.function_reads_secret,
  ]
}
