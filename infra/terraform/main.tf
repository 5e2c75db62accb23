# Dataset Webhook Export on Google Cloud: three Cloud Functions (2nd gen) around Pub/Sub,
# Firestore and Cloud Storage. The contract this module implements is
# src/dataset_export/deploy_manifest.py; tests/unit/test_terraform_wiring.py checks the two agree.
#
#   client -HTTPS-> export-submit -> topic export-requests -push-> export-process
#   export-process -> gzip object in the exports bucket -> topic export-ready -push-> export-notify
#   Cloud Scheduler -> topic export-retry-tick -push /tick-> export-notify (webhook retries)
#   undeliverable requests/ready messages -> topic export-dead-letter -push /dead-letter-> export-process

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  labels = merge(var.labels, { app = "dataset-export", managed-by = "terraform" })

  # Fixed names: one deployment per project (use a project per environment).
  function_names = {
    submit  = "export-submit"
    process = "export-process"
    notify  = "export-notify"
  }

  bucket_names = {
    exports  = "${var.project_id}-exports"
    datasets = "${var.project_id}-datasets"
    sources  = "${var.project_id}-function-sources"
  }

  # Gen2 functions answer on https://REGION-PROJECT.cloudfunctions.net/NAME; computed rather than
  # read from the resource because submit needs its own URL in its environment.
  public_url  = coalesce(var.public_url, "https://${var.region}-${var.project_id}.cloudfunctions.net/${local.function_names.submit}")
  dataset_uri = "gs://${google_storage_bucket.datasets.name}/${var.dataset_object}"

  bundle_dir = coalesce(var.bundle_dir, "${path.module}/../../build/bundles")
  bundles    = jsondecode(file("${local.bundle_dir}/manifest.json")).bundles

  pubsub_agent    = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  firestore_scope = var.create_firestore_database ? google_firestore_database.default[0].name : "(default)"

  services = toset([
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
  ])
}

resource "google_project_service" "this" {
  for_each = var.enable_apis ? local.services : toset([])

  project = var.project_id
  service = each.value
  # Other workloads in the project may use the same APIs: never switch them off on destroy.
  disable_on_destroy         = false
  disable_dependent_services = false
}
