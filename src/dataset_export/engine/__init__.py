"""Query engines that run a validated query over the dataset and stream the export file."""

from __future__ import annotations

from .duckdb_engine import DatasetMismatch, EngineSettings, ExportStats, run_export

__all__ = ["DatasetMismatch", "EngineSettings", "ExportStats", "run_export"]
