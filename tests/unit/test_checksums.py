"""CRC-32C combining, checked against google_crc32c over the actual concatenation."""

from __future__ import annotations

import random
import time

import google_crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_export.core.checksums import (
    combined_crc32c,
    crc32c_combine,
    crc32c_from_gcs,
    crc32c_to_gcs,
)


def crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


def gcs_text(data: bytes) -> str:
    return crc32c_to_gcs(crc(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), st.binary(max_size=70_000))
def test_combine_equals_the_crc_of_the_concatenation(a: bytes, b: bytes) -> None:
    """crc(A+B) comes out of crc(A), crc(B) and len(B) for any A and B, empty ones included."""
    assert crc32c_combine(crc(a), crc(b), len(b)) == crc(a + b)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=40), st.randoms())
def test_combined_crc32c_of_parts_equals_the_whole(sizes: list[int], rng: random.Random) -> None:
    """Parts of random sizes (0-byte parts too), combined in order, give the whole's crc32c."""
    parts = [rng.randbytes(size) for size in sizes]
    whole = b"".join(parts)
    assert combined_crc32c([(gcs_text(p), len(p)) for p in parts]) == gcs_text(whole)


def test_combined_crc32c_of_a_hundred_larger_parts() -> None:
    """A hundred parts of up to 300 kB combine to the crc32c google_crc32c gives the whole."""
    rng = random.Random(11)
    parts = [rng.randbytes(rng.choice([0, 1, rng.randrange(300_000)])) for _ in range(100)]
    assert combined_crc32c([(gcs_text(p), len(p)) for p in parts]) == gcs_text(b"".join(parts))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 1 << 44),
    st.integers(0, 1 << 44),
)
def test_combine_is_associative_at_lengths_too_large_to_hash(
    a: int, b: int, c: int, len_b: int, len_c: int
) -> None:
    """(A+B)+C equals A+(B+C) at terabyte lengths, which exercises every digit's matrices."""
    left = crc32c_combine(crc32c_combine(a, b, len_b), c, len_c)
    right = crc32c_combine(a, crc32c_combine(b, c, len_c), len_b + len_c)
    assert left == right


def test_a_long_run_of_zeros_matches_google_crc32c() -> None:
    """Appending 3 MB of zero bytes, a length with digits at six positions, matches the hash."""
    head, zeros = b"dataset export", bytes(3_141_593)
    assert crc32c_combine(crc(head), crc(zeros), len(zeros)) == crc(head + zeros)


def test_gcs_text_round_trips_and_matches_the_check_value() -> None:
    """GCS's base64 big-endian text of CRC-32C("123456789") is the standard check value."""
    assert crc(b"123456789") == 0xE3069283
    assert crc32c_to_gcs(0xE3069283) == "4waSgw=="
    assert crc32c_from_gcs("4waSgw==") == 0xE3069283
    assert combined_crc32c([]) == "AAAAAA=="


@pytest.mark.parametrize("text", ["", "4waS", "not base64!", "4waSgwAA"])
def test_malformed_gcs_text_is_refused(text: str) -> None:
    """Text that is not base64 of exactly four bytes raises ValueError naming it."""
    with pytest.raises(ValueError, match="crc32c"):
        crc32c_from_gcs(text)


@pytest.mark.parametrize(
    ("a", "b", "n", "why"),
    [(-1, 0, 0, "32-bit"), (0, 1 << 32, 0, "32-bit"), (0, 0, -1, "negative")],
)
def test_out_of_range_inputs_are_refused(a: int, b: int, n: int, why: str) -> None:
    """A CRC outside 32 bits or a negative length raises ValueError saying which."""
    with pytest.raises(ValueError, match=why):
        crc32c_combine(a, b, n)


def test_a_thousand_parts_combine_in_milliseconds() -> None:
    """1024 parts of 1-60 MB combine in under 50 ms once warm (4-8 ms measured, 2 cores)."""
    rng = random.Random(3)
    parts = [
        (crc32c_to_gcs(rng.getrandbits(32)), rng.randrange(10**6, 6 * 10**7)) for _ in range(1024)
    ]
    combined_crc32c(parts)  # builds the matrices once
    start = time.perf_counter()
    combined_crc32c(parts)
    assert time.perf_counter() - start < 0.05
