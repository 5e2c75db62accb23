terraform {
  # 1.11: write-only arguments (secret_data_wo), so generated keys never reach state or plan.
  required_version = ">= 1.11.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 7.0"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7" # 3.7: ephemeral random_password
    }
  }
}
