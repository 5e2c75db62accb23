"""Our webhook signatures verify in a real Node receiver: the seed's Express handler and npm
``standardwebhooks``, over a generated corpus of customer payloads, in one Node process.

tests/node/verify.js starts Express apps on 127.0.0.1 and POSTs every body through Node's http
client, so the real ``express.json()`` middleware parses it. node_modules comes from
``npm ci --prefix tests/node`` (run here when it is missing).
"""

from __future__ import annotations

import base64
import json
import random
import shutil
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dataset_export.core.catalog import RENTAL_LISTINGS, ColumnType
from dataset_export.core.jsontext import JsonNumber, parse_preserving, parse_standard
from dataset_export.core.jsstringify import js_stringify
from dataset_export.core.query import parse_dataset
from dataset_export.core.request import decode_json_object
from dataset_export.core.signing import (
    BODY_SIGNATURE_HEADER,
    body_signature,
    encode_webhook_body,
    payload_signature,
    standard_webhook_headers,
)

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
SEED = 20261127
EXPRESS_JSON_LIMIT = 100 * 1024  # express.json()'s default "100kb"


# ---------------------------------------------------------------------------------------------
# Writing JSON text the many ways a customer may spell it.


class Obj(list[tuple[str, Any]]):
    """A JSON object as written: pairs in order, duplicates allowed."""


@dataclass
class Speller:
    """Writes spelled trees as JSON text with random whitespace and escape choices."""

    rng: random.Random
    escapes: float = 0.15

    def ws(self) -> str:
        return self.rng.choice(["", "", "", " ", "\n  ", "\t", "\r\n"])

    def string(self, text: str) -> str:
        out = ['"']
        for ch in text:
            code = ord(ch)
            short = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n"}
            short |= {"\r": "\\r", "\t": "\\t"}
            if ch in short and (code >= 0x20 or self.rng.random() < 0.7):
                out.append(short[ch])
            elif code < 0x20 or 0xD800 <= code <= 0xDFFF or self.rng.random() < self.escapes:
                out.append(self.unicode_escape(code))
            elif ch == "/" and self.rng.random() < 0.5:
                out.append("\\/")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)

    def unicode_escape(self, code: int) -> str:
        if code > 0xFFFF:
            code -= 0x10000
            return self.unicode_escape(0xD800 + (code >> 10)) + self.unicode_escape(
                0xDC00 + (code & 0x3FF)
            )
        text = f"\\u{code:04x}"
        return text.upper().replace("\\U", "\\u") if self.rng.random() < 0.5 else text

    def write(self, value: Any) -> str:
        if isinstance(value, JsonNumber):
            return str.__str__(value)
        if isinstance(value, str):
            return self.string(value)
        if value is None or isinstance(value, bool):
            return {None: "null", True: "true", False: "false"}[value]
        if isinstance(value, Obj):
            items = [
                self.ws() + self.string(k) + self.ws() + ":" + self.ws() + self.write(v)
                for k, v in value
            ]
            return "{" + ",".join(items) + self.ws() + "}"
        if isinstance(value, list):
            return "[" + ",".join(self.ws() + self.write(v) for v in value) + self.ws() + "]"
        raise TypeError(type(value))


# ---------------------------------------------------------------------------------------------
# Values.

TEXT_POOL = [
    "Seattle, WA",
    "San José, CA",
    "Zürich",
    "東京都",
    "Москва",
    "قهوة",
    "😀",
    "👩‍💻",
    "🇺🇸",
    "\u2028",
    "\u2029",
    "\ufeff",
    "\uffff",
    "\x00",
    "\x1f",
    "\x7f",
    "\n",
    "\t",
    '"',
    "\\",
    "/",
    "</script>",
    "\ud800",
    "\udfff",
    "\ud83d",
    "\ude00",
]


def _is_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def random_text(rng: random.Random, max_len: int = 24, *, surrogates: bool = True) -> str:
    """Text mixing ASCII, non-ASCII, emoji, controls, escapes and (unless told not to) lone
    surrogates, which submit refuses but JSON can carry."""
    pool = TEXT_POOL if surrogates else [t for t in TEXT_POOL if not _is_surrogate(t)]
    parts: list[str] = []
    for _ in range(rng.randrange(1, max_len)):
        roll = rng.random()
        if roll < 0.5:
            parts.append(rng.choice("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789,.-'#&"))
        elif roll < 0.8:
            parts.append(rng.choice(pool))
        else:
            ch = chr(rng.randrange(0x110000))  # anything, surrogates included
            parts.append(ch if surrogates or not _is_surrogate(ch) else "\ufffd")
    return "".join(parts)


def random_double(rng: random.Random) -> float:
    """A finite double from random bits (every exponent equally likely)."""
    while True:
        x: float = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if x == x and abs(x) != float("inf"):
            return x


def spell_float(x: float, rng: random.Random) -> JsonNumber:
    """One of the ways a client library writes a double."""
    kind = rng.randrange(5)
    if kind == 0:
        text = repr(x)
    elif kind == 1:
        text = f"{x:.17g}"
    elif kind == 2:
        text = f"{x:.{rng.randrange(0, 25)}e}"
    elif kind == 3:
        text = f"{x:.{rng.randrange(0, 25)}E}"
    else:
        text = f"{x:.{rng.randrange(1, 12)}f}" if abs(x) < 1e15 else repr(x)
    if "e" not in text.lower() and "." not in text and rng.random() < 0.5:
        text += ".0"
    return JsonNumber(text.replace("inf", "1e400"))


def spell_int(n: int, rng: random.Random) -> JsonNumber:
    """An integer as 10000, 10000.0, 1E4 or 1.0000e4."""
    kind = rng.randrange(4)
    if kind == 0 or n == 0:
        return JsonNumber(str(n))
    if kind == 1:
        return JsonNumber(f"{n}.0" + "0" * rng.randrange(3))
    digits = str(abs(n)).rstrip("0")
    exponent = len(str(abs(n))) - 1
    sign = "-" if n < 0 else ""
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return JsonNumber(f"{sign}{mantissa}{rng.choice('eE')}{rng.choice(['', '+'])}{exponent}")


def number_for(column_type: ColumnType, rng: random.Random) -> JsonNumber:
    """A value the validator accepts for an integer or number column."""
    if column_type is ColumnType.INTEGER:
        n = rng.choice(
            [
                rng.randrange(0, 6),
                rng.randrange(1900, 2026),
                rng.randrange(200, 5000),
                2**53 + rng.randrange(1, 1000),
                2**63 - 1,
                -(2**63) + 1,
                9007199254740993,
            ]
        )
        return spell_int(n, rng)
    fixed = [
        "1500.0",
        "2.50",
        "1.5",
        "47.6062",
        "-122.3321",
        "1e-7",
        "1E21",
        "1e21",
        "1e20",
        "0.000001",
        "-0",
        "-0.0",
        "5e-324",
        "1.7976931348623157e308",
        "9007199254740993",
        "9223372036854775807",
        "0.1",
        "100e-2",
    ]
    if rng.random() < 0.5:
        return JsonNumber(rng.choice(fixed))
    return spell_float(random_double(rng) if rng.random() < 0.4 else rng.uniform(-1e4, 1e4), rng)


def shuffled(rng: random.Random, pairs: list[tuple[str, Any]]) -> Obj:
    """Pairs in a random order (customers do not share our key order)."""
    pairs = list(pairs)
    if rng.random() < 0.5:
        rng.shuffle(pairs)
    return Obj(pairs)


# ---------------------------------------------------------------------------------------------
# Realistic dataset objects (the validator accepts them) and raw stringify-level trees.

COLUMNS = list(RENTAL_LISTINGS)


def random_leaf(rng: random.Random) -> Obj:
    """A filter leaf whose operator and values fit the column's type."""
    column = rng.choice([c for c in COLUMNS if c.filterable])
    ops = sorted(column.filter_ops)
    spec: list[tuple[str, Any]] = []
    for op in rng.sample(ops, k=1 if rng.random() < 0.8 else min(2, len(ops))):
        spec.append((op.value, operand_for(column.type, op.value, rng)))
    return shuffled(rng, [("column", column.name), ("filter", Obj(spec))])


def scalar_for(column_type: ColumnType, rng: random.Random) -> Any:
    """One value of the column's type."""
    if column_type in (ColumnType.INTEGER, ColumnType.NUMBER):
        return number_for(column_type, rng)
    if column_type is ColumnType.DATE:
        return f"{rng.randrange(1990, 2027)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    if column_type is ColumnType.BOOLEAN:
        return rng.random() < 0.5
    return random_text(rng, surrogates=False)  # submit refuses text that is not Unicode


def operand_for(column_type: ColumnType, op: str, rng: random.Random) -> Any:
    """An operand the validator accepts for this operator."""
    if op == "isNull":
        return rng.random() < 0.5
    if op in ("in", "notIn"):
        return [scalar_for(column_type, rng) for _ in range(rng.randrange(1, 6))]
    if op == "between":
        if column_type is ColumnType.DATE:
            return ["2020-01-01", f"{rng.randrange(2020, 2027)}-06-30"]
        low, high = number_for(column_type, rng), number_for(column_type, rng)
        if float(low) > float(high):
            low, high = high, low
        return [low, high]
    return scalar_for(column_type, rng)


def random_filter(rng: random.Random, depth: int = 0, *, condition: bool = False) -> Any:
    """A filter tree of and/or/not nodes, null entries and leaves, as the validator takes it:
    every branch of an 'or' and a 'not' holds a condition (``condition``); an 'and' need not."""
    roll = rng.random()
    if depth >= 4 or roll < 0.45:
        return random_leaf(rng)
    if roll < 0.55 and not condition:
        return None
    if roll < 0.7:
        return Obj([("not", random_filter(rng, depth + 1, condition=True))])
    if rng.random() < 0.5:
        children = [random_filter(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
        if condition:
            children.insert(rng.randrange(len(children) + 1), random_leaf(rng))
        return Obj([("and", children)])
    children = [random_filter(rng, depth + 1, condition=True) for _ in range(rng.randrange(1, 4))]
    if rng.random() < 0.3:
        children.insert(rng.randrange(len(children) + 1), None)  # null entries are ignored
    return Obj([("or", children)])


def random_dataset(rng: random.Random) -> Obj:
    """A dataset object a customer could submit: scopes, filters, limit and orderBy."""
    aggregate = rng.random() < 0.4
    scopes: list[Any] = []
    outputs: list[str] = []
    for column in rng.sample(COLUMNS, k=rng.randrange(1, 6)):
        pairs: list[tuple[str, Any]] = [("column", column.name)]
        name = column.name
        if aggregate and column.aggregates and rng.random() < 0.5:
            agg = rng.choice(sorted(column.aggregates)).value
            pairs.append(("aggregate", rng.choice([agg, agg.lower(), agg.upper()])))
            name = f"{agg.lower()}_{column.name}"
            if rng.random() < 0.3:
                name = f"x_{len(outputs)}_{rng.choice(['avg', 'Total', 'n'])}"
                pairs.append(("alias", name))
        scopes.append(shuffled(rng, pairs))
        outputs.append(name)
    fields: list[tuple[str, Any]] = [("scopes", scopes)]
    roll = rng.random()
    if roll < 0.4:
        fields.append(("filters", [random_filter(rng, 1) for _ in range(rng.randrange(0, 4))]))
    elif roll < 0.9:
        fields.append(("filters", random_filter(rng)))
    if rng.random() < 0.7:
        fields.append(("limit", spell_int(rng.randrange(1, 100_000), rng)))
    if rng.random() < 0.3:
        order = [
            Obj([("column", name), ("direction", rng.choice(["asc", "desc", "DESC"]))])
            for name in rng.sample(outputs, k=1)
        ]
        fields.append(("orderBy", order))
    if rng.random() < 0.1:
        fields.append(("limit", spell_int(10, rng)))  # a duplicate key: last value wins
    return shuffled(rng, fields)


RAW_KEYS = [
    "0",
    "1",
    "2",
    "10",
    "01",
    "-1",
    "1.5",
    "1e3",
    " 7",
    "4294967294",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "__proto__",
    "constructor",
    "toString",
    "",
    "a",
    "b",
    "z",
    "é",
    "😀",
    "\ud800",
    "\u0000",
]

RAW_NUMBERS = [
    "1e400",
    "-1e400",
    "1e-400",
    "-1e-400",
    "-0",
    "-0.0e-0",
    "1E21",
    "999999999999999999999",
    "123456789012345678901234567890",
    "0.1e1",
    "5e-324",
    "2e-324",
    "4.9406564584124654e-324",
    "2.2250738585072011e-308",
    "1.7976931348623158e308",
    "1" + "0" * 308,
    "0." + "0" * 330 + "1",
    "1" * 40,
    "0.0000001",
    "1.0000000000000002",
    "9007199254740993.0",
]


def random_raw(rng: random.Random, depth: int = 0) -> Any:
    """Any JSON at all: the stringify rules beyond what the validator lets through."""
    roll = rng.random()
    if depth < 4 and roll < 0.3:
        pairs = [
            (
                rng.choice(RAW_KEYS) if rng.random() < 0.6 else random_text(rng, 6),
                random_raw(rng, depth + 1),
            )
            for _ in range(rng.randrange(0, 7))
        ]
        if rng.random() < 0.5:
            pairs.append((rng.choice(RAW_KEYS), random_raw(rng, depth + 1)))  # often a duplicate
        return Obj(pairs)
    if depth < 4 and roll < 0.45:
        return [random_raw(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if roll < 0.6:
        return JsonNumber(rng.choice(RAW_NUMBERS))
    if roll < 0.75:
        return spell_float(random_double(rng), rng)
    if roll < 0.8:
        return JsonNumber(str(rng.getrandbits(rng.randrange(1, 400)) * rng.choice([1, -1])))
    if roll < 0.95:
        return random_text(rng)
    return rng.choice([None, True, False])


FIXED_PAYLOADS = [
    # The seed's example, as the docs print it.
    """{"scopes": [{"column": "street_address"}, {"column": "asking_rent", "aggregate": "Avg"}],
        "filters": [{"column": "msa", "filter": {"equals": "Seattle, WA"}},
                    {"column": "bed", "filter": {"in": [1, 2, 3]}}],
        "limit": 10000}""",
    '{"scopes":[{"column":"msa"}],"filters":{"and":[null]}}',
    '{"limit":1E4,"scopes":[{"aggregate":"AVG","column":"asking_rent"}],"filters":{"or":[{"not":'
    '{"column":"asking_rent","filter":{"gte":1500.0,"lt":2.50}}},{"and":[{"column":"sqft",'
    '"filter":{"between":[9007199254740993,9223372036854775807]}},null]}]}}',
    '{"scopes":[{"column":"lat"}],"filters":[{"column":"lat","filter":{"gt":1e-7}},'
    '{"column":"lon","filter":{"lt":1E21}},{"column":"lon","filter":{"notIn":[-0,-0.0,5e-324]}}]}',
    '{"scopes":[{"column":"city"}],"filters":[{"column":"city","filter":{"contains":'
    '"line\\nbreak\\ttab\\u0000nul\\u2028ls\\u2029ps \\"q\\" \\\\ \\/ é 😀 \\ud83d\\ude00"}}]}',
    '{"scopes":[{"column":"city"}],"filters":[{"column":"city","filter":{"in":'
    '["\\ud800","\\udfff","\\ude00\\ud83d","x\\uD83Dy","\\uDBFF\\uDFFF"]}}]}',
    '{"b":1,"2":2,"10":3,"01":4,"-1":5,"4294967294":6,"4294967295":7,"a":8,"b":9,"1":10}',
    '{"__proto__":{"polluted":1},"constructor":{"prototype":2},"toString":3}',
    '{"x":[1e400,-1e400,1e-400,-1e-400,1E21,1e20,999999999999999999999,0.000001,1e-7]}',
    '{"x":[12345678901234567890,123456789012345678901,-9007199254740993,1.0,2.50,100e-2]}',
    '{"x":[1.7976931348623157e308,1.7976931348623158e308,2.2250738585072014e-308,4e-320]}',
    '{"ties":[562949953421312.75,562949953421312.25,5.9604644775390625e-8,1e23,9.5e-5]}',
    '{"empty":{},"list":[],"nested":[[[[[[{"":{"":[null,true,false]}}]]]]]]}',
    "{}",
    "[]",
    "[1500.0]",
    "1e400",
    "-0",
    "null",
    '"\\ud800 alone"',
    '{"a":1,"a":{"b":2},"a":[3]}',
    '{"1":"one","0":"zero","1":"uno"}',
    '{"k\\u0000":1,"k\\n":2,"k\\ud800":3,"k😀":4,"k\\u2028":5}',
    "[" + ",".join(["0.1"] * 2000) + "]",
    '{"filters":{"not":' * 16 + '{"column":"bed","filter":{"equals":1.0}}' + "}}" * 16,
]


@dataclass
class Case:
    """One webhook as sent, and what the receiver must conclude."""

    id: str
    api_key: str
    payload: Any
    body: bytes
    headers: dict[str, str]
    original: str | None = None
    expect: dict[str, bool] = field(
        default_factory=lambda: {"seed": True, "header": True, "standardWebhooks": True}
    )

    def as_json(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "apiKey": self.api_key,
            "bodyBase64": base64.b64encode(self.body).decode("ascii"),
            "headers": self.headers,
        }
        if self.original is not None:
            out["originalBase64"] = base64.b64encode(self.original.encode()).decode("ascii")
        return out


def random_api_key(rng: random.Random) -> str:
    """Mostly keys shaped like ours; a few with non-ASCII characters."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    key = "dwe_" + "".join(rng.choice(alphabet) for _ in range(rng.randrange(20, 60)))
    return key + "é🔑" if rng.random() < 0.05 else key


def build_body(
    api_key: str, query_uuid: str, payload: Any, *, url: str = "https://dl.example/d?t=x"
) -> bytes:
    """A webhook body in the seed's key order."""
    return encode_webhook_body(
        [
            ("queryUUID", query_uuid),
            ("name", "Export ✓ \ud800"),
            ("format", "csv"),
            ("payload", payload),
            ("hmacSignature", payload_signature(api_key, payload)),
            (
                "gcsBlob",
                {"url": url, "expires": "2026-12-27T10:00:00Z", "timeTakenMs": 45000},
            ),
            ("requestedOn", "2026-11-27T10:00:00Z"),
            ("completedOn", "2026-11-27T10:00:45Z"),
        ]
    )


def make_case(case_id: str, api_key: str, text: str, now: int) -> Case:
    """Parse the payload text as submit does (UTF-8 bytes, then parse_preserving) and sign it."""
    payload = parse_preserving(text.encode("utf-8").decode("utf-8"))
    query_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, case_id))
    body = build_body(api_key, query_uuid, payload)
    headers = {
        "Content-Type": "application/json",
        BODY_SIGNATURE_HEADER: body_signature(api_key, body),
        **standard_webhook_headers(api_key, query_uuid, now, body),
    }
    return Case(case_id, api_key, payload, body, headers, original=text)


def realistic_texts(rng: random.Random, count: int) -> Iterator[str]:
    """Dataset objects in customers' spellings."""
    for _ in range(count):
        yield Speller(rng).write(random_dataset(rng))


def raw_texts(rng: random.Random, count: int) -> Iterator[str]:
    """Stringify-level edge trees (an object at the top, like a dataset)."""
    for _ in range(count):
        tree = random_raw(rng)
        if not isinstance(tree, Obj):
            tree = Obj([("v", tree)])
        yield Speller(rng, escapes=0.3).write(tree)


def corpus(now: int) -> list[Case]:
    """Fixed edge cases, 250 realistic datasets and 150 raw trees, with assorted API keys."""
    rng = random.Random(SEED)
    cases = [
        make_case(f"fixed-{i}", random_api_key(rng), text, now)
        for i, text in enumerate(FIXED_PAYLOADS)
    ]
    cases += [
        make_case(f"realistic-{i}", random_api_key(rng), text, now)
        for i, text in enumerate(realistic_texts(rng, 250))
    ]
    cases += [
        make_case(f"raw-{i}", random_api_key(rng), text, now)
        for i, text in enumerate(raw_texts(rng, 150))
    ]
    return cases


# ---------------------------------------------------------------------------------------------
# Running Node.


def ensure_node_modules() -> None:
    """Install tests/node's locked dependencies with `npm ci` if they are missing."""
    if shutil.which("node") is None:
        pytest.fail("node is not on PATH: Node >= 18 is needed for the receiver verification")
    wanted = [
        NODE_DIR / "node_modules" / name / "package.json"
        for name in ("express", "standardwebhooks")
    ]
    if all(p.exists() for p in wanted):
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not on PATH; run `npm ci --prefix tests/node` (make setup does)")
    done = subprocess.run(
        [npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"`npm ci --prefix tests/node` failed:\n{done.stdout}\n{done.stderr}")


def run_node(cases: list[Case], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Verify every case in one Node process; return its results by case id."""
    ensure_node_modules()
    cases_file = tmp_path / "cases.json"
    cases_file.write_text(json.dumps([c.as_json() for c in cases]), encoding="utf-8")
    done = subprocess.run(
        ["node", str(NODE_DIR / "verify.js"), str(cases_file)],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")
    results = json.loads(done.stdout)
    assert len(results) == len(cases)
    return {r["id"]: r for r in results}


# ---------------------------------------------------------------------------------------------
# Tests.


@pytest.fixture(scope="module")
def now() -> int:
    """One send time for the module (Standard Webhooks allows five minutes of skew)."""
    return int(time.time())


def test_corpus_covers_what_the_validator_accepts() -> None:
    """Every realistic dataset passes the service's validator: the corpus is what customers send."""
    rng = random.Random(SEED + 1)
    for text in realistic_texts(rng, 250):
        decode_json_object(text.encode("utf-8"))  # every string is Unicode text
        parse_dataset(parse_standard(text), RENTAL_LISTINGS, max_rows=10**6)


def test_every_payload_verifies_in_node(tmp_path: Path, now: int) -> None:
    """The seed's Express handler, the body header and npm standardwebhooks accept every case."""
    cases = corpus(now)
    assert len(cases) >= 300
    results = run_node(cases, tmp_path)
    failures = []
    for case in cases:
        got = results[case.id]
        ok = got["seed"] and got["header"] and got["standardWebhooks"] and got["direct"]
        ours = js_stringify(case.payload)
        same = got["seedStringified"] == ours == got["originalStringified"]
        if not ok or not same:
            failures.append(
                f"{case.id}: seed={got['seedStatus']} header={got['header']} "
                f"sw={got['standardWebhooksError']} direct={got['direct']}\n"
                f"  node: {got['seedStringified']!r}\n  ours: {ours!r}\n"
                f"  sent: {got['originalStringified']!r}"
            )
    assert not failures, f"{len(failures)} of {len(cases)} failed:\n" + "\n".join(failures[:20])


def _tampered(now: int) -> list[Case]:
    """An honest webhook and altered copies, each with what a receiver must conclude."""
    rng = random.Random(SEED + 2)
    key = random_api_key(rng)
    base = make_case("base", key, FIXED_PAYLOADS[2], now)
    payload_changed = base.body.replace(b'"gte":1500.0', b'"gte":1500.5')
    url_changed = base.body.replace(b"https://dl.example/", b"https://evil.example/")
    sig_of_other_key = make_case("other", key + "x", FIXED_PAYLOADS[2], now).body
    old = dict(base.headers) | standard_webhook_headers(
        key, base.headers["webhook-id"], now - 3600, base.body
    )
    assert payload_changed != base.body
    assert url_changed != base.body
    return [
        base,
        Case(
            "payload-changed",
            key,
            None,
            payload_changed,
            base.headers,
            expect={"seed": False, "header": False, "standardWebhooks": False},
        ),
        # hmacSignature covers the echoed payload only: the seed's check alone does not notice a
        # swapped download URL. The header and Standard Webhooks signatures do.
        Case(
            "url-changed",
            key,
            None,
            url_changed,
            base.headers,
            expect={"seed": True, "header": False, "standardWebhooks": False},
        ),
        Case(
            "other-key-body",
            key,
            None,
            sig_of_other_key,
            base.headers,
            expect={"seed": False, "header": False, "standardWebhooks": False},
        ),
        Case(
            "wrong-key",
            key + "x",
            None,
            base.body,
            base.headers,
            expect={"seed": False, "header": False, "standardWebhooks": False},
        ),
        Case(
            "replayed-an-hour-later",
            key,
            None,
            base.body,
            old,
            expect={"seed": True, "header": True, "standardWebhooks": False},
        ),
        Case(
            "trailing-newline",
            key,
            None,
            base.body + b"\n",
            base.headers,
            expect={"seed": True, "header": False, "standardWebhooks": False},
        ),
    ]


def test_tampered_webhooks_fail_in_node(tmp_path: Path, now: int) -> None:
    """A changed payload fails all three checks; a changed URL, key or time fails the others."""
    cases = _tampered(now)
    results = run_node(cases, tmp_path)
    for case in cases:
        got = results[case.id]
        seen = {name: got[name] for name in case.expect}
        assert seen == case.expect, (case.id, got)


def test_seed_handler_refuses_bodies_over_express_json_limit(tmp_path: Path, now: int) -> None:
    """express.json() answers 413 above 100 kB before the seed's check runs; ours still verify."""
    big = (
        '{"scopes":[{"column":"city"}],"filters":[{"column":"city","filter":{"in":['
        + ",".join(f'"city {i} {"é" * 60}"' for i in range(1000))
        + "]}}]}"
    )
    case = make_case("big", "k" * 40, big, now)
    assert len(case.body) > EXPRESS_JSON_LIMIT
    got = run_node([case], tmp_path)["big"]
    assert got["seedStatus"] == 413
    assert got["header"]
    assert got["standardWebhooks"]
    assert got["direct"]
    assert got["seedStringified"] is None
