variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the functions and buckets."
  type        = string
  default     = "us-central1"
}

variable "firestore_location" {
  description = "Firestore location (a region, or nam5/eur3). Default: the region."
  type        = string
  default     = null
}

variable "create_firestore_database" {
  description = "Create the (default) Firestore database; false when the project already has one in native mode."
  type        = bool
  default     = true
}

variable "environment" {
  description = "Value of the environment label on every resource."
  type        = string
  default     = "production"
}

variable "notification_channels" {
  description = "Cloud Monitoring notification channel IDs for the alerts."
  type        = list(string)
  default     = []
}

variable "operator_members" {
  description = "IAM members allowed to read the key-encryption key (to create API keys)."
  type        = list(string)
  default     = []
}

variable "deletion_protection" {
  description = "Protect Firestore and the buckets from destroy. Set false, apply, then destroy."
  type        = bool
  default     = true
}
