# Least privilege: one service account per function, one for Cloud Build and one that Pub/Sub
# pushes as. Every role is granted on the resource it is needed for (topic, subscription,
# bucket, secret, service, repository), with one documented exception per kind of resource
# that has no resource-level IAM:
# - Firestore: roles/datastore.user on the project, limited by an IAM condition to this
#   deployment's database (Firestore has no IAM policy on a database, but the project-level
#   grant can be conditioned on the database's resource name).
# - Cloud Logging: roles/logging.logWriter on the project, for the build service account.
#
# The function runtimes write their logs and metrics through Cloud Run, which needs no role.
# The functions' own bindings come from local.functions (functions.tf): the topics each
# publishes to, the secrets it reads, its bucket roles and who may invoke it.

locals {
  # The resources local.functions names by key.
  topics  = { requests = google_pubsub_topic.requests, ready = google_pubsub_topic.ready, parts = google_pubsub_topic.parts, dead_letter = google_pubsub_topic.dead_letter, retry_tick = google_pubsub_topic.retry_tick }
  buckets = { exports = google_storage_bucket.exports, datasets = google_storage_bucket.datasets }

  function_publishes = merge([
    for function, spec in local.functions : {
      for topic in spec.publishes : "${function}-${topic}" => { function = function, topic = topic }
    }
  ]...)
  function_secrets = merge([
    for function, spec in local.functions : {
      for variable, secret in spec.secrets : "${function}-${secret}" => { function = function, secret = secret }
    }
  ]...)
  function_bucket_roles = merge([
    for function, spec in local.functions : {
      for grant in spec.bucket_roles : "${function}-${grant.bucket}-${grant.role}" => merge(grant, { function = function })
    }
  ]...)
}

resource "google_service_account" "function" {
  for_each = local.functions

  project      = var.project_id
  account_id   = "${var.prefix}-${each.key}"
  display_name = "${local.display_name}: ${each.key} function"
  description  = "Runtime identity of ${local.function_names[each.key]}: ${each.value.description}"
}

resource "google_service_account" "pubsub_push" {
  project      = var.project_id
  account_id   = "${var.prefix}-pubsub-push"
  display_name = "${local.display_name}: Pub/Sub push identity"
  description  = "Identity in the OIDC token of Pub/Sub pushes to process and notify; may only invoke them"
}

resource "google_service_account" "builder" {
  project      = var.project_id
  account_id   = "${var.prefix}-builder"
  display_name = "${local.display_name}: Cloud Build"
  description  = "Builds the functions' container images from their bundles"
}

# --- the functions' own bindings (from local.functions) ----------------------------------

resource "google_pubsub_topic_iam_member" "function_publishes" {
  for_each = local.function_publishes

  project = var.project_id
  topic   = local.topics[each.value.topic].name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.function[each.value.function].member
}

resource "google_secret_manager_secret_iam_member" "function_reads_secret" {
  for_each = local.function_secrets

  project   = var.project_id
  secret_id = google_secret_manager_secret.this[each.value.secret].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function[each.value.function].member
}

# A grant with an object_prefix holds only for the objects under it (an IAM condition on the
# object's name; the buckets have uniform bucket-level access, which conditions require).
resource "google_storage_bucket_iam_member" "function_bucket_role" {
  for_each = local.function_bucket_roles

  bucket = local.buckets[each.value.bucket].name
  role   = each.value.role
  member = google_service_account.function[each.value.function].member

  dynamic "condition" {
    for_each = each.value.object_prefix == null ? [] : [each.value.object_prefix]
    content {
      title       = "objects-under-${trimsuffix(condition.value, "/")}-only"
      description = "Only the objects under ${condition.value} in ${local.buckets[each.value.bucket].name}"
      expression  = "resource.name.startsWith(\"projects/_/buckets/${local.buckets[each.value.bucket].name}/objects/${condition.value}\")"
    }
  }
}

# Accounts, API keys, exports, idempotency keys, rate counters, delivery claims. Granted on the
# project (Firestore has no IAM policy of its own on a database), but the condition limits it
# to this deployment's database: a function of one deployment cannot read another's keys.
resource "google_project_iam_member" "function_uses_firestore" {
  for_each = local.functions

  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.function[each.key].member

  condition {
    title       = "${var.prefix}-firestore-database-only"
    description = "Only the Firestore database of deployment ${var.prefix}"
    expression  = "resource.name == \"projects/${var.project_id}/databases/${local.firestore_database}\""
  }
}

# submit: anyone may call the API over HTTPS (the x-api-key header is the authentication).
# process and notify: only the Pub/Sub push identity.
resource "google_cloud_run_v2_service_iam_member" "function_invoker" {
  #checkov:skip=CKV_GCP_102:The public API (submit) authenticates every request itself with the customer's API key (x-api-key), as the product requires (checkov today checks only the v1 resource; kept for when it covers v2).
  for_each = local.functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this[each.key].name
  role     = "roles/run.invoker"
  member   = each.value.invoker == "allUsers" ? "allUsers" : google_service_account.pubsub_push.member
}

# There is no key file in the cloud: submit signs URLs through IAM signBlob as itself, which
# needs the token creator role on its own account (and nothing on any other account).
resource "google_service_account_iam_member" "submit_signs_as_itself" {
  service_account_id = google_service_account.function["submit"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_service_account.function["submit"].member
}

# --- Pub/Sub -------------------------------------------------------------------------------

# The Pub/Sub service agent mints the push requests' OIDC tokens as the push identity.
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
resource "google_pubsub_subscription_iam_member" "pubsub_agent_forwards_dead_letters" {
  for_each = { for key, push in local.push_subscriptions : key => push if push.max_delivery_attempts != null }

  project      = var.project_id
  subscription = google_pubsub_subscription.push[each.key].name
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
  member  = google_service_account.builder.member
}

# Pushes the built images (and the buildpacks cache) to this deployment's repository only.
resource "google_artifact_registry_repository_iam_member" "builder_writes_images" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.builder.member
}

# Reads the bundles uploaded by Terraform.
resource "google_storage_bucket_iam_member" "builder_reads_bundles" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.builder.member
}

# Cloud Functions copies each bundle into its own gcf-v2-sources-<number>-<region> bucket,
# created on first deploy (so it cannot be bound before it exists) and read by the build from
# there. Granted on the project, but the condition limits it to that one bucket.
resource "google_project_iam_member" "builder_reads_gcf_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = google_service_account.builder.member

  condition {
    title       = "gcf-v2-sources-only"
    description = "Only the Cloud Functions source staging bucket of this region"
    expression  = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}\")"
  }
}

# --- operators -----------------------------------------------------------------------------

# `exportctl keys create` encrypts new API keys with the KEK (README, "Create the first API key").
resource "google_secret_manager_secret_iam_member" "operators_read_key_encryption_key" {
  for_each = toset(var.operator_members)

  project   = var.project_id
  secret_id = google_secret_manager_secret.this["key_encryption_key"].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = each.value
}
