"""Unit tests of ``core.source``: where the dataset lives and which engine that chooses."""

from __future__ import annotations

import pytest

from dataset_export.core.source import (
    BigQueryDataset,
    BigQueryTable,
    ParquetSource,
    bigquery_location_problem,
    parse_bigquery_dataset,
    parse_bigquery_table,
    parse_dataset_source,
)

#: Table references, and whether parse_bigquery_table takes them.
TABLES = {
    "my-project.listings.rental_listings": True,
    "abcdef.a.b": True,
    "a" + "b" * 28 + "c.d.t": True,  # a 30-character project
    f"my-project.{'d' * 1024}.{'t' * 1024}": True,
    "my-project.Listings_2026.rental-listings-v2": True,
    "my-project.1.2": True,
    "abcde.d.t": False,  # project of 5 characters
    "a" + "b" * 29 + "c.d.t": False,  # project of 31 characters
    "My-project.d.t": False,
    "1project.d.t": False,
    "my-project-.d.t": False,
    "my_project.d.t": False,
    "my-project.list-ings.t": False,  # no hyphen in a dataset ID
    f"my-project.{'d' * 1025}.t": False,
    f"my-project.d.{'t' * 1025}": False,
    "my-project.d.rental listings": False,  # BigQuery allows spaces; kept out (no escaping)
    "my-project.d.tablé": False,  # BigQuery allows Unicode letters; kept out
    "my-project.d.t`x": False,
    "my-project.d": False,
    "my-project.d.t.x": False,
    "my-project..t": False,
    "example.com:my-project.d.t": False,  # legacy domain-scoped project
    "": False,
}


@pytest.mark.parametrize(("text", "valid"), TABLES.items(), ids=[t[:40] for t in TABLES])
def test_table_references_follow_bigquerys_naming_rules(text: str, valid: bool) -> None:
    """Project, dataset and table IDs are checked against BigQuery's rules (tables: ASCII)."""
    if valid:
        table = parse_bigquery_table(text)
        assert str(table) == text
        assert table.engine == "bigquery"
    else:
        with pytest.raises(ValueError, match=r"project ID|dataset ID|table ID|must be PROJECT"):
            parse_bigquery_table(text)


def test_each_problem_names_the_part_that_is_wrong() -> None:
    """The message says which ID breaks which rule, and what a domain-scoped project lacks."""
    with pytest.raises(ValueError, match=r"project ID 'My-project' must be 6-30 lowercase"):
        parse_bigquery_table("My-project.d.t")
    with pytest.raises(ValueError, match=r"dataset ID 'list-ings' must be 1-1024 letters"):
        parse_bigquery_table("my-project.list-ings.t")
    with pytest.raises(ValueError, match=r"table ID 'a b' must be 1-1024 ASCII letters"):
        parse_bigquery_table("my-project.d.a b")
    with pytest.raises(ValueError, match=r"domain-scoped projects \(DOMAIN:PROJECT\)"):
        parse_bigquery_table("example.com:my-project.d.t")
    with pytest.raises(ValueError, match=r"must be PROJECT\.DATASET\.TABLE, got 'p\.d'"):
        parse_bigquery_table("p.d")


def test_a_bq_uri_is_a_bigquery_table_and_anything_else_parquet() -> None:
    """``bq://P.D.T`` is a BigQuery table (engine bigquery); paths and gs:// are Parquet."""
    source = parse_dataset_source("bq://my-project.listings.rental_listings")
    assert source == BigQueryTable("my-project", "listings", "rental_listings")
    assert source.engine == "bigquery"
    assert isinstance(source, BigQueryTable)
    assert source.uri == "bq://my-project.listings.rental_listings"
    assert source.dataset_ref == BigQueryDataset("my-project", "listings")
    for uri in ("gs://bucket/rental_listings.parquet", "/data/rental_listings.parquet"):
        parquet = parse_dataset_source(uri)
        assert parquet == ParquetSource(uri)
        assert parquet.engine == "duckdb"
    with pytest.raises(ValueError, match="project ID"):
        parse_dataset_source("bq://My.listings.rental_listings")
    with pytest.raises(ValueError, match="must name a Parquet file or a bq://"):
        parse_dataset_source("")


def test_datasets_are_project_and_dataset() -> None:
    """``PROJECT.DATASET`` parses with the same rules, and names its tables."""
    dataset = parse_bigquery_dataset("my-project.export_tmp")
    assert dataset == BigQueryDataset("my-project", "export_tmp")
    assert str(dataset) == "my-project.export_tmp"
    assert dataset.table("q_0f8fad5b") == BigQueryTable("my-project", "export_tmp", "q_0f8fad5b")
    for bad in ("my-project", "my-project.export-tmp", "my-project.a.b", "Project.d"):
        with pytest.raises(ValueError, match=r"must be PROJECT\.DATASET|project ID|dataset ID"):
            parse_bigquery_dataset(bad)


@pytest.mark.parametrize(
    ("location", "valid"),
    [
        ("US", True),
        ("EU", True),
        ("us-central1", True),
        ("europe-west4", True),
        ("northamerica-northeast1", True),
        ("us", False),
        ("USA", False),
        ("us-central", False),
        ("US-CENTRAL1", False),
        ("", False),
    ],
)
def test_locations_are_multi_regions_or_regions(location: str, valid: bool) -> None:
    """US, EU or a region such as us-central1; anything else is named with the rule."""
    problem = bigquery_location_problem(location)
    assert (problem is None) == valid, problem
    if not valid:
        assert problem is not None
        assert repr(location) in problem
