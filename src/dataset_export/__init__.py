"""Dataset Webhook Export: asynchronous gzip CSV/JSONL exports announced by a signed webhook.

This is the deployed package: what the three Cloud Functions (``functions/*/main.py``) run, and
all a function bundle holds besides the entry point. Where each part lives:

- ``core``: pure rules and models (catalog, query, URL policy, records, delivery, errors);
- ``engine``: the query engine that renders the export file (DuckDB);
- ``service``: the use cases over small ports (submit, process, notify, downloads, keys);
- ``adapters``: the ports on Google Cloud (Firestore, Pub/Sub, Cloud Storage, DNS, webhooks);
- ``http_api``, ``events``, ``config``, ``logs``: HTTP and Pub/Sub decoding, settings, logging;
- ``wiring``: the composition root, the one module that plugs the adapters into the services.

Tooling that is never deployed (local stack, dataset generator, demo, ``exportctl``, bundler,
deploy manifest) is the ``dataset_export_tools`` package beside this one; the in-memory fakes
are ``tests/fakes.py``.
"""

__version__ = "0.1.0"
