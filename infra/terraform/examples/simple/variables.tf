variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project ID (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region of the functions and buckets."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as us-central1 or europe-west1."
  }
}

variable "prefix" {
  description = "Start of every name of this deployment; give a second deployment in the same project another one (e.g. staging)."
  type        = string
  default     = "export"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,16}[a-z0-9])?$", var.prefix))
    error_message = "prefix must be 1-18 lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "firestore_location" {
  description = "Firestore location (a region, or nam5/eur3). Default: the region."
  type        = string
  default     = null

  validation {
    condition     = var.firestore_location == null || can(regex("^([a-z]+[0-9]+|[a-z]+-[a-z]+[0-9]+)$", var.firestore_location))
    error_message = "firestore_location must be a region such as us-central1 or a multi-region such as nam5 or eur3."
  }
}

variable "firestore_database" {
  description = "Firestore database ID of this deployment. Default: \"<prefix>-db\"; \"(default)\" for the project's default database."
  type        = string
  default     = null

  validation {
    condition = var.firestore_database == null || var.firestore_database == "(default)" || (
      can(regex("^[a-z][a-z0-9-]{2,61}[a-z0-9]$", var.firestore_database)) &&
      !can(regex("^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$", var.firestore_database))
    )
    error_message = "firestore_database must be null, \"(default)\" or a database ID: 4-63 lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen, not a UUID."
  }
}

variable "create_firestore_database" {
  description = "Create the Firestore database; false when it exists already (e.g. the project's native-mode (default) database)."
  type        = bool
  default     = true
}

variable "environment" {
  description = "Value of the environment label on every resource."
  type        = string
  default     = "production"

  validation {
    condition     = can(regex("^[a-z0-9_-]{1,63}$", var.environment))
    error_message = "environment must be a label value: 1-63 lowercase letters, digits, underscores and hyphens."
  }
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel IDs for the alerts."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.notification_channels : can(regex("^projects/[^/]+/notificationChannels/[^/]+$", c))])
    error_message = "notification_channels entries must look like projects/PROJECT/notificationChannels/ID."
  }
}

variable "operator_members" {
  description = "IAM members allowed to read the key-encryption key (to create API keys)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.operator_members : can(regex("^(user|group|serviceAccount|domain|principal|principalSet):", m))])
    error_message = "operator_members entries must be IAM members such as group:ops@example.com."
  }
}

variable "deletion_protection" {
  description = "Protect Firestore and the buckets from destroy. Set false, apply, then destroy."
  type        = bool
  default     = true
}

variable "bigquery_source_table" {
  description = "A BigQuery table, PROJECT.DATASET.TABLE, for BigQuery to run the exports on (the module then creates the temporary dataset and grants). Default null: the Parquet file in the datasets bucket, queried by DuckDB."
  type        = string
  default     = null

  validation {
    condition     = var.bigquery_source_table == null || can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]\\.[A-Za-z0-9_]+\\.[A-Za-z0-9_-]+$", var.bigquery_source_table))
    error_message = "bigquery_source_table must be null or PROJECT.DATASET.TABLE (a project ID, a dataset ID of letters, digits and underscores, a table ID of ASCII letters, digits, underscores and hyphens)."
  }
}

variable "bigquery_location" {
  description = "BigQuery location of bigquery_source_table (US, EU or a region such as us-central1)."
  type        = string
  default     = "US"

  validation {
    condition     = can(regex("^(US|EU|[a-z]+-[a-z]+[0-9]+)$", var.bigquery_location))
    error_message = "bigquery_location must be the US or EU multi-region or a region such as us-central1."
  }
}
