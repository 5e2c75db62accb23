"""Unit tests of the sliding-window rate limit: no burst around a minute boundary, exact
admission of concurrent requests, refusals that do not use up the allowance."""

from __future__ import annotations

import datetime as dt

import pytest

from dataset_export.core.ratelimit import RequestCount, decide, second_of, window_of
from tests.fakes import InMemoryStore

from .conftest import SEED_BODY, World

T = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T + dt.timedelta(seconds=seconds)


def test_a_burst_on_each_side_of_a_minute_boundary_is_refused(world: World) -> None:
    """Five at 10:00:59.5 and five more at 10:01:00.2: the second burst is 429 (limit 5)."""
    world.clock.now = at(59.5)
    assert [world.call("POST", "/dataset/export", SEED_BODY).status for _ in range(5)] == [201] * 5
    world.clock.now = at(60.2)
    second_burst = [world.call("POST", "/dataset/export", SEED_BODY) for _ in range(5)]
    assert [r.status for r in second_burst] == [429] * 5
    # The first burst leaves the window at 10:02:00 (60-61 s after it was made).
    assert {r.headers["Retry-After"] for r in second_burst} == {"60"}
    world.clock.now = at(119.9)
    assert world.call("POST", "/dataset/export", SEED_BODY).status == 429
    world.clock.now = at(120.0)
    assert [world.call("POST", "/dataset/export", SEED_BODY).status for _ in range(6)] == [
        *[201] * 5,
        429,
    ]


def test_no_sixty_second_span_holds_more_than_the_limit(world: World) -> None:
    """A client that sends every 0.7 s for five minutes never gets more than 5 in any 60 s."""
    admitted: list[float] = []
    for step in range(430):
        world.clock.now = at(step * 0.7)
        if world.call("POST", "/dataset/export", SEED_BODY).status == 201:
            admitted.append(step * 0.7)
    assert len(admitted) >= 5 * 4  # still about the limit per minute over five minutes
    for i, start in enumerate(admitted):
        assert len([t for t in admitted[i:] if t - start < 60]) <= 5


def test_refused_requests_do_not_use_up_the_allowance(world: World) -> None:
    """Hammering while limited does not push the next allowed request further out."""
    for _ in range(5):
        world.call("POST", "/dataset/export", SEED_BODY)
    for step in range(100):
        world.clock.now = at(1 + step * 0.5)
        assert world.call("POST", "/dataset/export", SEED_BODY).status == 429
    world.clock.now = at(61)
    assert world.call("POST", "/dataset/export", SEED_BODY).status == 201


def test_concurrent_requests_in_one_second_admit_exactly_what_fits() -> None:
    """Positions from the atomic increment admit the first ``limit - earlier`` of a burst."""
    store = InMemoryStore()
    second = second_of(at(30.5))
    for s in (second - 60, second - 10):  # 3 requests still in the window, 2 from 61 s ago
        for _ in range(2 if s == second - 60 else 3):
            store.count_request("k", s)
    store.count_request("k", second - 61)
    counts = [store.count_request("k", second) for _ in range(10)]
    verdicts = [decide(c, limit=10, now=at(30.5)) for c in counts]
    # 2 + 3 earlier in the window: five of the ten fit.
    assert [v.allowed for v in verdicts] == [True] * 5 + [False] * 5


def test_retry_after_names_when_the_oldest_blocking_request_leaves() -> None:
    """Retry-After is the first moment one more request fits, counting this one as taken back."""
    second = second_of(at(0))
    counts = {second: 1, second + 20: 1, second + 40: 1}
    count = RequestCount(second + 50, 1, {**counts, second + 50: 1})
    verdict = decide(count, limit=3, now=at(50.25))
    assert not verdict.allowed
    assert verdict.retry_after_seconds == 11  # the request of second 0 leaves at 61


def test_window_covers_sixty_whole_seconds_and_the_current_one() -> None:
    """The window reaches back far enough that a request 59.99 s old still counts."""
    assert list(window_of(100)) == list(range(40, 101))
    with pytest.raises(ValueError, match="timezone-aware"):
        second_of(dt.datetime(2026, 1, 1))
