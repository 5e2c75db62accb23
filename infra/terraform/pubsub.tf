# Topics are named PREFIX-requests, PREFIX-ready, PREFIX-parts, PREFIX-dead-letter and
# PREFIX-retry-tick; with the default prefix these are the names the code defaults to
# (config.py, deploy_manifest.py), so the local stack on the emulators and this deployment are
# wired alike. The functions are told their topics through the environment in any case.
#
# The functions are not given Eventarc triggers: an Eventarc-managed subscription can be given
# neither a dead-letter policy, nor a retry backoff, nor a path, and process must receive the
# dead-letter topic at /dead-letter and notify the retry tick at /tick. So each function is
# deployed as an HTTP service with internal-only ingress, and the push subscriptions of
# local.functions deliver to it with an OIDC token of the push service account. The
# functions-framework turns a Pub/Sub push body into the same CloudEvent an Eventarc trigger
# would send, and a non-2xx answer makes Pub/Sub redeliver with the subscription's backoff.

resource "google_pubsub_topic" "requests" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; messages carry only a queryUUID, never customer data or keys.
  name    = "${var.prefix}-requests"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.this]
}

resource "google_pubsub_topic" "ready" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; messages carry only a queryUUID, never customer data or keys.
  name    = "${var.prefix}-ready"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.this]
}

# The parts of exports planned as parts: process publishes one message per part
# ({"queryUUID", "part"}, attribute kind=export-part) and receives them through its
# PREFIX-parts-process subscription, so any number of instances run one export's parts.
resource "google_pubsub_topic" "parts" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; messages carry only a queryUUID and a part number, never customer data or keys.
  name    = "${var.prefix}-parts"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.this]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; messages carry only a queryUUID, never customer data or keys.
  name    = "${var.prefix}-dead-letter"
  project = var.project_id
  labels  = local.labels
  # Kept a week on the topic itself, so an operator can replay (seek) dead letters after a fix.
  message_retention_duration = "604800s"

  depends_on = [google_project_service.this]
}

resource "google_pubsub_topic" "retry_tick" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; a tick carries no data at all.
  name    = "${var.prefix}-retry-tick"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.this]
}

locals {
  # The push subscriptions of every function (local.functions[*].pushes), by subscription key.
  push_subscriptions = merge([
    for function, spec in local.functions : {
      for key, push in spec.pushes : key => merge(push, { function = function })
    }
  ]...)
}

resource "google_pubsub_subscription" "push" {
  for_each = local.push_subscriptions

  name    = "${var.prefix}-${each.key}"
  project = var.project_id
  topic   = local.topics[each.value.topic].id
  labels  = local.labels

  ack_deadline_seconds       = each.value.ack_deadline_seconds
  message_retention_duration = "${each.value.retention_seconds}s"

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.this[each.value.function].service_config[0].uri}${trimsuffix(each.value.path, "/")}"
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloudfunctions2_function.this[each.value.function].service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = each.value.maximum_backoff
  }

  dynamic "dead_letter_policy" {
    for_each = each.value.max_delivery_attempts == null ? [] : [each.value.max_delivery_attempts]
    content {
      dead_letter_topic     = google_pubsub_topic.dead_letter.id
      max_delivery_attempts = dead_letter_policy.value
    }
  }

  expiration_policy {
    ttl = "" # never expires for inactivity
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.function_invoker,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
  ]
}
