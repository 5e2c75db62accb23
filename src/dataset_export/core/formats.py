"""The file formats an export can be written in: the one definition every layer uses.

The request names one (``"format"``, any case), the record keeps its value, the object name
carries it (``exports/<queryUUID>.<format>.gz``) and the engine renders it (DESIGN.md, "The
export file"). ``ExportFormat`` is a ``StrEnum``, so a member equals its text (``"csv"``).
"""

from __future__ import annotations

from enum import StrEnum


class ExportFormat(StrEnum):
    """File formats an export can be written in."""

    CSV = "csv"
    JSONL = "jsonl"
