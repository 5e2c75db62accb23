"""JSON that keeps what the customer wrote: key order and number literals.

The webhook echoes the customer's ``dataset`` object and signs what JavaScript's
``JSON.stringify`` makes of it, so we must not lose ``1.0`` versus ``1`` or a 20-digit integer
on the way through Python floats. ``parse_preserving`` keeps every number as its literal text and
``dump_preserving`` writes it back unchanged, compactly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# Lone UTF-16 surrogates are legal JSON escapes but not encodable text: keep them escaped.
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonNumber(str):
    """A JSON number kept as the exact literal the client sent (e.g. ``"1500.0"``)."""

    __slots__ = ()


@dataclass(frozen=True)
class LoneSurrogate:
    """Where a string that is not valid Unicode sits in a parsed JSON document."""

    path: str  # "dataset.filters[0].filter.equals"; "" for the document itself
    in_key: bool  # True: a field name in the object at ``path``, not a value
    code_point: int


def find_lone_surrogate(document: Any) -> LoneSurrogate | None:
    """A string (value or field name) of ``document`` that holds a lone surrogate, or None.

    JSON lets a client write ``"\\udfff"``: the parser turns an escaped pair into one character
    but keeps a lone half as is, and such a string is not Unicode text (it cannot be encoded as
    UTF-8). Paths name object members with ``.`` and list items with ``[i]``. Iterative, so no
    depth the parser accepted can overflow the stack.
    """
    pending: list[tuple[str, Any]] = [("", document)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            found = _SURROGATE.search(value)
            if found:
                return LoneSurrogate(path, False, ord(found.group()))
        elif isinstance(value, Mapping):
            members: list[tuple[str, Any]] = []
            for key, item in value.items():
                found = _SURROGATE.search(key)
                if found:
                    return LoneSurrogate(path, True, ord(found.group()))
                members.append((f"{path}.{key}" if path else key, item))
            pending.extend(reversed(members))
        elif isinstance(value, list):
            pending.extend(reversed([(f"{path}[{i}]", item) for i, item in enumerate(value)]))
    return None


def _reject_constant(name: str) -> Any:
    # JSON has no NaN or Infinity; Python accepts them by default and JavaScript does not.
    raise ValueError(f"{name} is not valid JSON")


def parse_standard(text: str | bytes) -> Any:
    """Parse strict JSON (no NaN/Infinity) into plain Python values."""
    return json.loads(text, parse_constant=_reject_constant)


def parse_preserving(text: str | bytes) -> Any:
    """Parse strict JSON keeping number literals as ``JsonNumber`` and key order as sent."""
    return json.loads(
        text, parse_float=JsonNumber, parse_int=JsonNumber, parse_constant=_reject_constant
    )


@dataclass(frozen=True)
class JsonStyle:
    """How :func:`write_json` writes the leaves and orders an object's keys."""

    number: Callable[[JsonNumber | int | float], str]  # a JsonNumber, an int (not bool), a float
    string: Callable[[str], str]  # a string value or an object key, quotes included
    order: Callable[[list[str]], Iterable[str]]  # an object's keys (all str) in writing order


def write_json(value: Any, style: JsonStyle) -> str:
    """Write ``value`` (``parse_preserving``'s output, or plain JSON values) compactly in ``style``.

    The one walker of this code base: :func:`dump_preserving` and ``jsstringify.js_stringify``
    differ only in their style.
    """
    parts: list[str] = []
    _walk(value, style, parts)
    return "".join(parts)


def _walk(value: Any, style: JsonStyle, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, JsonNumber):  # a str: before the strings
        out.append(style.number(value))
    elif isinstance(value, str):
        out.append(style.string(value))
    elif isinstance(value, int | float):
        out.append(style.number(value))
    elif isinstance(value, Mapping):
        keys = list(value)
        for key in keys:
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, got {type(key).__name__}")
        out.append("{")
        for i, key in enumerate(style.order(keys)):
            if i:
                out.append(",")
            out.append(style.string(key))
            out.append(":")
            _walk(value[key], style, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _walk(item, style, out)
        out.append("]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _quote(text: str) -> str:
    quoted = json.dumps(text, ensure_ascii=False)
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", quoted)


def _literal(value: JsonNumber | int | float) -> str:
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not valid JSON")
    return float.__repr__(value)


PRESERVING = JsonStyle(number=_literal, string=_quote, order=list)
"""Numbers exactly as parsed, keys in their order, non-ASCII text as is."""


def dump_preserving(value: Any) -> str:
    """Write compact JSON, numbers exactly as parsed, non-ASCII text as is."""
    return write_json(value, PRESERVING)
