"""Synthetic rental-listings dataset: real US metros, plausible listings, written as Parquet."""
