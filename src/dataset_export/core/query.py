"""The query model: a customer's ``dataset`` object checked against the catalog.

``parse_dataset`` turns the JSON a customer sent into a ``Query`` made only of catalog columns,
known operators and type-checked values, or raises ``InvalidRequest`` naming the field and the
problem (``unknown column 'rentt' in dataset.scopes[1].column``). The SQL compiler trusts a
``Query`` and nothing else.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeAlias

from .catalog import Aggregate, Catalog, Column, ColumnType, FilterOp
from .errors import InvalidRequest

MAX_SCOPES = 100
MAX_FILTER_NODES = 500
MAX_FILTER_DEPTH = 16
MAX_IN_VALUES = 1000
MAX_TEXT_VALUE = 500
MAX_ORDER_BY = 16
_ALIAS = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_INT64 = 2**63 - 1

_AGGREGATES = {a.value.lower(): a for a in Aggregate}
_OPS = {op.value: op for op in FilterOp}

Scalar: TypeAlias = str | int | float | bool | dt.date


class Direction(StrEnum):
    """Sort direction of an ``orderBy`` entry."""

    ASC = "asc"
    DESC = "desc"


@dataclass(frozen=True)
class Scope:
    """One output column: a catalog column, optionally aggregated, under its output name."""

    column: Column
    aggregate: Aggregate | None
    output_name: str


@dataclass(frozen=True)
class Condition:
    """A leaf filter: ``column OP value``; the value already fits the column's type."""

    column: Column
    op: FilterOp
    value: Scalar | tuple[Scalar, ...] | None


@dataclass(frozen=True)
class AllOf:
    """All children must hold (``and``, or a list of filters)."""

    children: tuple[FilterNode, ...]


@dataclass(frozen=True)
class AnyOf:
    """At least one child must hold (``or``)."""

    children: tuple[FilterNode, ...]


@dataclass(frozen=True)
class Negation:
    """The child must not hold (``not``)."""

    child: FilterNode


FilterNode: TypeAlias = Condition | AllOf | AnyOf | Negation


@dataclass(frozen=True)
class OrderKey:
    """Sort by an output column (or, for plain queries, any catalog column)."""

    name: str
    column: Column | None
    direction: Direction


@dataclass(frozen=True)
class Query:
    """A validated export query: safe to compile, nothing in it came unchecked from a client."""

    scopes: tuple[Scope, ...]
    filter: FilterNode | None
    limit: int | None
    order_by: tuple[OrderKey, ...]

    @property
    def is_aggregate(self) -> bool:
        """True when any scope aggregates; the plain scopes are then the GROUP BY keys."""
        return any(s.aggregate is not None for s in self.scopes)

    @property
    def group_by(self) -> tuple[Scope, ...]:
        """The GROUP BY keys of an aggregate query (empty for a plain one)."""
        if not self.is_aggregate:
            return ()
        return tuple(s for s in self.scopes if s.aggregate is None)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the exported columns, in scope order."""
        return tuple(s.output_name for s in self.scopes)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _suggest(name: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _expect_object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be an object, got {_type_name(value)}", field=where)
    return value


def _reject_unknown_keys(obj: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            hint = _suggest(key, allowed)
            raise InvalidRequest(
                f"unknown field '{key}' in {where}{hint}; allowed: {', '.join(allowed)}",
                field=f"{where}.{key}",
            )


class _Parser:
    def __init__(self, catalog: Catalog, max_rows: int) -> None:
        self.catalog = catalog
        self.max_rows = max_rows
        self.filter_nodes = 0

    def column(self, value: Any, where: str) -> Column:
        if not isinstance(value, str):
            raise InvalidRequest(
                f"{where} must be a column name (a string), got {_type_name(value)}", field=where
            )
        column = self.catalog.get(value)
        if column is None:
            hint = _suggest(value, self.catalog.names())
            raise InvalidRequest(f"unknown column '{value}' in {where}{hint}", field=where)
        return column

    def dataset(self, raw: Any) -> Query:
        obj = _expect_object(raw, "dataset")
        _reject_unknown_keys(obj, ("scopes", "filters", "limit", "orderBy"), "dataset")
        scopes = self.scopes(obj.get("scopes"))
        node = self.filters(obj.get("filters"), "dataset.filters")
        limit = self.limit(obj.get("limit"))
        order_by = self.order_by(obj.get("orderBy"), scopes)
        return Query(scopes=scopes, filter=node, limit=limit, order_by=order_by)

    def scopes(self, raw: Any) -> tuple[Scope, ...]:
        where = "dataset.scopes"
        if raw is None:
            raise InvalidRequest(f"{where} is required: list the columns to export", field=where)
        if not isinstance(raw, list):
            raise InvalidRequest(f"{where} must be a list, got {_type_name(raw)}", field=where)
        if not raw:
            raise InvalidRequest(f"{where} must name at least one column", field=where)
        if len(raw) > MAX_SCOPES:
            raise InvalidRequest(f"{where} may hold at most {MAX_SCOPES} columns", field=where)
        scopes: list[Scope] = []
        # CSV and JSON readers (pandas, BigQuery, DuckDB's own JSON) merge names that differ
        # only in case, so output names must be unique ignoring case.
        seen: dict[str, tuple[int, str]] = {}
        for i, item in enumerate(raw):
            at = f"{where}[{i}]"
            obj = _expect_object(item, at)
            _reject_unknown_keys(obj, ("column", "aggregate", "alias"), at)
            column = self.column(obj.get("column"), f"{at}.column")
            aggregate = self.aggregate(obj.get("aggregate"), column, f"{at}.aggregate")
            alias = obj.get("alias")
            if alias is not None:
                if not isinstance(alias, str) or not _ALIAS.fullmatch(alias):
                    raise InvalidRequest(
                        f"{at}.alias must be 1-63 letters, digits or underscores, "
                        "not starting with a digit",
                        field=f"{at}.alias",
                    )
                name = alias
            elif aggregate is not None:
                name = f"{aggregate.value.lower()}_{column.name}"
            else:
                name = column.name
            folded = name.lower()
            if folded in seen:
                first, first_name = seen[folded]
                same = "appears twice" if first_name == name else f"clashes with '{first_name}'"
                raise InvalidRequest(
                    f"output column '{name}' {same} (dataset.scopes[{first}] and {at}); output "
                    "names must be unique ignoring case: give one of them another alias",
                    field=at,
                )
            seen[folded] = (i, name)
            scopes.append(Scope(column=column, aggregate=aggregate, output_name=name))
        return tuple(scopes)

    def aggregate(self, raw: Any, column: Column, where: str) -> Aggregate | None:
        if raw is None:
            return None
        choices = ", ".join(a.value for a in Aggregate)
        if not isinstance(raw, str) or raw.lower() not in _AGGREGATES:
            shown = raw if isinstance(raw, str) else _type_name(raw)
            raise InvalidRequest(
                f"unknown aggregate '{shown}' in {where}; use one of {choices}", field=where
            )
        aggregate = _AGGREGATES[raw.lower()]
        if aggregate not in column.aggregates:
            allowed = sorted(a.value for a in column.aggregates)
            raise InvalidRequest(
                f"aggregate '{aggregate.value}' does not apply to {column.type.value} column "
                f"'{column.name}' in {where}; it allows {', '.join(allowed) or 'none'}",
                field=where,
            )
        return aggregate

    def filters(self, raw: Any, where: str, depth: int = 0) -> FilterNode | None:
        # A list means "all must hold"; null entries are ignored, as the public docs show.
        # None means "no condition": null, or an 'and' (or a list) with no condition left, which
        # filters nothing. An 'or' or a 'not' needs a condition in every branch: an empty
        # disjunction matches no row, and reading it as "no filter" would export everything.
        if raw is None:
            return None
        if depth > MAX_FILTER_DEPTH:
            raise InvalidRequest(
                f"{where} nests deeper than {MAX_FILTER_DEPTH} levels", field=where
            )
        if isinstance(raw, list):
            return self.all_of(raw, where, depth)
        obj = _expect_object(raw, where)
        if not obj:
            raise InvalidRequest(
                f'{where} is an empty object: give a condition {{"column": ..., "filter": '
                '{...}} or one of "and", "or", "not"',
                field=where,
            )
        self.filter_nodes += 1
        if self.filter_nodes > MAX_FILTER_NODES:
            raise InvalidRequest(
                f"dataset.filters holds more than {MAX_FILTER_NODES} conditions", field=where
            )
        if "and" in obj or "or" in obj or "not" in obj:
            if len(obj) != 1:
                raise InvalidRequest(
                    f"{where} must hold exactly one of 'and', 'or', 'not' and nothing else",
                    field=where,
                )
            if "not" in obj:
                child = self.filters(obj["not"], f"{where}.not", depth + 1)
                if child is None:
                    raise InvalidRequest(
                        f"{where}.not holds no condition, so there is nothing to negate; "
                        "give it a condition or remove the 'not'",
                        field=f"{where}.not",
                    )
                return Negation(child)
            key = "and" if "and" in obj else "or"
            items = obj[key]
            if not isinstance(items, list):
                raise InvalidRequest(
                    f"{where}.{key} must be a list, got {_type_name(items)}", field=f"{where}.{key}"
                )
            if key == "and":
                return self.all_of(items, f"{where}.and", depth)
            return self.any_of(items, f"{where}.or", depth)
        return self.leaf(obj, where)

    def all_of(self, items: list[Any], where: str, depth: int) -> FilterNode | None:
        children = [
            child
            for i, item in enumerate(items)
            if (child := self.filters(item, f"{where}[{i}]", depth + 1)) is not None
        ]
        if not children:
            return None
        return children[0] if len(children) == 1 else AllOf(tuple(children))

    def any_of(self, items: list[Any], where: str, depth: int) -> FilterNode:
        children: list[FilterNode] = []
        for i, item in enumerate(items):
            if item is None:
                continue
            child = self.filters(item, f"{where}[{i}]", depth + 1)
            if child is None:
                # An 'and' without conditions matches every row, and so would this 'or'.
                raise InvalidRequest(
                    f"{where}[{i}] holds no condition, which would make the 'or' match every "
                    "row; give it a condition or remove it",
                    field=f"{where}[{i}]",
                )
            children.append(child)
        if not children:
            raise InvalidRequest(
                f"{where} holds no condition (null entries are ignored), and an empty 'or' "
                "matches no row; list at least one condition or remove the 'or'",
                field=where,
            )
        return children[0] if len(children) == 1 else AnyOf(tuple(children))

    def leaf(self, obj: Mapping[str, Any], where: str) -> FilterNode:
        _reject_unknown_keys(obj, ("column", "filter"), where)
        column = self.column(obj.get("column"), f"{where}.column")
        spec = obj.get("filter")
        at = f"{where}.filter"
        if spec is None:
            raise InvalidRequest(f'{at} is required, e.g. {{"equals": ...}}', field=at)
        spec = _expect_object(spec, at)
        if not spec:
            raise InvalidRequest(f'{at} must name an operator, e.g. {{"equals": ...}}', field=at)
        if not column.filterable:
            raise InvalidRequest(f"column '{column.name}' in {where} cannot be filtered", field=at)
        conditions: list[FilterNode] = []
        for name, value in spec.items():
            op = _OPS.get(name)
            if op is None:
                hint = _suggest(name, list(_OPS))
                raise InvalidRequest(
                    f"unknown filter operator '{name}' in {at}{hint}; use one of {', '.join(_OPS)}",
                    field=f"{at}.{name}",
                )
            if op not in column.filter_ops:
                allowed = ", ".join(o.value for o in FilterOp if o in column.filter_ops)
                raise InvalidRequest(
                    f"operator '{name}' does not fit {column.type.value} column "
                    f"'{column.name}' in {at}; it allows {allowed}",
                    field=f"{at}.{name}",
                )
            conditions.append(
                Condition(column, op, self.operand(column, op, value, f"{at}.{name}"))
            )
        return conditions[0] if len(conditions) == 1 else AllOf(tuple(conditions))

    def operand(
        self, column: Column, op: FilterOp, value: Any, where: str
    ) -> Scalar | tuple[Scalar, ...] | None:
        if op is FilterOp.IS_NULL:
            if not isinstance(value, bool):
                raise InvalidRequest(
                    f"{where} must be true or false, got {_type_name(value)}", field=where
                )
            return value
        if op in (FilterOp.IN, FilterOp.NOT_IN):
            if not isinstance(value, list) or not value:
                raise InvalidRequest(f"{where} must be a non-empty list of values", field=where)
            if len(value) > MAX_IN_VALUES:
                raise InvalidRequest(
                    f"{where} may hold at most {MAX_IN_VALUES} values", field=where
                )
            return tuple(self.scalar(column, v, f"{where}[{i}]") for i, v in enumerate(value))
        if op is FilterOp.BETWEEN:
            if not isinstance(value, list) or len(value) != 2:
                raise InvalidRequest(
                    f"{where} must be a list of two values [low, high]", field=where
                )
            low = self.scalar(column, value[0], f"{where}[0]")
            high = self.scalar(column, value[1], f"{where}[1]")
            if low > high:  # type: ignore[operator]
                raise InvalidRequest(f"{where} has its low value above its high value", field=where)
            return (low, high)
        scalar = self.scalar(column, value, where)
        if op in (FilterOp.CONTAINS, FilterOp.STARTS_WITH) and scalar == "":
            raise InvalidRequest(f"{where} must not be empty", field=where)
        return scalar

    def scalar(self, column: Column, value: Any, where: str) -> Scalar:
        kind = column.type
        if kind is ColumnType.STRING:
            if not isinstance(value, str):
                raise InvalidRequest(
                    f"{where} must be a string for text column '{column.name}', "
                    f"got {_type_name(value)}",
                    field=where,
                )
            if len(value) > MAX_TEXT_VALUE:
                raise InvalidRequest(
                    f"{where} is longer than {MAX_TEXT_VALUE} characters", field=where
                )
            return value
        if kind in (ColumnType.INTEGER, ColumnType.NUMBER):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidRequest(
                    f"{where} must be a number for {kind.value} column '{column.name}', "
                    f"got {_type_name(value)}",
                    field=where,
                )
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidRequest(f"{where} is out of range", field=where)
            if isinstance(value, int) and abs(value) > _INT64:
                raise InvalidRequest(f"{where} is out of the 64-bit integer range", field=where)
            return value
        if kind is ColumnType.DATE:
            if not isinstance(value, str):
                raise InvalidRequest(
                    f"{where} must be an ISO-8601 date string like '2025-01-31' for date column "
                    f"'{column.name}', got {_type_name(value)}",
                    field=where,
                )
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise InvalidRequest(
                    f"{where} must be an ISO-8601 date like '2025-01-31', got '{value}'",
                    field=where,
                ) from None
        if not isinstance(value, bool):
            raise InvalidRequest(
                f"{where} must be true or false for boolean column '{column.name}', "
                f"got {_type_name(value)}",
                field=where,
            )
        return value

    def limit(self, raw: Any) -> int | None:
        where = "dataset.limit"
        if raw is None:
            return None
        if isinstance(raw, bool) or not isinstance(raw, int):
            if isinstance(raw, float) and raw.is_integer() and raw > 0:
                raw = int(raw)
            else:
                raise InvalidRequest(
                    f"{where} must be a positive whole number, got {_type_name(raw)}", field=where
                )
        if raw <= 0:
            raise InvalidRequest(f"{where} must be a positive whole number, got {raw}", field=where)
        if raw > self.max_rows:
            raise InvalidRequest(
                f"{where} is {raw}, above the maximum of {self.max_rows} rows per export",
                field=where,
            )
        return int(raw)

    def order_by(self, raw: Any, scopes: tuple[Scope, ...]) -> tuple[OrderKey, ...]:
        where = "dataset.orderBy"
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise InvalidRequest(f"{where} must be a list, got {_type_name(raw)}", field=where)
        if len(raw) > MAX_ORDER_BY:
            raise InvalidRequest(f"{where} may hold at most {MAX_ORDER_BY} entries", field=where)
        outputs = {s.output_name: s for s in scopes}
        aggregate = any(s.aggregate is not None for s in scopes)
        keys: list[OrderKey] = []
        for i, item in enumerate(raw):
            at = f"{where}[{i}]"
            obj = _expect_object(item, at)
            _reject_unknown_keys(obj, ("column", "direction"), at)
            name = obj.get("column")
            if not isinstance(name, str):
                raise InvalidRequest(
                    f"{at}.column must be a column name, got {_type_name(name)}",
                    field=f"{at}.column",
                )
            column: Column | None
            if name in outputs:
                scope = outputs[name]
                column = scope.column if scope.aggregate is None else None
            elif not aggregate and name in self.catalog:
                column = self.catalog.get(name)
            else:
                choices = list(outputs)
                raise InvalidRequest(
                    f"{at}.column '{name}' is not an exported column{_suggest(name, choices)}; "
                    f"order by one of {', '.join(choices)}",
                    field=f"{at}.column",
                )
            direction_raw = obj.get("direction", "asc")
            if not isinstance(direction_raw, str) or direction_raw.lower() not in ("asc", "desc"):
                raise InvalidRequest(
                    f"{at}.direction must be 'asc' or 'desc'", field=f"{at}.direction"
                )
            keys.append(OrderKey(name, column, Direction(direction_raw.lower())))
        return tuple(keys)


def parse_dataset(raw: Any, catalog: Catalog, *, max_rows: int) -> Query:
    """Check a customer's ``dataset`` object against ``catalog``; raise ``InvalidRequest``."""
    return _Parser(catalog, max_rows).dataset(raw)
