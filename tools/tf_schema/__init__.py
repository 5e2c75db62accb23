"""Offline checks of the Terraform module against the provider schemas (see check.py)."""
