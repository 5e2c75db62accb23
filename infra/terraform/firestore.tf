# Firestore (native mode): this deployment's own database, local.firestore_database
# ("<prefix>-db" unless var.firestore_database names another, such as "(default)"). The
# functions find it in EXPORT_FIRESTORE_DATABASE, so two deployments in one project (two
# prefixes) keep their accounts, API keys and export records apart. Collections: accounts,
# apiKeys, exports, idempotencyKeys, rateLimits, datasetVersions (what the process function
# learnt of each dataset version: the columns it may write unchecked). The queries are
# single-field (apiKeys.keyId ==, exports.deliveryDueOn <= now ordered by deliveryDueOn),
# served by automatic single-field indexes, so no composite index is declared.

resource "google_firestore_database" "this" {
  count = var.create_firestore_database ? 1 : 0

  project     = var.project_id
  name        = local.firestore_database_id
  location_id = coalesce(var.firestore_location, var.region)
  type        = "FIRESTORE_NATIVE"

  # Export records, keys and the webhook attempt log are the service's only state: 7 days of
  # point-in-time recovery, and no accidental deletion.
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy                   = var.deletion_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.this]
}

# TTL: Firestore deletes these documents (typically within 24 h) once expiresOn has passed.
# TTL fields are also exempted from indexing: monotonically increasing timestamps create index
# hotspots, and nothing queries them. idempotencyKeys and rateLimits expire with their window;
# datasetVersions after 30 days (CLEAN_COLUMNS_KEPT: a version exported from after that is
# scanned again).
locals {
  # Collection -> its TTL field.
  firestore_ttl = {
    idempotencyKeys = "expiresOn"
    rateLimits      = "expiresOn"
    datasetVersions = "expiresOn"
  }
}

resource "google_firestore_field" "ttl" {
  for_each = local.firestore_ttl

  project    = var.project_id
  database   = local.firestore_database
  collection = each.key
  field      = each.value

  ttl_config {}
  index_config {}
}

moved {
  from = google_firestore_field.idempotency_keys_ttl
  to   = google_firestore_field.ttl["idempotencyKeys"]
}

moved {
  from = google_firestore_field.rate_limits_ttl
  to   = google_firestore_field.ttl["rateLimits"]
}

# The submitted query, kept verbatim for the webhook's payload echo: large, never queried.
resource "google_firestore_field" "exports_dataset_json" {
  project    = var.project_id
  database   = local.firestore_database
  collection = "exports"
  field      = "datasetJson"

  index_config {}
}
