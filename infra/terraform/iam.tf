# Least privilege: one service account per function, one for Cloud Build and one that Pub/Sub
# pushes as. Every role is granted on the resource it is needed for (topic, subscription,
# bucket, secret, service, repository), with one documented exception per kind of resource
# that has no resource-level IAM:
# - Firestore: roles/datastore.user on the project (Firestore has no per-collection IAM; the
#   project holds only this service's database).
# - Cloud Logging: roles/logging.logWriter on the project, for the build service account.
#
# The function runtimes write their logs and metrics through Cloud Run, which needs no role.

resource "google_service_account" "submit" {
  project      = var.project_id
  account_id   = "export-submit"
  display_name = "dataset-export submit function"
  description  = "Runtime identity of the public export API"
}

resource "google_service_account" "process" {
  project      = var.project_id
  account_id   = "export-process"
  display_name = "dataset-export process function"
  description  = "Runtime identity of the export worker"
}

resource "google_service_account" "notify" {
  project      = var.project_id
  account_id   = "export-notify"
  display_name = "dataset-export notify function"
  description  = "Runtime identity of the webhook sender"
}

resource "google_service_account" "pubsub_push" {
  project      = var.project_id
  account_id   = "export-pubsub-push"
  display_name = "dataset-export Pub/Sub push identity"
  description  = "Identity in the OIDC token of Pub/Sub pushes to process and notify; may only invoke them"
}

resource "google_service_account" "builder" {
  project      = var.project_id
  account_id   = "export-builder"
  display_name = "dataset-export Cloud Build"
  description  = "Builds the functions' container images from their bundles"
}

# --- submit --------------------------------------------------------------------------------

# Accepting an export publishes its request.
resource "google_pubsub_topic_iam_member" "submit_publishes_requests" {
  project = var.project_id
  topic   = google_pubsub_topic.requests.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.submit.email}"
}

# POST /dataset/export/{queryUUID}/redeliver publishes a new ready message.
resource "google_pubsub_topic_iam_member" "submit_publishes_ready" {
  project = var.project_id
  topic   = google_pubsub_topic.ready.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.submit.email}"
}

# Download links redirect to V4 URLs signed by this account; Cloud Storage authorizes such a
# GET as the signer, so the signer must be able to read the export objects.
resource "google_storage_bucket_iam_member" "submit_reads_exports" {
  bucket = google_storage_bucket.exports.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.submit.email}"
}

# There is no key file in the cloud: submit signs URLs through IAM signBlob as itself, which
# needs the token creator role on its own account (and nothing on any other account).
resource "google_service_account_iam_member" "submit_signs_as_itself" {
  service_account_id = google_service_account.submit.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${google_service_account.submit.email}"
}

# Download links carry an HMAC made with the link-signing key, checked when redeemed.
resource "google_secret_manager_secret_iam_member" "submit_reads_link_signing_key" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.link_signing_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.submit.email}"
}

# Accounts, API keys, exports, idempotency keys, rate counters. Project level: Firestore has no
# resource-level IAM (the one exception in this module).
resource "google_project_iam_member" "submit_uses_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.submit.email}"
}

# Anyone may call the API over HTTPS: the x-api-key header is the authentication.
resource "google_cloud_run_v2_service_iam_member" "submit_invoker_public" {
  #checkov:skip=CKV_GCP_102:The public API authenticates every request itself with the customer's API key (x-api-key), as the product requires (checkov today checks only the v1 resource; kept for when it covers v2).
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.submit.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# --- process -------------------------------------------------------------------------------

# A finished export announces itself on export-ready.
resource "google_pubsub_topic_iam_member" "process_publishes_ready" {
  project = var.project_id
  topic   = google_pubsub_topic.ready.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.process.email}"
}

# Writes each export once (create-only uploads); objectCreator cannot overwrite or delete.
resource "google_storage_bucket_iam_member" "process_creates_exports" {
  bucket = google_storage_bucket.exports.name
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${google_service_account.process.email}"
}

# Reads an export's size and checksums after the upload, and the object an earlier run
# finished when a retried request finds it already there.
resource "google_storage_bucket_iam_member" "process_reads_exports" {
  bucket = google_storage_bucket.exports.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.process.email}"
}

# Downloads the Parquet dataset the queries run over.
resource "google_storage_bucket_iam_member" "process_reads_datasets" {
  bucket = google_storage_bucket.datasets.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.process.email}"
}

# Claims, leases, progress and results of exports. Project level: Firestore has no
# resource-level IAM.
resource "google_project_iam_member" "process_uses_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.process.email}"
}

# --- notify --------------------------------------------------------------------------------

# Decrypts the customer's stored API key, which is the HMAC key of the webhook signatures.
resource "google_secret_manager_secret_iam_member" "notify_reads_key_encryption_key" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.key_encryption_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.notify.email}"
}

# Builds the webhook's 30-day download link.
resource "google_secret_manager_secret_iam_member" "notify_reads_link_signing_key" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.link_signing_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.notify.email}"
}

# Delivery claims, the attempt log and the retry schedule. Project level: Firestore has no
# resource-level IAM.
resource "google_project_iam_member" "notify_uses_firestore" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.notify.email}"
}

# --- Pub/Sub push (the only identities that may invoke process and notify) -----------------

# Pushes of export-requests and export-dead-letter.
resource "google_cloud_run_v2_service_iam_member" "process_invoker_pubsub_push" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.process.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.pubsub_push.email}"
}

# Pushes of export-ready and export-retry-tick.
resource "google_cloud_run_v2_service_iam_member" "notify_invoker_pubsub_push" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.notify.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.pubsub_push.email}"
}

# The Pub/Sub service agent mints the push requests' OIDC tokens as export-pubsub-push.
resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  service_account_id = google_service_account.pubsub_push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent

  depends_on = [google_project_service.this]
}

# Dead-lettering: the service agent republishes undeliverable messages to the dead-letter topic...
resource "google_pubsub_topic_iam_member" "pubsub_agent_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

# ...and acknowledges them on the subscription they came from.
resource "google_pubsub_subscription_iam_member" "pubsub_agent_forwards_requests" {
  project      = var.project_id
  subscription = google_pubsub_subscription.requests_process.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_forwards_ready" {
  project      = var.project_id
  subscription = google_pubsub_subscription.ready_notify.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# Cloud Scheduler publishes the retry tick as its own service agent, whose role
# (roles/cloudscheduler.serviceAgent) already includes pubsub.topics.publish: no binding.

# --- Cloud Build ---------------------------------------------------------------------------

# Build logs. Project level: log writing has no resource-level IAM.
resource "google_project_iam_member" "builder_log_writer" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.builder.email}"
}

# Pushes the built images (and the buildpacks cache) to this deployment's repository only.
resource "google_artifact_registry_repository_iam_member" "builder_writes_images" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.builder.email}"
}

# Reads the bundles uploaded by Terraform.
resource "google_storage_bucket_iam_member" "builder_reads_bundles" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.builder.email}"
}

# Cloud Functions copies each bundle into its own gcf-v2-sources-<number>-<region> bucket,
# created on first deploy (so it cannot be bound before it exists) and read by the build from
# there. Granted on the project, but the condition limits it to that one bucket.
resource "google_project_iam_member" "builder_reads_gcf_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = "serviceAccount:${google_service_account.builder.email}"

  condition {
    title       = "gcf-v2-sources-only"
    description = "Only the Cloud Functions source staging bucket of this region"
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}\")"
  }
}

# --- operators -----------------------------------------------------------------------------

# `exportctl keys create` encrypts new API keys with the KEK (see docs/deploy.md).
resource "google_secret_manager_secret_iam_member" "operators_read_key_encryption_key" {
  for_each = toset(var.operator_members)

  project   = var.project_id
  secret_id = google_secret_manager_secret.key_encryption_key.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}
