"""The BigQuery emulator for a test module: started through the local stack on its own ports,
one Parquet file loaded as a table, and a dataset for results; stopped by PID after."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dataset_export_tools.bigquery_load import emulator_clients, load_parquet
from dataset_export_tools.localstack.stack import Ports, StackConfig, down, up
from tests.conftest import REPO


@contextlib.contextmanager
def emulator_with_table(
    name: str, ports: Ports, project: str, path: Path, table: str, rows: int, results: str
) -> Iterator[tuple[Any, Any]]:
    """The emulator (state in .local/<name>) with ``path`` (``rows`` rows) loaded as ``table``
    and the dataset ``results`` created: its BigQuery and Storage Read clients."""
    config = StackConfig(
        state_dir=REPO / ".local" / name,
        repo_root=REPO,
        ports=ports,
        project=project,
        parts=frozenset({"bigquery"}),
        prepare_dataset=False,
        create_demo_key=False,
    )
    info = up(config)
    client = read = None
    try:
        client, read = emulator_clients(
            project, info.env["BIGQUERY_EMULATOR_HOST"], info.env["BIGQUERY_EMULATOR_GRPC_HOST"]
        )
        assert load_parquet(client, path, table) == rows
        client.create_dataset(results, exists_ok=True)
        yield client, read
    finally:
        if client is not None:
            client.close()
            read.transport.close()
        down(config)
