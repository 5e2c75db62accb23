"""The pure core: no Google import, no environment reads, no network."""
