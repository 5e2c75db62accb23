"""The rental-listings dataset in a BigQuery table: its schema from the catalog, the loader, and
clients for the local BigQuery emulator (tooling: the local stack and the tests; the deployed
code does not import it).

The emulator loads Parquet only with an explicit schema, and the schema should say what the
catalog says anyway: one column per catalog column, in catalog order, with the GoogleSQL type of
its logical type (``INT64`` for the file's int32 columns). Every column is ``NULLABLE``, the
mode BigQuery itself defaults to: the catalog's ``nullable`` describes the data, the table need
not enforce it. No column has a collation, so ``STRPOS`` and ``STARTS_WITH`` stay
case-sensitive (``bigquery_dialect``).

The emulator speaks plain HTTP (REST) and plaintext gRPC (Storage Read): ``emulator_clients``
gives both clients with anonymous credentials (``adapters.bigquery_engine.bigquery_clients``, which
the process function uses too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import bigquery

from dataset_export.adapters.bigquery_engine import bigquery_clients
from dataset_export.core.catalog import RENTAL_LISTINGS, Catalog, ColumnType

#: The GoogleSQL type of each logical column type.
BIGQUERY_TYPES = {
    ColumnType.STRING: "STRING",
    ColumnType.INTEGER: "INT64",
    ColumnType.NUMBER: "FLOAT64",
    ColumnType.DATE: "DATE",
    ColumnType.BOOLEAN: "BOOL",
}


def table_schema(catalog: Catalog = RENTAL_LISTINGS) -> list[Any]:
    """The table's columns: the catalog's names, types and descriptions, all NULLABLE."""
    return [
        bigquery.SchemaField(
            c.name, BIGQUERY_TYPES[c.type], mode="NULLABLE", description=c.description
        )
        for c in catalog
    ]


def emulator_clients(project: str, rest_url: str, grpc_host: str) -> tuple[Any, Any]:
    """The BigQuery and Storage Read clients on the emulator (``adapters.bigquery_engine``)."""
    return bigquery_clients(project, rest_endpoint=rest_url, grpc_endpoint=grpc_host)


def table_rows(client: Any, table: str) -> int | None:
    """The table's row count, or None when it does not exist."""
    try:
        return int(client.get_table(table).num_rows)
    except gexc.NotFound:
        return None


def load_parquet(
    client: Any,
    path: Path,
    table: str,
    catalog: Catalog = RENTAL_LISTINGS,
    *,
    timeout: float = 600.0,
) -> int:
    """Replace ``table`` (``project.dataset.table``; the dataset is created if missing) with the
    rows of the Parquet file ``path``, under ``table_schema(catalog)``; its row count."""
    project, dataset, _ = table.split(".")
    client.create_dataset(f"{project}.{dataset}", exists_ok=True)
    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.PARQUET,
        schema=table_schema(catalog),
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
    )
    with path.open("rb") as source:
        job = client.load_table_from_file(source, table, job_config=config)
    job.result(timeout=timeout)
    rows = table_rows(client, table)
    if rows is None:
        raise RuntimeError(f"the load job finished but {table} does not exist")
    return rows


def create_temp_dataset(client: Any, dataset: str, *, table_hours: int = 24) -> None:
    """Create ``dataset`` (``project.dataset``) if missing, as the BigQuery engine's temporary
    dataset: tables in it expire ``table_hours`` after they are created by default, as
    Terraform's temporary dataset (the emulator may not enforce it; the engine drops its
    tables itself)."""
    temp = bigquery.Dataset(dataset)
    temp.default_table_expiration_ms = table_hours * 3600 * 1000
    client.create_dataset(temp, exists_ok=True)
