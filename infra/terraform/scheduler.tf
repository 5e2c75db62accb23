# Webhook retries outlive Pub/Sub's redelivery (backoff at most 600 s, messages kept at most a
# week, 5 attempts here): notify records each failed attempt and its next due time in Firestore
# (exports.deliveryDueOn), and this job publishes a tick every minute that makes notify send
# whatever is due (push subscription PREFIX-retry-tick-notify, path /tick). The local stack
# runs the same mechanism with a ticker process publishing to the same topic.
resource "google_cloud_scheduler_job" "retry_tick" {
  project     = var.project_id
  region      = var.region
  name        = "${var.prefix}-webhook-retry-tick"
  description = "Publishes the webhook retry tick to ${google_pubsub_topic.retry_tick.name}"
  schedule    = var.retry_tick_schedule
  time_zone   = "Etc/UTC"

  # A missed tick is not retried: the next one is a minute away.
  retry_config {
    retry_count = 0
  }

  pubsub_target {
    topic_name = google_pubsub_topic.retry_tick.id
    data       = base64encode(jsonencode({ kind = "retry-tick" }))
    attributes = {
      kind = "retry-tick"
    }
  }

  depends_on = [google_project_service.this]
}
