output "files" {
  description = "Function name -> {file, path, sha256} of its bundle."
  value       = local.files
  # Nothing may use a bundle before the manifest has been checked.
  depends_on = [terraform_data.manifest]
}
