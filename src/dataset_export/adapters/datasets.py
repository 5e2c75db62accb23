"""A dataset that no export sees change: a local Parquet file, or a BigQuery table.

Unversioned: a plan over it records no version. For a BigQuery table that is sound, as the
query's result table is the snapshot every part reads; a local file is the local stack's and the
tests'. A dataset in Cloud Storage is versioned: ``gcs_storage.GcsDataset``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..service.ports import DatasetFile


@dataclass(frozen=True)
class FixedDataset:
    """``Datasets`` always at ``source``."""

    source: str

    def open(self, version: str | None = None) -> DatasetFile:
        """``source``, whatever version is asked for (it has none), and no identity: a local
        file can be rewritten in place (same path, size and times, other bytes), so nothing
        learnt of it is kept; a BigQuery table's engine uses nothing learnt."""
        return DatasetFile(self.source)
