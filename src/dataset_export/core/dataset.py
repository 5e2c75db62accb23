"""The customer's ``dataset`` object as submitted, and the one place each stage reads it from.

Submit validates the object (``query.parse_dataset``) and keeps its text exactly as sent
(``jsontext.dump_preserving``: key order and number literals as the customer wrote them),
because the webhook echoes it as ``payload`` and signs it: the text stays byte-identical from
submit to notify. The export record carries it as a :class:`SubmittedDataset`; process reads
the query from it (:meth:`SubmittedDataset.query`) and notify the payload
(:attr:`SubmittedDataset.payload`), each parsing the text once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .catalog import Catalog
from .jsontext import dump_preserving, parse_preserving, parse_standard
from .query import Query, parse_dataset


@dataclass(frozen=True)
class SubmittedDataset:
    """The ``dataset`` object's text as submitted (compact, literals kept): what is stored."""

    text: str

    @classmethod
    def from_payload(cls, payload: Any) -> SubmittedDataset:
        """The dataset whose number-preserving parse is ``payload`` (``parse_preserving``)."""
        return cls(dump_preserving(payload))

    @cached_property
    def payload(self) -> Any:
        """The object as the customer wrote it, for the webhook's echo and its signature:
        numbers as their literals (``JsonNumber``), keys in the order sent. Parsed once."""
        return parse_preserving(self.text)

    def query(self, catalog: Catalog, *, max_rows: int) -> Query:
        """The query, checked against ``catalog``: raises ``InvalidRequest`` naming the field
        (``ValueError`` if the stored text is not JSON)."""
        return parse_dataset(parse_standard(self.text), catalog, max_rows=max_rows)
