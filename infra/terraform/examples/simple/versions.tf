terraform {
  required_version = ">= 1.11.0"

  # Exact versions: tools/tf_schema checks this configuration against the schemas of these two
  # (make terraform-check). Commit the .terraform.lock.hcl that `terraform init` writes.

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "7.46.1"
    }
    random = {
      source  = "hashicorp/random"
      version = "3.9.1"
    }
  }

  # Keep the state in a versioned bucket of your own (created once, outside this configuration):
  #   gcloud storage buckets create gs://PROJECT-tfstate --location=REGION \
  #     --uniform-bucket-level-access --public-access-prevention
  #   gcloud storage buckets update gs://PROJECT-tfstate --versioning
  # then uncomment and `terraform init -migrate-state`.
  # backend "gcs" {
  #   bucket = "PROJECT-tfstate"
  #   prefix = "dataset-export"
  # }
}
