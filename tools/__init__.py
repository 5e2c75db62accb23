"""Maintainer tooling: not part of the deployed package."""
