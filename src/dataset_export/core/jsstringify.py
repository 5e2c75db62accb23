"""What JavaScript's ``JSON.stringify(JSON.parse(text))`` makes of a JSON document, in Python.

The seed's webhook handler verifies ``hmacSignature`` by parsing our body with ``express.json()``
(``JSON.parse``) and signing ``JSON.stringify(payload)``. To sign the same bytes we reproduce
that round trip exactly for values from :func:`dataset_export.core.jsontext.parse_preserving`:

* numbers become IEEE-754 doubles (correctly rounded, as ``JSON.parse`` does; an integer literal
  beyond 2**53 is rounded like any other literal) and are written by ECMAScript's
  ``Number::toString``: the shortest digits that round-trip, plain notation for magnitudes in
  [1e-6, 1e21), otherwise ``d.ddde+XX``; ``-0`` prints as ``0``; a literal that overflows to
  Infinity (``1e400``) prints as ``null``;
* strings escape ``"``, ``\\``, ``\\b \\f \\n \\r \\t``, other code points below U+0020 as
  ``\\u00xx`` and lone surrogates as ``\\udxxx`` (well-formed ``JSON.stringify``, ES2019 /
  Node 12+); everything else, U+2028/U+2029 and non-ASCII included, is written as is;
* object keys that are array indices (canonical decimal integers 0 .. 2**32-2) come first in
  ascending numeric order, then the other keys in the order they were first seen (a duplicate
  key keeps its first position and its last value, in ``json.loads`` and ``JSON.parse`` alike);
  ``__proto__`` is an ordinary own key after ``JSON.parse``;
* no whitespace anywhere.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from .jsontext import JsonNumber, JsonStyle, write_json

__all__ = ["JAVASCRIPT", "js_number", "js_quote", "js_stringify", "order_keys_like_js"]

# The grammar of a JSON number (RFC 8259), ASCII digits only.
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z")
# Integer literals that are exact doubles and print as themselves (|n| < 10**15 < 2**53).
_SMALL_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,14})\Z")
_ARRAY_INDEX = re.compile(r"(?:0|[1-9][0-9]{0,9})\Z")
_MAX_ARRAY_INDEX = 2**32 - 2
_EXACT_INT = 2**53

# A surrogate pair (two Python code points that JavaScript sees as one well-formed pair), or
# anything JSON.stringify escapes.
_NEEDS_ESCAPE = re.compile('[\ud800-\udbff][\udc00-\udfff]|["\\\\\x00-\x1f\ud800-\udfff]')
_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def js_stringify(value: object) -> str:
    """Return exactly what ``JSON.stringify(JSON.parse(dump_preserving(value)))`` returns."""
    return write_json(value, JAVASCRIPT)


def js_number(value: JsonNumber | int | float) -> str:
    """Return ``JSON.stringify`` of a number: ``Number::toString``, or null when not finite."""
    if isinstance(value, JsonNumber):
        literal = str.__str__(value)
        if _SMALL_INT.match(literal):
            return "0" if literal == "-0" else literal
        if not _JSON_NUMBER.match(literal):
            raise ValueError(f"not a JSON number literal: {literal!r}")
        # float() of a decimal literal is correctly rounded (David Gay's strtod), as JSON.parse
        # is; it never raises for a valid literal, overflowing to inf and underflowing to 0.
        return _format_double(float(literal))
    if isinstance(value, bool):
        raise TypeError("a bool is not a number here; write it as true/false")
    if isinstance(value, int):
        if -_EXACT_INT <= value <= _EXACT_INT:
            return str(value)  # exact as a double and below 1e21: printed as an integer
        try:
            # int -> float is correctly rounded (half to even), like JavaScript's Number(bigint).
            return _format_double(float(value))
        except OverflowError:
            return "null"
    if isinstance(value, float):
        return _format_double(value)
    raise TypeError(f"not a number: {type(value).__name__}")


def js_quote(text: str) -> str:
    """Return ``JSON.stringify`` of a string (well-formed: lone surrogates escaped)."""
    if _NEEDS_ESCAPE.search(text) is None:
        return f'"{text}"'
    return '"' + _NEEDS_ESCAPE.sub(_escape, text) + '"'


def order_keys_like_js(keys: Sequence[str]) -> list[str]:
    """Order distinct keys as JavaScript enumerates an ordinary object's own properties."""
    indices: list[tuple[int, str]] = []
    others: list[str] = []
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"object keys must be strings, got {type(key).__name__}")
        if _ARRAY_INDEX.match(key) and int(key) <= _MAX_ARRAY_INDEX:
            indices.append((int(key), key))
        else:
            others.append(key)
    indices.sort()
    return [key for _, key in indices] + others


def _escape(match: re.Match[str]) -> str:
    found = match.group()
    if len(found) == 2:
        # A high surrogate followed by a low one is one well-formed pair in UTF-16: written raw,
        # as the single code point it stands for (so that the result also encodes as UTF-8).
        high, low = ord(found[0]), ord(found[1])
        return chr(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))
    short = _SHORT_ESCAPES.get(found)
    return short if short is not None else f"\\u{ord(found):04x}"


def _format_double(x: float) -> str:
    """ECMAScript Number::toString(x) for radix 10, with JSON.stringify's null for non-finite."""
    if not math.isfinite(x):
        return "null"
    if x == 0:
        return "0"  # covers -0
    sign = "-" if x < 0 else ""
    # repr() gives the shortest digit string that round-trips, the closest one to x among those
    # (David Gay's dtoa mode 0), which is what Number::toString asks for.
    mantissa, _, exponent_text = repr(abs(x)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    exponent = int(exponent_text or "0") - len(fraction)  # x == int(digits) * 10**exponent
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    n = exponent + k  # x == 0.digits * 10**n, in the spec's terms s * 10**(n - k)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    exp = f"e+{e}" if e >= 0 else f"e-{-e}"
    if k == 1:
        return sign + digits + exp
    return sign + digits[0] + "." + digits[1:] + exp


JAVASCRIPT = JsonStyle(number=js_number, string=js_quote, order=order_keys_like_js)
"""``JSON.stringify`` of what ``JSON.parse`` made of the text."""
