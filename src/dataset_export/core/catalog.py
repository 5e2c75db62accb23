"""The dataset catalog: every column a customer may ask for, its type, and what it allows.

The catalog is the only source of identifiers that ever reach SQL text, so a column name is
trusted only after it was found here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class ColumnType(StrEnum):
    """The logical type of a column, as customers see it."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    DATE = "date"
    BOOLEAN = "boolean"


class Aggregate(StrEnum):
    """Aggregates a scope may ask for (matched case-insensitively on input)."""

    AVG = "Avg"
    SUM = "Sum"
    MIN = "Min"
    MAX = "Max"
    COUNT = "Count"
    COUNT_DISTINCT = "CountDistinct"
    MEDIAN = "Median"


class FilterOp(StrEnum):
    """Filter operators a leaf may use."""

    EQUALS = "equals"
    NOT_EQUALS = "notEquals"
    IN = "in"
    NOT_IN = "notIn"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    BETWEEN = "between"
    CONTAINS = "contains"
    STARTS_WITH = "startsWith"
    IS_NULL = "isNull"


_ORDERED_OPS = frozenset(
    {
        FilterOp.EQUALS,
        FilterOp.NOT_EQUALS,
        FilterOp.IN,
        FilterOp.NOT_IN,
        FilterOp.GT,
        FilterOp.GTE,
        FilterOp.LT,
        FilterOp.LTE,
        FilterOp.BETWEEN,
        FilterOp.IS_NULL,
    }
)

# Which operators fit which type: ordering comparisons need an order, text matching needs text.
OPS_BY_TYPE: Mapping[ColumnType, frozenset[FilterOp]] = {
    ColumnType.STRING: frozenset(
        {
            FilterOp.EQUALS,
            FilterOp.NOT_EQUALS,
            FilterOp.IN,
            FilterOp.NOT_IN,
            FilterOp.CONTAINS,
            FilterOp.STARTS_WITH,
            FilterOp.IS_NULL,
        }
    ),
    ColumnType.INTEGER: _ORDERED_OPS,
    ColumnType.NUMBER: _ORDERED_OPS,
    ColumnType.DATE: _ORDERED_OPS,
    ColumnType.BOOLEAN: frozenset({FilterOp.EQUALS, FilterOp.NOT_EQUALS, FilterOp.IS_NULL}),
}

_COUNTS = frozenset({Aggregate.COUNT, Aggregate.COUNT_DISTINCT})

# Arithmetic aggregates need numbers; text and booleans can only be counted.
AGGREGATES_BY_TYPE: Mapping[ColumnType, frozenset[Aggregate]] = {
    ColumnType.STRING: _COUNTS,
    ColumnType.INTEGER: frozenset(Aggregate),
    ColumnType.NUMBER: frozenset(Aggregate),
    ColumnType.DATE: _COUNTS | {Aggregate.MIN, Aggregate.MAX},
    ColumnType.BOOLEAN: _COUNTS,
}


@dataclass(frozen=True)
class Column:
    """One column of the dataset and what a query may do with it."""

    name: str
    type: ColumnType
    description: str
    nullable: bool = False
    filterable: bool = True
    aggregatable: bool = True

    @property
    def filter_ops(self) -> frozenset[FilterOp]:
        """The operators a filter on this column may use."""
        return OPS_BY_TYPE[self.type] if self.filterable else frozenset()

    @property
    def aggregates(self) -> frozenset[Aggregate]:
        """The aggregates a scope on this column may use."""
        return AGGREGATES_BY_TYPE[self.type] if self.aggregatable else frozenset()


@dataclass(frozen=True)
class Catalog:
    """An ordered set of columns, looked up by exact (case-sensitive) name."""

    name: str
    columns: tuple[Column, ...]
    _by_name: Mapping[str, Column] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {c.name: c for c in self.columns})
        if len(self._by_name) != len(self.columns):
            raise ValueError(f"catalog {self.name!r} declares a column twice")

    def get(self, name: str) -> Column | None:
        """The column called ``name``, or None."""
        return self._by_name.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[Column]:
        return iter(self.columns)

    def names(self) -> list[str]:
        """Column names in catalog order."""
        return [c.name for c in self.columns]


S, INT, N, D, B = (
    ColumnType.STRING,
    ColumnType.INTEGER,
    ColumnType.NUMBER,
    ColumnType.DATE,
    ColumnType.BOOLEAN,
)

RENTAL_LISTINGS = Catalog(
    name="rental_listings",
    columns=(
        Column("property_id", S, "Stable identifier of the listed unit, e.g. 'P000123456'."),
        Column("street_address", S, "Street address of the building, e.g. '1420 Pine St'."),
        Column("city", S, "City the property is in."),
        Column("state", S, "Two-letter US state code."),
        Column("zip_code", S, "Five-digit ZIP code, as text (leading zeros kept)."),
        Column("msa", S, "Metropolitan statistical area, e.g. 'Seattle, WA'."),
        Column("building_name", S, "Marketing name of the building; null for houses.", True),
        Column("property_type", S, "apartment, condo, townhouse or single_family."),
        Column("number_units", INT, "Units in the building."),
        Column("year_built", INT, "Year the building was completed."),
        Column("bed", INT, "Bedrooms, 0 (studio) to 5."),
        Column("bath", N, "Bathrooms, in halves (1, 1.5, 2 ...)."),
        Column("sqft", INT, "Interior area in square feet."),
        Column("asking_rent", N, "Advertised monthly rent in US dollars."),
        Column("effective_rent", N, "Monthly rent after concessions, in US dollars."),
        Column("lat", N, "Latitude, WGS84."),
        Column("lon", N, "Longitude, WGS84."),
        Column("listed_on", D, "Date the listing was first seen (ISO-8601 date)."),
        Column("is_active", B, "Whether the listing is still on the market."),
    ),
)
