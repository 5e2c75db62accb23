variable "project_id" {
  description = "Google Cloud project to deploy into."
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

variable "prefix" {
  description = "Start of every name this deployment creates (functions, service accounts, topics, subscriptions, buckets, secrets, metrics, scheduler job, repository), and part of the dashboard's and alerts' titles, so that two deployments can share a project. The default gives the names the code defaults to."
  type        = string
  default     = "export"

  validation {
    # Service account IDs are 6-30 characters ("<prefix>-pubsub-push" is the longest); bucket
    # names are at most 63 ("<project>-<prefix>-datasets") and may not contain "google".
    condition     = can(regex("^[a-z]([a-z0-9-]{0,16}[a-z0-9])?$", var.prefix)) && !strcontains(var.prefix, "google")
    error_message = "prefix must be 1-18 characters of lowercase letters, digits and hyphens, start with a letter, end with a letter or digit, and not contain \"google\"."
  }
}

variable "firestore_location" {
  description = "Location of the Firestore database: a region (default: var.region) or a multi-region such as nam5 or eur3."
  type        = string
  default     = null

  validation {
    condition     = var.firestore_location == null || can(regex("^([a-z]+[0-9]+|[a-z]+-[a-z]+[0-9]+)$", var.firestore_location))
    error_message = "firestore_location must be a region such as us-central1 or a multi-region such as nam5 or eur3."
  }
}

variable "firestore_database" {
  description = "ID of this deployment's Firestore database. Default (null): \"<prefix>-db\", so that each deployment in a project has its own. \"(default)\" uses the project's default database, which only one deployment in the project can then use."
  type        = string
  default     = null

  validation {
    # Firestore's rule for database IDs; config.py applies the same one to EXPORT_FIRESTORE_DATABASE.
    condition = var.firestore_database == null || var.firestore_database == "(default)" || (
      can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database)) &&
      !can(regex("^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$", var.firestore_database))
    )
    error_message = "firestore_database must be null, \"(default)\" or a database ID: 4-63 lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen, not a UUID."
  }
}

variable "create_firestore_database" {
  description = "Create the Firestore database (local.firestore_database). Set false when it exists already, e.g. firestore_database = \"(default)\" in a project that has a native-mode default database (or import it: terraform import 'module.dataset_export.google_firestore_database.this[0]' 'projects/PROJECT/databases/(default)')."
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

  validation {
    condition     = var.bundle_dir == null || length(trimspace(coalesce(var.bundle_dir, " "))) > 0
    error_message = "bundle_dir must be null (the default) or a directory path."
  }
}

variable "public_url" {
  description = "Public base URL of the API, used in download links. Default: the submit function's own https://REGION-PROJECT.cloudfunctions.net/PREFIX-submit URL. Set it when a load balancer or custom domain fronts the API."
  type        = string
  default     = null

  validation {
    condition     = var.public_url == null || can(regex("^https://[^/?#]+(/[^?#]*[^/?#])?$", var.public_url))
    error_message = "public_url must be an https:// URL without a trailing slash, query or fragment."
  }
}

variable "dataset_object" {
  description = "Name of the Parquet dataset object in the datasets bucket (not read when bigquery_source_table is set)."
  type        = string
  default     = "rental_listings.parquet"

  validation {
    condition     = can(regex("^[^/.][^\\r\\n]*\\.parquet$", var.dataset_object)) && length(var.dataset_object) <= 1024
    error_message = "dataset_object must be a Cloud Storage object name (no leading slash or dot, at most 1024 characters) ending in .parquet."
  }
}

variable "bigquery_source_table" {
  description = "The BigQuery table exports query, \"PROJECT.DATASET.TABLE\", with the catalog's columns: process runs every export on BigQuery (EXPORT_DATASET_URI = bq://PROJECT.DATASET.TABLE), and this module creates the temporary dataset of the exports' result tables, enables the BigQuery and Storage Read APIs and grants process the roles it needs (bigquery.tf). The table may be in another project, whose dataset IAM the identity running Terraform must be allowed to change. Default (null): the Parquet object dataset_object in the datasets bucket, queried by DuckDB inside each process instance, and none of the BigQuery resources exist. Project IDs follow Google Cloud's rule (domain-scoped ones are not supported), dataset IDs BigQuery's; table IDs are kept to ASCII letters, digits, underscores and hyphens (config.py applies the same rules)."
  type        = string
  default     = null

  validation {
    condition = var.bigquery_source_table == null || (
      can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]\\.[A-Za-z0-9_]+\\.[A-Za-z0-9_-]+$", var.bigquery_source_table)) &&
      try(alltrue([for id in slice(split(".", var.bigquery_source_table), 1, 3) : length(id) <= 1024]), false)
    )
    error_message = "bigquery_source_table must be null or PROJECT.DATASET.TABLE: a project ID (6-30 lowercase letters, digits and hyphens, a letter first, no hyphen last), a dataset ID (1-1024 letters, digits and underscores) and a table ID (1-1024 ASCII letters, digits, underscores and hyphens)."
  }
}

variable "bigquery_location" {
  description = "EXPORT_BIGQUERY_LOCATION: the BigQuery location of bigquery_source_table (US, EU or a region such as us-central1). The query jobs run there and the temporary dataset is created there, since a query's tables and its destination table must share one location. Unused without bigquery_source_table."
  type        = string
  default     = "US"

  validation {
    condition     = can(regex("^(US|EU|[a-z]+-[a-z]+[0-9]+)$", var.bigquery_location))
    error_message = "bigquery_location must be the US or EU multi-region or a region such as us-central1."
  }
}

variable "bigquery_max_bytes_billed" {
  description = "EXPORT_BIGQUERY_MAX_BYTES_BILLED: the most bytes one BigQuery export's query may bill. Each export's dry run is refused above it, before anything is billed, as a permanent failure whose reason names the cap. The default, 1 TB (10^12 bytes), lets a full scan of every column of about 5.9 billion listings through (about 170 logical bytes a row in the generated data, by BigQuery's data size rules), and caps one export at about $5.68 at the on-demand list price of $6.25 per TiB. Set it near the source table's full-scan size with room for growth; a project-level query quota caps the total. At least 10485760: BigQuery bills at least 10 MiB a query. Unused without bigquery_source_table."
  type        = number
  default     = 1000000000000

  validation {
    condition     = var.bigquery_max_bytes_billed >= 10485760 && floor(var.bigquery_max_bytes_billed) == var.bigquery_max_bytes_billed
    error_message = "bigquery_max_bytes_billed must be a whole number of bytes, at least 10485760 (BigQuery bills at least 10 MiB a query)."
  }
}

variable "bigquery_temp_table_expiration_hours" {
  description = "Default table expiration of the temporary dataset, in hours. process deletes each export's result table itself once the export's file is composed, or once the export failed; the expiration removes what a crashed instance left. At least 6: a Storage Read session, which the export's parts read from, lives 6 hours, and the table must outlive it. Unused without bigquery_source_table."
  type        = number
  default     = 24

  validation {
    condition     = var.bigquery_temp_table_expiration_hours >= 6 && var.bigquery_temp_table_expiration_hours <= 168 && floor(var.bigquery_temp_table_expiration_hours) == var.bigquery_temp_table_expiration_hours
    error_message = "bigquery_temp_table_expiration_hours must be a whole number from 6 to 168: a result table must outlive the 6-hour Storage Read session its parts read, and the expiration is only a backstop."
  }
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

variable "tmp_object_age_days" {
  description = "Days after which temporary objects (tmp/<queryUUID>/: the parts of an export, its CSV header, intermediate composites) are deleted by a lifecycle rule. A backstop only: the process function deletes them itself once it composed the export's file, or when the export failed; the rule removes what a crashed instance left. At least 1, so that no part of a running export is deleted."
  type        = number
  default     = 2

  validation {
    condition     = var.tmp_object_age_days >= 1 && var.tmp_object_age_days <= 30 && floor(var.tmp_object_age_days) == var.tmp_object_age_days
    error_message = "tmp_object_age_days must be a whole number from 1 to 30: a running export's parts must not be deleted, and the rule is only a backstop."
  }
}

variable "part_rows" {
  description = "EXPORT_PART_ROWS: target rows per part. An export whose rows can be split is planned as parts of about this many rows (whole Parquet row groups), each run by any process instance from its own Pub/Sub message; the parts are then composed into one gzip file. Smaller parts run more of an export in parallel, larger ones pay the per-part overhead less often (see bench/README.md)."
  type        = number
  default     = 2000000

  validation {
    condition     = var.part_rows >= 1 && floor(var.part_rows) == var.part_rows
    error_message = "part_rows must be a positive whole number."
  }
}

variable "max_parts" {
  description = "EXPORT_MAX_PARTS: at most this many parts per export (parts grow beyond part_rows rows when an export would need more). At most 1024: two compose rounds of 32 sources, Cloud Storage's limit per compose, hold 32 x 32 parts."
  type        = number
  default     = 100

  validation {
    condition     = var.max_parts >= 1 && var.max_parts <= 1024 && floor(var.max_parts) == var.max_parts
    error_message = "max_parts must be a whole number from 1 to 1024 (two compose rounds of 32 sources)."
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
  description = "EXPORT_MAX_BODY_BYTES: the largest request body the API reads. The webhook echoes the submitted dataset, and customers' Express receivers reject bodies over express.json()'s default 100 kB limit: the default 64 KiB (the code's default) leaves room for the rest of the webhook."
  type        = number
  default     = 65536

  validation {
    condition     = var.max_body_bytes >= 1024 && var.max_body_bytes <= 98304 && floor(var.max_body_bytes) == var.max_body_bytes
    error_message = "max_body_bytes must be a whole number from 1024 to 98304: a larger dataset makes webhooks that Express receivers reject with 413 (express.json() accepts 100 kB by default)."
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

variable "retry_concurrency" {
  description = "EXPORT_RETRY_CONCURRENCY: due webhook retries one retry tick sends at once, so an endpoint that hangs until the sender's timeout delays only its own retry. The default 16 sends a tick's 50 due retries inside its 4-minute budget even if every endpoint hangs."
  type        = number
  default     = 16

  validation {
    condition     = var.retry_concurrency >= 1 && var.retry_concurrency <= 50 && floor(var.retry_concurrency) == var.retry_concurrency
    error_message = "retry_concurrency must be a whole number from 1 to 50: a retry tick sends at most 50 due retries."
  }
}

variable "python_runtime" {
  description = "Cloud Functions runtime of the three functions. The bundles are built and tested with Python 3.11."
  type        = string
  default     = "python311"

  validation {
    condition     = contains(["python311", "python312", "python313"], var.python_runtime)
    error_message = "python_runtime must be python311, python312 or python313 (the code needs Python 3.11 or newer)."
  }
}

variable "submit_function" {
  description = "Size, timeout and scaling of the public API function. Requests mostly wait on Firestore and DNS: functions-framework serves 4 threads per CPU."
  type = object({
    cpu             = optional(string, "1")
    memory          = optional(string, "512Mi")
    timeout_seconds = optional(number, 60)
    concurrency     = optional(number, 4)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 20)
  })
  default  = {}
  nullable = false

  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.submit_function.cpu) && can(regex("^[1-9][0-9]*(Mi|Gi)$", var.submit_function.memory))
    error_message = "submit_function: cpu must be one of 1, 2, 4, 6, 8; memory like 512Mi or 2Gi."
  }
  validation {
    condition     = var.submit_function.timeout_seconds >= 10 && var.submit_function.timeout_seconds <= 3600 && floor(var.submit_function.timeout_seconds) == var.submit_function.timeout_seconds
    error_message = "submit_function.timeout_seconds must be a whole number from 10 to 3600."
  }
  validation {
    condition     = var.submit_function.concurrency >= 1 && var.submit_function.concurrency <= 1000 && var.submit_function.min_instances >= 0 && var.submit_function.max_instances >= max(1, var.submit_function.min_instances) && var.submit_function.max_instances <= 1000
    error_message = "submit_function: concurrency 1-1000, and 0 <= min_instances <= max_instances <= 1000 with max_instances >= 1."
  }
}

variable "process_function" {
  description = "Size, timeout and scaling of the export worker (one export per instance: it uses every core for DuckDB, CSV formatting and gzip). /tmp is in memory on Cloud Functions, so memory must hold the Parquet dataset (copied there once per instance), the export itself (peak RSS 260-310 MB for full-table exports, up to 560 MB for a 10M-group aggregate; see bench/README.md) and what DuckDB spills to /tmp past its 384 MB limit. The timeout is the longest an export, or one part of an export planned as parts, may run; it must stay below the 600 s push deadline."
  type = object({
    cpu             = optional(string, "2")
    memory          = optional(string, "4Gi")
    timeout_seconds = optional(number, 540)
    concurrency     = optional(number, 1)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 10)
  })
  default  = {}
  nullable = false

  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.process_function.cpu) && can(regex("^[1-9][0-9]*(Mi|Gi)$", var.process_function.memory))
    error_message = "process_function: cpu must be one of 1, 2, 4, 6, 8; memory like 4Gi or 2048Mi."
  }
  validation {
    condition     = var.process_function.timeout_seconds >= 60 && var.process_function.timeout_seconds <= 590 && floor(var.process_function.timeout_seconds) == var.process_function.timeout_seconds
    error_message = "process_function.timeout_seconds must be a whole number from 60 to 590: Pub/Sub's push deadline (600 s, its maximum) must stay above it, or a running export is pushed again."
  }
  validation {
    condition     = var.process_function.concurrency == 1 && var.process_function.min_instances >= 0 && var.process_function.max_instances >= max(1, var.process_function.min_instances) && var.process_function.max_instances <= 1000
    error_message = "process_function: concurrency must be 1 (an export uses the whole instance), and 0 <= min_instances <= max_instances <= 1000 with max_instances >= 1."
  }
}

variable "notify_function" {
  description = "Size, timeout and scaling of the webhook sender. A retry tick sends due webhooks for up to 4 minutes (the code's budget) plus one last 15 s attempt, so the timeout must be longer; webhook attempts wait on customers' servers, not on the CPU."
  type = object({
    cpu             = optional(string, "1")
    memory          = optional(string, "512Mi")
    timeout_seconds = optional(number, 540)
    concurrency     = optional(number, 4)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 10)
  })
  default  = {}
  nullable = false

  validation {
    condition     = contains(["1", "2", "4", "6", "8"], var.notify_function.cpu) && can(regex("^[1-9][0-9]*(Mi|Gi)$", var.notify_function.memory))
    error_message = "notify_function: cpu must be one of 1, 2, 4, 6, 8; memory like 512Mi or 1Gi."
  }
  validation {
    condition     = var.notify_function.timeout_seconds >= 300 && var.notify_function.timeout_seconds <= 590 && floor(var.notify_function.timeout_seconds) == var.notify_function.timeout_seconds
    error_message = "notify_function.timeout_seconds must be a whole number from 300 to 590: above a retry tick's 4-minute budget plus one webhook attempt, below the tick's 600 s push deadline."
  }
  validation {
    condition     = var.notify_function.concurrency >= 1 && var.notify_function.concurrency <= 1000 && var.notify_function.min_instances >= 0 && var.notify_function.max_instances >= max(1, var.notify_function.min_instances) && var.notify_function.max_instances <= 1000
    error_message = "notify_function: concurrency 1-1000, and 0 <= min_instances <= max_instances <= 1000 with max_instances >= 1."
  }
}





variable "retry_tick_schedule" {
  description = "Cron schedule (UTC) of the webhook retry tick. Retries are due at whole minutes at best, so every minute is the useful maximum."
  type        = string
  default     = "* * * * *"

  validation {
    condition     = can(regex("^([0-9A-Za-z*/,-]+\\s+){4}[0-9A-Za-z*/,-]+$", trimspace(var.retry_tick_schedule)))
    error_message = "retry_tick_schedule must be a five-field cron expression such as \"* * * * *\" or \"*/2 * * * *\"."
  }
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
  description = "Alert when a request, part or ready message has waited this long unacknowledged (an export, or one part of it, runs at most process_function.timeout_seconds, 540 s by default)."
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
  description = "Turn on Cloud Storage Data Access audit logs for the project (who read or wrote which export). Off by default: google_project_iam_audit_config is authoritative for storage.googleapis.com, so it replaces the audit settings the project's owners made. Turn it on only where this deployment owns the project."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Labels added to every resource that takes labels (app, deployment and managed-by are set by the module)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "labels: keys must start with a lowercase letter and values may be empty; both at most 63 lowercase letters, digits, underscores and hyphens."
  }
}
