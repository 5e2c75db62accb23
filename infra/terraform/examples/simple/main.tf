# A whole deployment in one project. From the repository root:
#   make bundle
#   cd infra/terraform/examples/simple
#   cp terraform.tfvars.example terraform.tfvars   # then edit
#   terraform init && terraform plan -out=tfplan && terraform apply tfplan

provider "google" {
  project        = var.project_id
  region         = var.region
  default_labels = { environment = var.environment }
}

module "dataset_export" {
  source = "../.."

  project_id                = var.project_id
  region                    = var.region
  prefix                    = var.prefix
  firestore_location        = var.firestore_location
  firestore_database        = var.firestore_database
  create_firestore_database = var.create_firestore_database
  notification_channels     = var.notification_channels
  operator_members          = var.operator_members
  deletion_protection       = var.deletion_protection
  bigquery_source_table     = var.bigquery_source_table
  bigquery_location         = var.bigquery_location
}
