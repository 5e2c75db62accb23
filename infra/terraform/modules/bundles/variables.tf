variable "directory" {
  description = "Directory holding manifest.json and the bundles it lists."
  type        = string

  validation {
    condition     = length(trimspace(var.directory)) > 0
    error_message = "directory must not be empty."
  }
}

variable "functions" {
  description = "Functions that must each have a bundle."
  type        = set(string)

  validation {
    condition     = length(var.functions) > 0 && alltrue([for f in var.functions : can(regex("^[a-z][a-z0-9_]*$", f))])
    error_message = "functions must be a non-empty set of function names (lowercase letters, digits, underscores)."
  }
}
