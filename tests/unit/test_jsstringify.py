"""js_stringify reproduces JavaScript's JSON.stringify(JSON.parse(text)) byte for byte.

The expected strings in the tables were produced by Node 20 (``JSON.stringify(JSON.parse(t))``);
tests/integration/test_webhook_signatures_node.py checks a generated corpus against a live Node.
"""

from __future__ import annotations

import json
import math
import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, localcontext
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_export.core.jsontext import JsonNumber, dump_preserving, parse_preserving
from dataset_export.core.jsstringify import js_number, js_quote, js_stringify, order_keys_like_js

NUMBERS = [
    ("1500.0", "1500"),
    ("2.50", "2.5"),
    ("1.0", "1"),
    ("0", "0"),
    ("-0", "0"),
    ("-0.0", "0"),
    ("-0e10", "0"),
    ("10000", "10000"),
    ("9007199254740993", "9007199254740992"),
    ("9007199254740995", "9007199254740996"),
    ("12345678901234567890", "12345678901234567000"),
    ("123456789012345678901", "123456789012345680000"),
    ("-12345678901234567890", "-12345678901234567000"),
    ("99999999999999999999", "100000000000000000000"),
    ("999999999999999999999", "1e+21"),
    ("1e20", "100000000000000000000"),
    ("1e21", "1e+21"),
    ("1E21", "1e+21"),
    ("1e+21", "1e+21"),
    ("1.5e21", "1.5e+21"),
    ("1e300", "1e+300"),
    ("1.7976931348623157e308", "1.7976931348623157e+308"),
    ("1.7976931348623158e308", "1.7976931348623157e+308"),
    ("1.7976931348623159e308", "null"),
    ("1e400", "null"),
    ("-1e400", "null"),
    ("1" + "0" * 400, "null"),
    ("0.000001", "0.000001"),
    ("0.0000015", "0.0000015"),
    ("1e-6", "0.000001"),
    ("1e-7", "1e-7"),
    ("1.5e-7", "1.5e-7"),
    ("0.00000012345", "1.2345e-7"),
    ("-1E-7", "-1e-7"),
    ("5e-324", "5e-324"),
    ("2e-324", "0"),
    ("3e-324", "5e-324"),
    ("1e-400", "0"),
    ("-1e-400", "0"),
    ("2.2250738585072014e-308", "2.2250738585072014e-308"),
    ("0.1", "0.1"),
    ("562949953421312.75", "562949953421312.8"),
    ("562949953421312.25", "562949953421312.2"),
    ("0.30000000000000004", "0.30000000000000004"),
    ("123.456e5", "12345600"),
    ("123456.789e-3", "123.456789"),
    ("1e16", "10000000000000000"),
    ("1.23e2", "123"),
    ("47.6062", "47.6062"),
    ("-122.3321", "-122.3321"),
    ("100e-2", "1"),
    ("0.1e1", "1"),
    ("1" + "0" * 20 + "e-20", "1"),
    ("0." + "0" * 30 + "1e31", "1"),
]


@pytest.mark.parametrize(("literal", "expected"), NUMBERS)
def test_number_literals_print_as_javascript_does(literal: str, expected: str) -> None:
    """Each number literal prints as JSON.stringify(JSON.parse(literal)) does in Node."""
    assert js_stringify(parse_preserving(literal)) == expected
    assert js_number(JsonNumber(literal)) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "0"),
        (2**53, "9007199254740992"),
        (2**53 + 1, "9007199254740992"),
        (-(2**64), "-18446744073709552000"),
        (10**21, "1e+21"),
        (10**400, "null"),
        (-(10**400), "null"),
        (1500.0, "1500"),
        (-0.0, "0"),
        (1e-7, "1e-7"),
        (float("inf"), "null"),
        (float("-inf"), "null"),
        (float("nan"), "null"),
    ],
)
def test_plain_python_numbers_are_accepted(value: int | float, expected: str) -> None:
    """Plain ints and floats print like the double JavaScript would hold."""
    assert js_stringify(value) == expected


STRINGS = [
    ('"plain"', '"plain"'),
    (r'"quote \" backslash \\ slash \/"', r'"quote \" backslash \\ slash /"'),
    (r'"\b\f\n\r\t"', r'"\b\f\n\r\t"'),
    (r'"\u0000\u0001\u001f\u001F"', r'"\u0000\u0001\u001f\u001f"'),
    (r'"\u007f\u0080\u00a0"', '"\x7f\x80\xa0"'),
    (r'"\u2028\u2029"', '"\u2028\u2029"'),
    ('"Zürich, São Paulo, 東京"', '"Zürich, São Paulo, 東京"'),
    (r'"\u00e9 and é"', '"é and é"'),
    ('"emoji 😀 and 👩‍💻"', '"emoji 😀 and 👩‍💻"'),
    (r'"\ud83d\ude00"', '"😀"'),
    (r'"\uD83D\uDE00"', '"😀"'),
    (r'"\ud800"', r'"\ud800"'),
    (r'"\uDFFF"', r'"\udfff"'),
    (r'"\ude00\ud83d"', r'"\ude00\ud83d"'),
    (r'"x\ud800y\udc00z"', r'"x\ud800y\udc00z"'),
    (r'"\ud83d\ud83d\ude00"', '"\\ud83d😀"'),
    (r'"\ufeff\ufffe\uffff"', '"\ufeff\ufffe\uffff"'),
    ('"<script>&amp;</script>"', '"<script>&amp;</script>"'),
]


@pytest.mark.parametrize(("source", "expected"), STRINGS)
def test_strings_escape_as_well_formed_json_stringify(source: str, expected: str) -> None:
    """Strings escape exactly the characters well-formed JSON.stringify escapes."""
    assert js_stringify(parse_preserving(source)) == expected


def test_python_surrogate_pair_is_one_javascript_character() -> None:
    """Two Python surrogate code points forming a pair are written as the one character."""
    assert js_quote("\ud83d\ude00") == '"😀"'
    assert js_quote("\ude00\ud83d") == r'"\ude00\ud83d"'


OBJECTS = [
    ('{"b":1,"a":2}', '{"b":1,"a":2}'),
    ('{"b":1,"2":2,"10":3,"1":4}', '{"1":4,"2":2,"10":3,"b":1}'),
    (
        '{"x":0,"01":1,"-1":2,"1.0":3,"1e1":4," 1":5,"0":6}',
        '{"0":6,"x":0,"01":1,"-1":2,"1.0":3,"1e1":4," 1":5}',
    ),
    (
        '{"z":1,"4294967295":2,"4294967294":3,"9999999999":4,"4294967293":5}',
        '{"4294967293":5,"4294967294":3,"z":1,"4294967295":2,"9999999999":4}',
    ),
    ('{"\u0661":1,"\u00b2":2,"3":3}', '{"3":3,"\u0661":1,"\u00b2":2}'),
    ('{"a":1,"b":2,"a":3}', '{"a":3,"b":2}'),
    ('{"1":"x","b":2,"1":"y","0":"z"}', '{"0":"z","1":"y","b":2}'),
    ('{"__proto__":{"polluted":true},"a":1}', '{"__proto__":{"polluted":true},"a":1}'),
    (
        '{"constructor":1,"toString":2,"hasOwnProperty":3}',
        '{"constructor":1,"toString":2,"hasOwnProperty":3}',
    ),
    ('{"":1,"\\u0000":2,"\\n":3}', '{"":1,"\\u0000":2,"\\n":3}'),
    ('{"k\\ud800":1}', '{"k\\ud800":1}'),
    ('{ "a" : [ 1 , 2.0 , { } , [ ] ] , "b" : null }', '{"a":[1,2,{},[]],"b":null}'),
    ("[true,false,null]", "[true,false,null]"),
    ('{"a":{"b":{"c":[[[1e-7]]]}}}', '{"a":{"b":{"c":[[[1e-7]]]}}}'),
]


@pytest.mark.parametrize(("source", "expected"), OBJECTS)
def test_objects_enumerate_in_javascript_property_order(source: str, expected: str) -> None:
    """Array-index keys come first ascending, other keys keep first-seen order, no whitespace."""
    assert js_stringify(parse_preserving(source)) == expected


def test_seed_example_payload() -> None:
    """The seed's example dataset stringifies to its compact self."""
    source = """{"scopes": [{"column": "street_address"},
                 {"column": "asking_rent", "aggregate": "Avg"}],
      "filters": [{"column": "msa", "filter": {"equals": "Seattle, WA"}},
                  {"column": "bed", "filter": {"in": [1, 2, 3]}}],
      "limit": 10000}"""
    assert js_stringify(parse_preserving(source)) == (
        '{"scopes":[{"column":"street_address"},{"column":"asking_rent","aggregate":"Avg"}],'
        '"filters":[{"column":"msa","filter":{"equals":"Seattle, WA"}},'
        '{"column":"bed","filter":{"in":[1,2,3]}}],"limit":10000}'
    )


def test_float_spelling_differs_from_python_json_dumps() -> None:
    """Python's json.dumps does not match JavaScript: 1500.0 and 1e-07 versus 1500 and 1e-7."""
    value = parse_preserving('{"gte": 1500.0, "lt": 1e-7, "in": [2.50]}')
    assert js_stringify(value) == '{"gte":1500,"lt":1e-7,"in":[2.5]}'
    assert json.dumps(json.loads(dump_preserving(value)), separators=(",", ":")) != (
        js_stringify(value)
    )


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "1.", ".5", "01", "+1", "0x10", "1_000", " 1"])
def test_invalid_number_literals_are_refused(bad: str) -> None:
    """A JsonNumber that is not a JSON number literal is a programming error, not output."""
    with pytest.raises(ValueError, match="not a JSON number literal"):
        js_number(JsonNumber(bad))


@pytest.mark.parametrize("bad", [{1: 2}, {"a": object()}, {"a": {1, 2}}, b"bytes"])
def test_unsupported_values_are_refused(bad: Any) -> None:
    """Values with no JSON meaning raise TypeError."""
    with pytest.raises(TypeError):
        js_stringify(bad)


# ---------------------------------------------------------------------------------------------
# Independent reference implementations, written from the ECMAScript text, for property tests.


def ref_number_to_string(x: float) -> str:
    """ECMAScript Number::toString: least k, then the k-digit s closest to x (exact decimals)."""
    if math.isnan(x) or math.isinf(x):
        return "null"
    if x == 0:
        return "0"
    exact = Decimal(abs(x))
    best = exact
    for precision in range(1, 18):
        quantum = Decimal(1).scaleb(exact.adjusted() - precision + 1)
        below = exact.quantize(quantum, rounding=ROUND_FLOOR)
        above = exact.quantize(quantum, rounding=ROUND_CEILING)
        # At a power of two the gap below is half the gap above, so the nearer of the two
        # k-digit neighbours may miss x while the farther one reads back to it.
        fits = [c for c in (below, above) if c != 0 and float(c) == abs(x)]
        if fits:
            with localcontext() as ctx:
                ctx.prec = 1200  # exact differences: a double has at most 767 significant digits
                # Equally close: the spec's note (and V8, and Python) pick the even digit.
                best = min(fits, key=lambda c: (abs(c - exact), c.as_tuple().digits[-1] % 2))
            break
    text = f"{best:e}"
    mantissa, exponent = text.split("e")
    digits = mantissa.replace(".", "").rstrip("0") or "0"
    k = len(digits)
    n = int(exponent) + 1
    sign = "-" if x < 0 else ""
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        exp = n - 1
        body = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + ("+" if exp >= 0 else "-")
        body += str(abs(exp))
    return sign + body


def ref_quote(text: str) -> str:
    """ECMAScript QuoteJSONString over UTF-16 code units (well-formed JSON.stringify)."""
    units = text.encode("utf-16-le", "surrogatepass")
    codes = [int.from_bytes(units[i : i + 2], "little") for i in range(0, len(units), 2)]
    out = ['"']
    i = 0
    short = {0x8: "\\b", 0x9: "\\t", 0xA: "\\n", 0xC: "\\f", 0xD: "\\r", 0x22: '\\"', 0x5C: "\\\\"}
    while i < len(codes):
        c = codes[i]
        if c in short:
            out.append(short[c])
        elif c < 0x20:
            out.append(f"\\u{c:04x}")
        elif 0xD800 <= c <= 0xDBFF and i + 1 < len(codes) and 0xDC00 <= codes[i + 1] <= 0xDFFF:
            out.append(chr(0x10000 + ((c - 0xD800) << 10) + (codes[i + 1] - 0xDC00)))
            i += 1
        elif 0xD800 <= c <= 0xDFFF:
            out.append(f"\\u{c:04x}")
        else:
            out.append(chr(c))
        i += 1
    out.append('"')
    return "".join(out)


def ref_is_array_index(key: str) -> bool:
    """ToString(ToUint32(key)) === key and ToUint32(key) !== 2**32 - 1."""
    if not key or not all("0" <= ch <= "9" for ch in key):
        return False
    number = int(key)
    return str(number) == key and number < 2**32 - 1


def ref_stringify(value: Any) -> str:
    """A reference JSON.stringify over parse_preserving values, built from the helpers above."""
    if isinstance(value, JsonNumber):
        return ref_number_to_string(float(Decimal(str.__str__(value))))
    if isinstance(value, str):
        return ref_quote(value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, list):
        return "[" + ",".join(ref_stringify(v) for v in value) + "]"
    keys = sorted((k for k in value if ref_is_array_index(k)), key=int)
    keys += [k for k in value if not ref_is_array_index(k)]
    return "{" + ",".join(ref_quote(k) + ":" + ref_stringify(value[k]) for k in keys) + "}"


# ---------------------------------------------------------------------------------------------
# Strategies: JSON texts with varied spellings, parsed as the service parses them.

finite_floats = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def number_literals(draw: st.DrawFn) -> str:
    """A JSON number literal in one of the spellings customers use."""
    kind = draw(st.sampled_from(["repr", "fixed", "exp", "EXP", "int", "bigint", "dotzero"]))
    if kind == "int":
        return str(draw(st.integers(min_value=-(2**63), max_value=2**63)))
    if kind == "bigint":
        return str(draw(st.integers(min_value=-(10**40), max_value=10**40)))
    x = draw(finite_floats)
    if kind == "repr":
        return repr(x)
    if kind == "fixed":
        return f"{x:.{draw(st.integers(0, 30))}f}"
    if kind == "dotzero":
        return f"{int(x)}.0" if abs(x) < 1e30 else repr(x)
    text = f"{x:.{draw(st.integers(0, 25))}e}"
    return text.upper() if kind == "EXP" else text


text_chars = st.one_of(
    st.characters(exclude_categories=()),  # any code point, surrogates included
    st.sampled_from(['"', "\\", "\n", "\t", "\x00", "\x1f", "\u2028", "\u2029", "😀", "é"]),
    st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\ud83d", "\ude00"]),
)
texts = st.text(text_chars, max_size=12)
keys = st.one_of(
    texts,
    st.integers(0, 2**33).map(str),
    st.sampled_from(["0", "01", "-1", "4294967294", "4294967295", "__proto__", "1.5", ""]),
)


def _literal(value: Any) -> str:
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    if isinstance(value, str):
        return json.dumps(value)  # ASCII-only, lone surrogates as \\udxxx escapes
    if isinstance(value, list):
        return "[" + ",".join(_literal(v) for v in value) + "]"
    if isinstance(value, tuple):  # an object as a list of pairs, duplicates allowed
        return "{" + ",".join(json.dumps(k) + ":" + _literal(v) for k, v in value) + "}"
    return json.dumps(value)


json_trees = st.recursive(
    st.one_of(st.none(), st.booleans(), texts, number_literals().map(JsonNumber)),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(st.tuples(keys, children), max_size=6).map(tuple),
    ),
    max_leaves=25,
)
json_texts = json_trees.map(_literal)


@settings(max_examples=3000)
@given(finite_floats)
def test_floats_match_the_reference(x: float) -> None:
    """Every finite double prints like the reference Number::toString and reads back exactly."""
    printed = js_number(x)
    assert printed == ref_number_to_string(x)
    assert float(printed) == x or (x == 0 and printed == "0")
    assert re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?(e[+-][0-9]+)?", printed)


@settings(max_examples=2000)
@given(number_literals())
def test_number_literals_match_the_reference(literal: str) -> None:
    """Literals in every spelling print like the reference (exact decimal, then rounding)."""
    assert js_number(JsonNumber(literal)) == ref_number_to_string(float(Decimal(literal)))


@settings(max_examples=2000)
@given(texts)
def test_strings_match_the_reference(text: str) -> None:
    """Any string, lone surrogates included, quotes like QuoteJSONString over UTF-16."""
    assert js_quote(text) == ref_quote(text)
    js_quote(text).encode("utf-8")  # always encodable: no lone surrogate survives


@given(st.lists(keys, unique=True))
def test_key_order_matches_the_reference(names: list[str]) -> None:
    """Keys order as OrdinaryOwnPropertyKeys orders them."""
    expected = sorted((k for k in names if ref_is_array_index(k)), key=int)
    expected += [k for k in names if not ref_is_array_index(k)]
    assert order_keys_like_js(names) == expected


@settings(max_examples=400)
@given(json_texts)
def test_documents_match_the_reference(text: str) -> None:
    """Whole documents, duplicate keys included, stringify like the reference."""
    value = parse_preserving(text)
    assert js_stringify(value) == ref_stringify(value)


@settings(max_examples=200)
@given(json_texts)
def test_stringify_is_a_fixed_point(text: str) -> None:
    """JSON.stringify(JSON.parse(JSON.stringify(x))) equals JSON.stringify(x)."""
    once = js_stringify(parse_preserving(text))
    assert js_stringify(parse_preserving(once)) == once


@settings(max_examples=300)
@given(json_texts)
def test_agrees_with_json_dumps_where_python_already_matches(text: str) -> None:
    """Without numbers, index keys or lone surrogates, the output is json.dumps' compact form."""
    value = parse_preserving(text)
    plain = json.loads(text)
    dumped = json.dumps(plain, ensure_ascii=False, separators=(",", ":"))
    # json.dumps writes an overflowing literal (1e999) as Infinity; JavaScript writes null.
    if re.search("[0-9\ud800-\udfff]|Infinity|NaN", dumped) is None:
        assert js_stringify(value) == dumped
