output "api_url" {
  description = "Base URL of the public API."
  value       = module.dataset_export.api_url
}

output "dataset_uri" {
  description = "Upload the Parquet dataset here."
  value       = module.dataset_export.dataset_uri
}

output "exports_bucket" {
  description = "Bucket of the exported files."
  value       = module.dataset_export.exports_bucket
}

output "key_encryption_key_secret" {
  description = "Secret holding the key-encryption key (for exportctl keys create)."
  value       = module.dataset_export.key_encryption_key_secret
}

output "firestore_database" {
  description = "Firestore database of this deployment (EXPORT_FIRESTORE_DATABASE for exportctl keys create)."
  value       = module.dataset_export.firestore_database
}

output "dashboard_url" {
  description = "The Cloud Monitoring dashboard."
  value       = module.dataset_export.dashboard_url
}

output "logs_url" {
  description = "Logs Explorer on the functions' logs."
  value       = module.dataset_export.logs_url
}

output "dead_letter_subscription_url" {
  description = "The dead-letter subscription in the console."
  value       = module.dataset_export.dead_letter_subscription_url
}

output "prefix" {
  description = "The prefix of every name of this deployment."
  value       = module.dataset_export.prefix
}
