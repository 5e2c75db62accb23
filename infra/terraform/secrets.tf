# The two 32-byte keys the code reads, as base64 text (config.py's key32):
# - EXPORT_KEY_ENCRYPTION_KEY: AES-GCM key that seals stored API keys (notify decrypts them to
#   sign webhooks; exportctl encrypts new ones).
# - EXPORT_LINK_SIGNING_KEY: HMAC key of the 30-day download links (submit and notify).
#
# Terraform generates each value once, as an ephemeral value written through a write-only
# argument: it never appears in the plan or the state. 32 random characters from a 64-symbol
# alphabet (192 bits), base64-encoded, decode to exactly 32 bytes.
#
# Rotation is deliberately not a variable: a new KEK makes every stored API key undecryptable
# and a new link key breaks every outstanding download link. Versions are abandoned rather than
# destroyed if the resource is ever replaced, so an old key stays readable.

locals {
  # Key of the secret (as local.functions names it) -> secret ID.
  secrets = {
    key_encryption_key = "${var.prefix}-key-encryption-key"
    link_signing_key   = "${var.prefix}-link-signing-key"
  }
}

resource "google_secret_manager_secret" "this" {
  for_each = local.secrets

  project   = var.project_id
  secret_id = each.value
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.this]
}

ephemeral "random_password" "this" {
  for_each = local.secrets

  length           = 32
  special          = true
  override_special = "-_"
}

resource "google_secret_manager_secret_version" "this" {
  for_each = local.secrets

  secret                 = google_secret_manager_secret.this[each.key].id
  secret_data_wo         = base64encode(ephemeral.random_password.this[each.key].result)
  secret_data_wo_version = 1
  deletion_policy        = "ABANDON"
}
