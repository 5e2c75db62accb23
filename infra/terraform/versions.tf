terraform {
  # 1.11: write-only arguments (secret_data_wo), so generated keys never reach state or plan.
  required_version = ">= 1.11.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # The version tools/tf_schema/providers.json.gz was extracted from (make terraform-check
      # checks every argument against it): change both together.
      version = "7.46.1"
    }
    random = {
      source  = "hashicorp/random"
      version = "3.9.1" # ephemeral random_password needs 3.7 or newer
    }
  }
}
