"""Where the dataset lives, and so which engine runs an export: a Parquet file or a BigQuery table.

``EXPORT_DATASET_URI`` names the source. ``bq://PROJECT.DATASET.TABLE`` is a BigQuery table,
queried by BigQuery (``engine == "bigquery"``); anything else is a Parquet file, a local path or a
``gs://`` URI, queried by DuckDB (``engine == "duckdb"``). Both hold the same columns (the
catalog's). ``EXPORT_BIGQUERY_TEMP_DATASET`` (``PROJECT.DATASET``) is where a BigQuery export's
result table is created.

The names are checked here against BigQuery's rules, so a typo fails at cold start with the part
that is wrong, not at the first export:

- project ID: 6-30 characters, lowercase ASCII letters, digits and hyphens, a letter first, no
  hyphen last (the rule for projects created today). Legacy domain-scoped IDs
  (``example.com:project``) are refused: they need their own quoting rules in GoogleSQL and no
  new project can have one;
- dataset ID: ASCII letters, digits and underscores, at most 1,024 characters (BigQuery's whole
  rule);
- table ID: BigQuery allows up to 1,024 UTF-8 bytes of Unicode letters, marks, numbers,
  connectors (``_``), dashes and spaces. This keeps to ASCII letters, digits, ``_`` and ``-``
  (at most 1,024 characters): such a name needs no escaping inside a backtick-quoted path in
  the SQL text and no Unicode normalization. A table with any other name can be given a view
  with a name of this kind.

Pure: no Google import, no environment, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar, Final, Literal

Engine = Literal["duckdb", "bigquery"]

#: The scheme of a BigQuery table in EXPORT_DATASET_URI.
BIGQUERY_SCHEME: Final = "bq://"

#: BigQuery project IDs (the rule for projects created today).
PROJECT_ID: Final = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
#: BigQuery dataset IDs: BigQuery's own rule.
DATASET_ID: Final = re.compile(r"[A-Za-z0-9_]{1,1024}")
#: BigQuery table IDs, kept to ASCII (module docstring).
TABLE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,1024}")
#: BigQuery locations: the US and EU multi-regions or a region such as ``us-central1``.
LOCATION: Final = re.compile(r"US|EU|[a-z]+-[a-z]+[0-9]+")

#: BigQuery's multi-region in the United States, where a dataset created without a location goes.
DEFAULT_BIGQUERY_LOCATION: Final = "US"
#: EXPORT_BIGQUERY_MAX_BYTES_BILLED by default: 1 TB, a per-export cap. A full scan of every
#: column of about 5.9 billion listings (~170 logical bytes a row of the generated dataset by
#: BigQuery's data size calculation) fits under it, so no export of a listings table is refused
#: for its size, and one export bills at most ~$5.68 at the on-demand list price ($6.25 per
#: TiB, README "Deploy"). The dry run refuses a query above it before anything is billed; set
#: it near the table's full-scan size, with headroom for growth.
DEFAULT_BIGQUERY_MAX_BYTES_BILLED: Final = 1_000_000_000_000
#: BigQuery bills at least 10 MiB per query and refuses a maximum_bytes_billed below it.
MIN_BYTES_BILLED: Final = 10 * 1024 * 1024


@dataclass(frozen=True)
class ParquetSource:
    """A Parquet file: a local path or a ``gs://`` URI, queried by DuckDB."""

    uri: str
    engine: ClassVar[Engine] = "duckdb"


@dataclass(frozen=True)
class BigQueryDataset:
    """A BigQuery dataset, ``PROJECT.DATASET``."""

    project: str
    dataset: str

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}"

    def table(self, table: str) -> BigQueryTable:
        """The table ``table`` of this dataset (checked like any other table ID)."""
        return parse_bigquery_table(f"{self}.{table}")


@dataclass(frozen=True)
class BigQueryTable:
    """A BigQuery table, ``PROJECT.DATASET.TABLE``, queried by BigQuery."""

    project: str
    dataset: str
    table: str
    engine: ClassVar[Engine] = "bigquery"

    def __str__(self) -> str:
        return f"{self.project}.{self.dataset}.{self.table}"

    @property
    def dataset_ref(self) -> BigQueryDataset:
        """The dataset that holds the table."""
        return BigQueryDataset(self.project, self.dataset)

    @property
    def uri(self) -> str:
        """The table as EXPORT_DATASET_URI names it, ``bq://PROJECT.DATASET.TABLE``."""
        return f"{BIGQUERY_SCHEME}{self}"


DatasetSource = ParquetSource | BigQueryTable


def _project_problem(project: str) -> str | None:
    if not PROJECT_ID.fullmatch(project):
        return (
            f"project ID {project!r} must be 6-30 lowercase letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen"
        )
    return None


def _dataset_problem(dataset: str) -> str | None:
    if not DATASET_ID.fullmatch(dataset):
        return (
            f"dataset ID {dataset!r} must be 1-1024 letters, digits and underscores "
            "(BigQuery's rule)"
        )
    return None


def _table_problem(table: str) -> str | None:
    if not TABLE_ID.fullmatch(table):
        return (
            f"table ID {table!r} must be 1-1024 ASCII letters, digits, underscores and "
            "hyphens (a subset of BigQuery's rule that needs no escaping in SQL)"
        )
    return None


def _split(text: str, parts: int, shape: str) -> list[str]:
    if ":" in text:
        raise ValueError(
            f"must be {shape} with a project ID: domain-scoped projects "
            f"(DOMAIN:PROJECT) are not supported, got {text!r}"
        )
    found = text.split(".")
    if len(found) != parts or not all(found):
        raise ValueError(f"must be {shape}, got {text!r}")
    return found


def parse_bigquery_table(text: str) -> BigQueryTable:
    """``PROJECT.DATASET.TABLE`` as a table; ValueError says which part breaks which rule."""
    project, dataset, table = _split(text, 3, "PROJECT.DATASET.TABLE")
    for problem in (_project_problem(project), _dataset_problem(dataset), _table_problem(table)):
        if problem:
            raise ValueError(problem)
    return BigQueryTable(project, dataset, table)


def parse_bigquery_dataset(text: str) -> BigQueryDataset:
    """``PROJECT.DATASET`` as a dataset; ValueError says which part breaks which rule."""
    project, dataset = _split(text, 2, "PROJECT.DATASET")
    for problem in (_project_problem(project), _dataset_problem(dataset)):
        if problem:
            raise ValueError(problem)
    return BigQueryDataset(project, dataset)


def parse_dataset_source(uri: str) -> DatasetSource:
    """The source ``uri`` names: ``bq://PROJECT.DATASET.TABLE`` or a Parquet path or URI.

    Raises ValueError, naming the part that is wrong, for a malformed ``bq://`` table or an
    empty ``uri``.
    """
    if not uri:
        raise ValueError("must name a Parquet file or a bq://PROJECT.DATASET.TABLE table")
    if uri.startswith(BIGQUERY_SCHEME):
        return parse_bigquery_table(uri.removeprefix(BIGQUERY_SCHEME))
    return ParquetSource(uri)


def bigquery_location_problem(location: str) -> str | None:
    """Why ``location`` is not a BigQuery location (``US``, ``EU`` or a region), or None."""
    if LOCATION.fullmatch(location):
        return None
    return (
        "must be the US or EU multi-region or a region such as us-central1 (where the "
        f"source table and the temporary dataset are), got {location!r}"
    )
