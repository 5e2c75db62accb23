output "api_url" {
  description = "Base URL of the public API (POST <api_url>/dataset/export)."
  value       = local.public_url
}

output "function_urls" {
  description = "Cloud Run URLs of the three functions (process and notify accept internal traffic only)."
  value       = { for name, function in google_cloudfunctions2_function.this : name => function.service_config[0].uri }
}

output "exports_bucket" {
  description = "Bucket of the exported files (deleted after export_retention_days)."
  value       = google_storage_bucket.exports.name
}

output "datasets_bucket" {
  description = "Bucket that holds the Parquet dataset (left empty when exports query a BigQuery table)."
  value       = google_storage_bucket.datasets.name
}

output "dataset_uri" {
  description = "What process queries (EXPORT_DATASET_URI): the gs:// object to upload the Parquet dataset to (see the README, Deploy), or bq://PROJECT.DATASET.TABLE when bigquery_source_table is set."
  value       = local.dataset_uri
}

output "bigquery_temp_dataset" {
  description = "PROJECT.DATASET of the BigQuery exports' result tables (EXPORT_BIGQUERY_TEMP_DATASET); empty when exports run on DuckDB (no bigquery_source_table)."
  value       = local.bigquery_temp_dataset
}

output "topics" {
  description = "Pub/Sub topic names."
  value = {
    requests    = google_pubsub_topic.requests.name
    ready       = google_pubsub_topic.ready.name
    parts       = google_pubsub_topic.parts.name
    dead_letter = google_pubsub_topic.dead_letter.name
    retry_tick  = google_pubsub_topic.retry_tick.name
  }
}

output "subscriptions" {
  description = "Pub/Sub push subscription names."
  value       = { for key, subscription in google_pubsub_subscription.push : key => subscription.name }
}

output "firestore_database" {
  description = "ID of this deployment's Firestore database (EXPORT_FIRESTORE_DATABASE for exportctl keys create)."
  value       = local.firestore_database
}

output "link_signing_key_secret" {
  description = "Secret Manager secret of the download links' signing key."
  value       = google_secret_manager_secret.this["link_signing_key"].secret_id
}

output "service_accounts" {
  description = "Service account emails, one per function plus the push and build identities."
  value = merge(
    { for name, account in google_service_account.function : name => account.email },
    { pubsub_push = google_service_account.pubsub_push.email, builder = google_service_account.builder.email },
  )
}

output "key_encryption_key_secret" {
  description = "Secret Manager secret of the key-encryption key (exportctl keys create needs it)."
  value       = google_secret_manager_secret.this["key_encryption_key"].secret_id
}

output "prefix" {
  description = "The prefix of every name of this deployment."
  value       = var.prefix
}

output "dashboard_url" {
  description = "The Cloud Monitoring dashboard."
  value       = "https://console.cloud.google.com/monitoring/dashboards/builder/${element(split("/", google_monitoring_dashboard.exports.id), 3)}?project=${var.project_id}"
}

output "logs_url" {
  description = "Logs Explorer on the three functions' logs."
  value       = "https://console.cloud.google.com/logs/query;query=${urlencode(local.functions_log_filter)}?project=${var.project_id}"
}

output "dead_letter_subscription_url" {
  description = "The dead-letter subscription in the console (messages, backlog, metrics)."
  value       = "https://console.cloud.google.com/cloudpubsub/subscription/detail/${local.dead_letter_subscription.name}?project=${var.project_id}"
}
