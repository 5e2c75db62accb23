"""Per-key rate limit over a sliding window: at most ``limit`` requests in any 60 seconds.

Pure code: the store counts, this module decides. A fixed window that resets each calendar
minute lets about twice the limit through around a boundary (a burst at :59, another at :00);
a sliding window does not.

Counts are kept per whole second (epoch second -> requests counted in it). A second's count
covers requests anywhere inside it, so a request at ``now`` is measured against the 60 whole
seconds before the current one plus the current one: every request of the last 60 s is counted
(never fewer), and a request leaves the window 60 to 61 s after it was made. No 60-second span
can therefore hold more than ``limit`` admitted requests.

Admission without a contended transaction: the store adds one to the current second's count
with an atomic increment that returns the new value, the request's ``position`` in its second
(the N-th request counted there). The request is admitted when the earlier seconds' requests
plus its position fit the limit; a refused request is taken back (its count decremented), so
refusals do not use up the allowance. Concurrent requests get distinct positions, so of a burst
exactly the ones that fit are admitted, never more.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

WINDOW_SECONDS: Final = 60
"""The window's length: a request counts against the limit for 60 (to 61) seconds."""


@dataclass(frozen=True)
class RequestCount:
    """What the store answers after counting one request."""

    second: int
    """The epoch second the request was counted in."""
    position: int
    """The request's place among those counted in ``second`` (1 for the first)."""
    counts: Mapping[int, int]
    """Requests per epoch second, at least for the window's seconds (``window_of(second)``)."""


@dataclass(frozen=True)
class RateVerdict:
    """Admit the request, or refuse it and say when a retry can succeed."""

    allowed: bool
    retry_after_seconds: int = 0


def second_of(now: dt.datetime) -> int:
    """The epoch second ``now`` falls in."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return math.floor(now.timestamp())


def window_of(second: int) -> range:
    """The seconds whose counts a request in ``second`` is measured against, itself included."""
    return range(second - WINDOW_SECONDS, second + 1)


def decide(count: RequestCount, limit: int, now: dt.datetime) -> RateVerdict:
    """Admit the counted request if it fits ``limit``; else say when one more would fit."""
    if limit < 1:
        raise ValueError(f"limit must be positive (got {limit})")
    second = count.second
    earlier = sum(count.counts.get(s, 0) for s in range(second - WINDOW_SECONDS, second))
    if earlier + count.position <= limit:
        return RateVerdict(True)
    # Once refused, this request is taken back: what stays is every other counted request.
    remaining = dict(count.counts)
    remaining[second] = max(0, remaining.get(second, 0) - 1)
    for later in range(second + 1, second + WINDOW_SECONDS + 2):
        held = sum(remaining.get(s, 0) for s in range(later - WINDOW_SECONDS, later))
        if held < limit:
            return RateVerdict(False, max(1, math.ceil(later - now.timestamp())))
    # Unreachable: 61 s on, the window holds none of the requests counted so far.
    return RateVerdict(False, WINDOW_SECONDS + 1)
