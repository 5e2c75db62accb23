# Topics keep the names the code defaults to (config.py, deploy_manifest.py), so the local stack
# on the emulators and this deployment are wired alike.
#
# The functions are not given Eventarc triggers: an Eventarc-managed subscription can be given
# neither a dead-letter policy, nor a retry backoff, nor a path, and process must receive the
# dead-letter topic at /dead-letter and notify the retry tick at /tick. So each function is
# deployed as an HTTP service with internal-only ingress, and these push subscriptions deliver
# to it with an OIDC token of the export-pubsub-push service account. The functions-framework
# turns a Pub/Sub push body into the same CloudEvent an Eventarc trigger would send, and a
# non-2xx answer makes Pub/Sub redeliver with the subscription's backoff (retry enabled).

resource "google_pubsub_topic" "requests" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; messages carry only a queryUUID, never customer data or keys.
  name    = "export-requests"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.this]
}

resource "google_pubsub_topic" "ready" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; messages carry only a queryUUID, never customer data or keys.
  name    = "export-ready"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.this]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; messages carry only a queryUUID, never customer data or keys.
  name    = "export-dead-letter"
  project = var.project_id
  labels  = local.labels
  # Kept a week on the topic itself, so an operator can replay (seek) dead letters after a fix.
  message_retention_duration = "604800s"

  depends_on = [google_project_service.this]
}

resource "google_pubsub_topic" "retry_tick" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption at rest; a tick carries no data at all.
  name    = "export-retry-tick"
  project = var.project_id
  labels  = local.labels

  depends_on = [google_project_service.this]
}

# Export requests -> process. The push timeout equals the ack deadline: 600 s (the maximum) is
# above process's 540 s timeout, so a running export is never delivered a second time
# concurrently. A duplicate delivery while another instance runs the export is answered 503
# (the lease in Firestore decides), which counts as an attempt: hence 10 attempts, not 5.
resource "google_pubsub_subscription" "requests_process" {
  name    = "export-requests-process"
  project = var.project_id
  topic   = google_pubsub_topic.requests.id
  labels  = local.labels

  ack_deadline_seconds       = 600
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = google_cloudfunctions2_function.process.service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloudfunctions2_function.process.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = 10
  }

  expiration_policy {
    ttl = "" # never expires for inactivity
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.process_invoker_pubsub_push,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
  ]
}

# Ready exports -> notify. One webhook attempt is bounded (5 s connect, 15 s in total) plus a few
# Firestore writes, well under the 60 s deadline. Later attempts are scheduled in Firestore and
# sent by the retry tick, not by Pub/Sub redelivery.
resource "google_pubsub_subscription" "ready_notify" {
  name    = "export-ready-notify"
  project = var.project_id
  topic   = google_pubsub_topic.ready.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = google_cloudfunctions2_function.notify.service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloudfunctions2_function.notify.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = 5
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.notify_invoker_pubsub_push,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
  ]
}

# Dead letters -> process /dead-letter, which records the export as failed so the status API
# says why (a dead-lettered ready message only gets logged: notify owns delivery retries).
# No dead-letter policy of its own; undelivered messages here page the operator (monitoring.tf).
resource "google_pubsub_subscription" "dead_letter_process" {
  name    = "export-dead-letter-process"
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.id
  labels  = local.labels

  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.process.service_config[0].uri}/dead-letter"
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloudfunctions2_function.process.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.process_invoker_pubsub_push,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
  ]
}

# Retry ticks -> notify /tick. One tick sends up to a batch of due attempts one after another,
# which can take minutes: the deadline (600 s) sits above notify's 540 s timeout. Overlapping
# ticks are safe (each delivery is claimed with a Firestore precondition). A tick is worthless
# once the next one is due: kept 10 minutes (the minimum), retried briefly, never dead-lettered.
resource "google_pubsub_subscription" "retry_tick_notify" {
  name    = "export-retry-tick-notify"
  project = var.project_id
  topic   = google_pubsub_topic.retry_tick.id
  labels  = local.labels

  ack_deadline_seconds       = 600
  message_retention_duration = "600s"

  push_config {
    push_endpoint = "${google_cloudfunctions2_function.notify.service_config[0].uri}/tick"
    oidc_token {
      service_account_email = google_service_account.pubsub_push.email
      audience              = google_cloudfunctions2_function.notify.service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "60s"
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.notify_invoker_pubsub_push,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
  ]
}
