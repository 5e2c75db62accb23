"""A dataset that no export sees change: a local Parquet file, or a BigQuery table.

Unversioned: a plan over it records no version. For a BigQuery table that is sound, as the
query's result table is the snapshot every part reads; a local file is the local stack's and the
tests'. A dataset in Cloud Storage is versioned: ``gcs_storage.GcsDataset``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.source import BIGQUERY_SCHEME
from ..service.ports import DatasetFile


@dataclass(frozen=True)
class FixedDataset:
    """``Datasets`` always at ``source``."""

    source: str

    def open(self, version: str | None = None) -> DatasetFile:
        """``source``, whatever version is asked for (it has none).

        A local file's identity is its path, inode, size and modification time, which a
        rewrite or a replacement changes; a BigQuery table has none (its engine renders every
        value checked), nor a file that cannot be read (the engine says why).
        """
        if self.source.startswith(BIGQUERY_SCHEME):
            return DatasetFile(self.source)
        try:
            stat = os.stat(self.source)
        except OSError:
            return DatasetFile(self.source)
        identity = f"file://{os.path.realpath(self.source)}#{stat.st_ino}-{stat.st_size}-"
        return DatasetFile(self.source, identity=f"{identity}{stat.st_mtime_ns}")
