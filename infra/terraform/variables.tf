variable "project_id" {
  description = "Google Cloud project to deploy into. One deployment per project: topic and subscription names are fixed (they are the code's defaults)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region of the functions, buckets, Artifact Registry repository and scheduler job."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1 or europe-west1."
  }
}

variable "firestore_location" {
  description = "Location of the Firestore database: a region (default: var.region) or a multi-region such as nam5 or eur3."
  type        = string
  default     = null
}

variable "create_firestore_database" {
  description = "Create the (default) Firestore database. Set false when the project already has one in native mode (or import it: see docs/deploy.md)."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Protect the Firestore database and non-empty buckets from `terraform destroy`. Set false (and apply) before tearing down."
  type        = bool
  default     = true
}

variable "enable_apis" {
  description = "Enable the Google Cloud APIs this deployment uses. Set false when a platform team manages project services."
  type        = bool
  default     = true
}

variable "bundle_dir" {
  description = "Directory holding the function bundles and manifest.json written by `make bundle`. Default: <repository>/build/bundles."
  type        = string
  default     = null
}

variable "public_url" {
  description = "Public base URL of the API, used in download links. Default: the submit function's own https://REGION-PROJECT.cloudfunctions.net/export-submit URL. Set it when a load balancer or custom domain fronts the API."
  type        = string
  default     = null

  validation {
    condition     = var.public_url == null || can(regex("^https://[^/?#]+(/[^?#]*[^/?#])?$", var.public_url))
    error_message = "public_url must be an https:// URL without a trailing slash, query or fragment."
  }
}

variable "dataset_object" {
  description = "Name of the Parquet dataset object in the datasets bucket."
  type        = string
  default     = "rental_listings.parquet"
}

variable "export_retention_days" {
  description = "Days after which exported files are deleted. Download links promise 30 days, so at least 31."
  type        = number
  default     = 35

  validation {
    condition     = var.export_retention_days >= 31 && floor(var.export_retention_days) == var.export_retention_days
    error_message = "export_retention_days must be a whole number of at least 31: download links promise 30 days."
  }
}

variable "max_rows" {
  description = "EXPORT_MAX_ROWS: the largest row limit a request may ask for."
  type        = number
  default     = 50000000

  validation {
    condition     = var.max_rows >= 1 && floor(var.max_rows) == var.max_rows
    error_message = "max_rows must be a positive whole number."
  }
}

variable "max_body_bytes" {
  description = "EXPORT_MAX_BODY_BYTES: the largest request body the API reads."
  type        = number
  default     = 262144

  validation {
    condition     = var.max_body_bytes >= 1024 && floor(var.max_body_bytes) == var.max_body_bytes
    error_message = "max_body_bytes must be a whole number of at least 1024."
  }
}

variable "rate_limit_per_minute" {
  description = "EXPORT_RATE_LIMIT_PER_MINUTE: requests per API key per minute."
  type        = number
  default     = 60

  validation {
    condition     = var.rate_limit_per_minute >= 1 && floor(var.rate_limit_per_minute) == var.rate_limit_per_minute
    error_message = "rate_limit_per_minute must be a positive whole number."
  }
}

variable "submit_scaling" {
  description = "Instances of the public API function."
  type = object({
    min_instances = number
    max_instances = number
  })
  default = { min_instances = 0, max_instances = 20 }

  validation {
    condition     = var.submit_scaling.min_instances >= 0 && var.submit_scaling.max_instances >= max(1, var.submit_scaling.min_instances)
    error_message = "submit_scaling needs 0 <= min_instances <= max_instances and max_instances >= 1."
  }
}

variable "process_resources" {
  description = "Size of the export worker. /tmp is in memory on Cloud Functions, so memory must hold the Parquet dataset (copied there once per instance), the export itself (peak RSS 260-310 MB for full-table exports, up to 560 MB for a 10M-group aggregate; see bench/README.md) and what DuckDB spills to /tmp past its 384 MB limit for very large aggregates or sorts. One export per instance."
  type = object({
    cpu           = string
    memory        = string
    max_instances = number
  })
  default = { cpu = "2", memory = "4Gi", max_instances = 10 }

  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.process_resources.cpu) && can(regex("^[0-9]+(Mi|Gi)$", var.process_resources.memory)) && var.process_resources.max_instances >= 1
    error_message = "process_resources: cpu one of 1, 2, 4, 6, 8; memory like 4Gi or 2048Mi; max_instances >= 1."
  }
}

variable "notify_max_instances" {
  description = "Most instances of the webhook sender."
  type        = number
  default     = 10

  validation {
    condition     = var.notify_max_instances >= 1
    error_message = "notify_max_instances must be at least 1."
  }
}

variable "retry_tick_schedule" {
  description = "Cron schedule (UTC) of the webhook retry tick. Retries are due at whole minutes at best, so every minute is the useful maximum."
  type        = string
  default     = "* * * * *"
}

variable "operator_members" {
  description = "IAM members (e.g. group:export-ops@example.com) who may read the key-encryption key to create API keys with exportctl."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.operator_members : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):", m))])
    error_message = "operator_members entries must be IAM members such as group:ops@example.com."
  }
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel IDs (projects/P/notificationChannels/N) that receive the alerts."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "notification_channels entries must look like projects/PROJECT/notificationChannels/ID."
  }
}

variable "alert_oldest_unacked_seconds" {
  description = "Alert when a request or ready message has waited this long unacknowledged (an export runs at most 540 s)."
  type        = number
  default     = 1800

  validation {
    condition     = var.alert_oldest_unacked_seconds >= 600
    error_message = "alert_oldest_unacked_seconds must be at least 600 (one full export plus a retry)."
  }
}

variable "alert_export_failure_ratio" {
  description = "Alert when more than this fraction of the exports finished in 30 minutes failed."
  type        = number
  default     = 0.2

  validation {
    condition     = var.alert_export_failure_ratio > 0 && var.alert_export_failure_ratio <= 1
    error_message = "alert_export_failure_ratio must be in (0, 1]."
  }
}

variable "enable_storage_data_access_logs" {
  description = "Turn on Cloud Storage Data Access audit logs for the project (who read or wrote which export). Authoritative for storage.googleapis.com's audit config."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}
