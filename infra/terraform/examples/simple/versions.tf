terraform {
  required_version = ">= 1.11.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 7.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
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
