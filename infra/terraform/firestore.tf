# Firestore (native mode, the (default) database the code's clients use). Collections: accounts,
# apiKeys, exports, idempotencyKeys, rateLimits. The queries are single-field (apiKeys.keyId ==,
# exports.deliveryDueOn <= now ordered by deliveryDueOn), served by automatic single-field
# indexes, so no composite index is declared.
#
# The code uses the project's (default) database, so two deployments in one project (two
# prefixes) share it and its collections: the second sets create_firestore_database = false and
# manage_firestore_fields = false, and the first keeps the TTL policies and index exemptions
# below for both. Keep environments that must not share API keys and export records in
# separate projects.

resource "google_firestore_database" "default" {
  count = var.create_firestore_database ? 1 : 0

  project     = var.project_id
  name        = "(default)"
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
# hotspots, and nothing queries them.
resource "google_firestore_field" "idempotency_keys_ttl" {
  count = var.manage_firestore_fields ? 1 : 0

  project    = var.project_id
  database   = local.firestore_scope
  collection = "idempotencyKeys"
  field      = "expiresOn"

  ttl_config {}
  index_config {}
}

resource "google_firestore_field" "rate_limits_ttl" {
  count = var.manage_firestore_fields ? 1 : 0

  project    = var.project_id
  database   = local.firestore_scope
  collection = "rateLimits"
  field      = "expiresOn"

  ttl_config {}
  index_config {}
}

# The submitted query, kept verbatim for the webhook's payload echo: large, never queried.
resource "google_firestore_field" "exports_dataset_json" {
  count = var.manage_firestore_fields ? 1 : 0

  project    = var.project_id
  database   = local.firestore_scope
  collection = "exports"
  field      = "datasetJson"

  index_config {}
}
