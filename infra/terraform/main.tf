# Dataset Webhook Export on Google Cloud: three Cloud Functions (2nd gen) around Pub/Sub,
# Firestore and Cloud Storage. The contract this module implements is
# src/dataset_export_tools/deploy_manifest.py; tests/unit/test_terraform_wiring.py checks the two
# agree.
#
#   client -HTTPS-> PREFIX-submit -> topic PREFIX-requests -push-> PREFIX-process
#   PREFIX-process -> gzip object in the exports bucket -> topic PREFIX-ready -push-> PREFIX-notify
#   PREFIX-process -> one message per part -> topic PREFIX-parts -push-> PREFIX-process (any instance)
#   Cloud Scheduler -> topic PREFIX-retry-tick -push /tick-> PREFIX-notify (webhook retries)
#   undeliverable requests/parts/ready messages -> topic PREFIX-dead-letter -push /dead-letter-> PREFIX-process
#
# Every name starts with var.prefix ("export" by default, which gives the names the code
# defaults to), so two deployments can share a project.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  labels = merge(var.labels, { app = "dataset-export", deployment = var.prefix, managed-by = "terraform" })

  # Human-readable name of this deployment in the console (dashboard, alert policies).
  display_name = "Dataset export (${var.prefix})"

  # Function name -> deployed name (Cloud Functions and its Cloud Run service).
  function_names = { for name in keys(local.functions) : name => "${var.prefix}-${name}" }

  # Bucket names are global: the project ID (itself globally unique) keeps them apart from
  # every other project's, the prefix from the other deployments in this project.
  bucket_names = {
    exports  = "${var.project_id}-${var.prefix}-exports"
    datasets = "${var.project_id}-${var.prefix}-datasets"
    sources  = "${var.project_id}-${var.prefix}-sources"
  }

  # Gen2 functions answer on https://REGION-PROJECT.cloudfunctions.net/NAME; computed (with the
  # same name as local.function_names.submit) rather than read from the resource, because
  # submit needs its own URL in its environment.
  public_url = coalesce(var.public_url, "https://${var.region}-${var.project_id}.cloudfunctions.net/${var.prefix}-submit")

  # What process queries (EXPORT_DATASET_URI): the BigQuery table var.bigquery_source_table
  # names (bigquery.tf), or else the Parquet object var.dataset_object in the datasets bucket.
  dataset_uri = var.bigquery_source_table == null ? "gs://${google_storage_bucket.datasets.name}/${var.dataset_object}" : "bq://${var.bigquery_source_table}"

  bundle_dir = coalesce(var.bundle_dir, "${path.module}/../../build/bundles")

  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # This deployment's Firestore database: "<prefix>-db" (4-21 characters, a valid database ID
  # for every valid prefix), or the one var.firestore_database names. local.firestore_database
  # is the same ID, taken from the resource when this module creates it, so that what uses it
  # (functions, fields, IAM) waits for the database.
  firestore_database_id = coalesce(var.firestore_database, "${var.prefix}-db")
  firestore_database    = var.create_firestore_database ? google_firestore_database.this[0].name : local.firestore_database_id

  # The BigQuery and Storage Read APIs are enabled only when exports query a BigQuery table.
  services = setunion([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com", # signBlob: submit signs download URLs as itself
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ], var.bigquery_source_table == null ? [] : ["bigquery.googleapis.com", "bigquerystorage.googleapis.com"])
}

# The bundles `make bundle` wrote (build/bundles/manifest.json). Without them, plan stops with
# one error that says to run `make bundle`; with a stale manifest, with one that says to run it
# again.
module "bundles" {
  source = "./modules/bundles"

  directory = local.bundle_dir
  functions = keys(local.functions)
}

resource "google_project_service" "this" {
  for_each = var.enable_apis ? local.services : toset([])

  project = var.project_id
  service = each.value
  # Other workloads in the project may use the same APIs: never switch them off on destroy.
  disable_on_destroy         = false
  disable_dependent_services = false
}
