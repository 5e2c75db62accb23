"""Dataset Webhook Export: asynchronous gzip CSV/JSONL exports announced by a signed webhook."""

__version__ = "0.1.0"
