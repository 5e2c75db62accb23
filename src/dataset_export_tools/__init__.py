"""Dataset Webhook Export's tooling: everything in this repository that is not deployed.

The deployed package is ``dataset_export``: what the three Cloud Functions run, and all a
function bundle holds. This package builds, runs and operates it, and imports ``dataset_export``
(never the other way round):

- ``localstack``: the local stack on the emulators (``make up``/``down``/``status``);
- ``dataset``: the deterministic rental-listings generator (the local and benchmark dataset);
- ``demo``: the seed's export end to end on the local stack (``make run``), and the seed's query;
- ``cli``: ``exportctl``, the operator CLI (API keys, datasets, submit/wait/download);
- ``bundle``: the functions' reproducible deploy zips (``make bundle``);
- ``deploy_manifest``: each function's contract with ``infra/terraform``.

The in-memory fakes of the service's ports are not here but in ``tests/fakes.py``, beside the
tests that use them.
"""
