"""The delivery policy and state machine, on a fake clock and seeded randomness."""

from __future__ import annotations

import datetime as dt
import itertools
import random

import pytest

from dataset_export.core.delivery import (
    JITTER,
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER,
    MIN_TOTAL_SPAN,
    RETRY_DELAYS,
    Attempt,
    AttemptOutcome,
    DeliveryRecord,
    DeliveryState,
    decide,
    next_delay,
    parse_retry_after,
)
from dataset_export.core.errors import DeliveryConflict

T0 = dt.datetime(2026, 11, 27, 10, 0, 0, tzinfo=dt.UTC)
S = dt.timedelta(seconds=1)
H = dt.timedelta(hours=1)


class FixedRandom(random.Random):
    """A ``Random`` whose ``uniform`` always returns one end (or the middle) of the range."""

    def __init__(self, where: float) -> None:
        super().__init__(0)
        self.where = where

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.where


def fail(status: int | None = 500, retry_after: dt.timedelta | None = None) -> AttemptOutcome:
    """An outcome with ``status`` (or a network error when ``None``)."""
    error = "connection refused" if status is None else None
    return AttemptOutcome(status, error, latency_ms=12, retry_after=retry_after, host="h.example")


def run_until_final(
    rng: random.Random, outcomes: list[AttemptOutcome] | None = None
) -> tuple[DeliveryRecord, list[dt.datetime]]:
    """Drive one delivery on a fake clock until it is final; return it and the attempt times."""
    now = T0
    record = DeliveryRecord.new(now)
    times: list[dt.datetime] = []
    queue = list(outcomes or [])
    while record.state not in (DeliveryState.DELIVERED, DeliveryState.FAILED):
        assert record.is_due(now)
        record = record.start_attempt(now)
        times.append(now)
        outcome = queue.pop(0) if queue else fail(503)
        now += dt.timedelta(milliseconds=outcome.latency_ms)
        record = record.record_outcome(outcome, now, rng)
        if record.next_attempt_on is not None:
            assert not record.is_due(record.next_attempt_on - dt.timedelta(milliseconds=1))
            now = record.next_attempt_on
    return record, times


def test_schedule_is_seconds_then_minutes_then_hours() -> None:
    """The nominal schedule is 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h after the first try."""
    assert [d.total_seconds() for d in RETRY_DELAYS] == [
        5,
        300,
        1800,
        7200,
        18000,
        36000,
        36000,
    ]
    assert MAX_ATTEMPTS == 8
    assert sum(RETRY_DELAYS, dt.timedelta()) >= MIN_TOTAL_SPAN


@pytest.mark.parametrize("seed", range(20))
def test_jitter_stays_within_twenty_percent(seed: int) -> None:
    """Every jittered delay lies within +-20 % of its nominal value, in whole milliseconds."""
    rng = random.Random(seed)
    for number, nominal in enumerate(RETRY_DELAYS, start=1):
        delay = next_delay(number, rng)
        assert delay is not None
        assert nominal * (1 - JITTER) <= delay <= nominal * (1 + JITTER)
        assert delay.microseconds % 1000 == 0
    assert next_delay(MAX_ATTEMPTS, rng) is None


def test_jitter_actually_varies() -> None:
    """Different seeds give different delays, so failing exports do not retry in lock-step."""
    delays = {next_delay(4, random.Random(seed)) for seed in range(10)}
    assert len(delays) == 10


def test_next_delay_rejects_attempt_zero() -> None:
    """Attempts are numbered from 1."""
    with pytest.raises(ValueError, match="starts at 1"):
        next_delay(0, random.Random(0))


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_whole_schedule_spans_at_least_a_day_and_ends_failed(where: float) -> None:
    """Eight failed attempts span 24 h or more whatever the jitter, then the delivery is failed."""
    record, times = run_until_final(FixedRandom(where))
    assert record.state is DeliveryState.FAILED
    assert len(times) == len(record.attempts) == MAX_ATTEMPTS
    assert times[-1] - times[0] >= MIN_TOTAL_SPAN
    assert times[-1] - times[0] <= sum(RETRY_DELAYS, dt.timedelta()) * (1 + JITTER) + 8 * S
    assert "gave up after 8 attempts" in (record.reason or "")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for gap, nominal in zip(gaps[:-1], RETRY_DELAYS[:-1], strict=True):
        assert nominal * (1 - JITTER) <= gap <= nominal * (1 + JITTER) + S
    assert record.next_attempt_on is None


def test_lowest_jitter_holds_the_last_attempt_to_a_day() -> None:
    """With every delay at -20 % the last retry waits until 24 h after the first attempt."""
    _, times = run_until_final(FixedRandom(0.0))
    assert times[-1] - times[0] == MIN_TOTAL_SPAN


@pytest.mark.parametrize("seed", range(5))
def test_seeded_schedule_is_reproducible(seed: int) -> None:
    """The same seed gives the same attempt times."""
    assert run_until_final(random.Random(seed))[1] == run_until_final(random.Random(seed))[1]


def test_fails_twice_then_delivered() -> None:
    """A receiver that fails twice then answers 200 is delivered on the third attempt."""
    record, times = run_until_final(random.Random(1), [fail(500), fail(None), fail(200)])
    assert record.state is DeliveryState.DELIVERED
    assert [a.status_code for a in record.attempts] == [500, None, 200]
    assert record.attempts[1].error == "connection refused"
    assert len(times) == 3
    with pytest.raises(DeliveryConflict, match="already delivered"):
        record.start_attempt(times[-1] + H)
    assert not record.is_due(times[-1] + 100 * H)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    """Any 2xx answer is a delivery."""
    decision = decide(fail(status), 1, T0, random.Random(0))
    assert decision.state is DeliveryState.DELIVERED
    assert decision.next_attempt_on is None


def test_410_stops() -> None:
    """410 Gone stops delivery at once."""
    decision = decide(fail(410), 1, T0, random.Random(0))
    assert decision.state is DeliveryState.FAILED
    assert decision.reason == "endpoint answered 410 Gone: delivery stopped"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 413, 422, 451, 499])
def test_other_4xx_stop(status: int) -> None:
    """Client errors other than 408 and 429 are not retried."""
    decision = decide(fail(status), 1, T0, random.Random(0))
    assert decision.state is DeliveryState.FAILED
    assert decision.next_attempt_on is None
    assert f"endpoint answered {status}" in decision.reason


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 301, 302, 307, None])
def test_retryable_outcomes_retry(status: int | None) -> None:
    """408, 429, 5xx, 3xx and network errors are retried after the first scheduled delay."""
    decision = decide(fail(status), 1, T0, FixedRandom(0.5))
    assert decision.state is DeliveryState.RETRYING
    assert decision.next_attempt_on == T0 + RETRY_DELAYS[0]
    assert "attempt 2 of 8" in decision.reason


def test_redirect_reason_names_the_redirect() -> None:
    """A 3xx answer is logged as a redirect that was not followed."""
    outcome = AttemptOutcome(302, "redirects are not followed (HTTP 302)", 3)
    decision = decide(outcome, 1, T0, FixedRandom(0.5))
    assert "endpoint answered 302 (redirects are not followed (HTTP 302))" in decision.reason


def test_permanent_outcome_stops() -> None:
    """An outcome marked permanent (the URL is no longer allowed) fails the delivery."""
    outcome = AttemptOutcome(None, "webhook URL no longer allowed: x", 1, permanent=True)
    decision = decide(outcome, 1, T0, random.Random(0))
    assert decision.state is DeliveryState.FAILED
    assert decision.reason == "webhook URL no longer allowed: x"


def test_last_attempt_failure_is_final() -> None:
    """A retryable failure on the eighth attempt fails the delivery."""
    decision = decide(fail(503), MAX_ATTEMPTS, T0, random.Random(0))
    assert decision.state is DeliveryState.FAILED
    assert decision.reason == "endpoint answered 503; gave up after 8 attempts"


def test_retry_after_longer_than_schedule_is_honoured() -> None:
    """A Retry-After longer than the scheduled delay pushes the next attempt out."""
    decision = decide(fail(429, retry_after=120 * S), 1, T0, FixedRandom(1.0))
    assert decision.next_attempt_on == T0 + 120 * S


def test_retry_after_never_shortens_the_schedule() -> None:
    """A Retry-After shorter than the scheduled delay changes nothing."""
    decision = decide(fail(503, retry_after=1 * S), 3, T0, FixedRandom(0.5))
    assert decision.next_attempt_on == T0 + RETRY_DELAYS[2]


def test_retry_after_is_capped() -> None:
    """Retry-After cannot push an attempt more than 24 h out."""
    decision = decide(fail(503, retry_after=1000 * H), 1, T0, FixedRandom(0.5))
    assert decision.next_attempt_on == T0 + MAX_RETRY_AFTER


def test_retry_after_through_the_whole_flow() -> None:
    """A 429 with Retry-After: 600 delays the second attempt by ten minutes."""
    now = T0
    retry_after = parse_retry_after("600", now)
    record = DeliveryRecord.new(now).start_attempt(now)
    record = record.record_outcome(fail(429, retry_after), now, FixedRandom(0.5))
    assert record.state is DeliveryState.RETRYING
    assert record.next_attempt_on == now + 600 * S
    assert not record.is_due(now + 599 * S)
    assert record.is_due(now + 600 * S)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120 * S),
        (" 0 ", dt.timedelta(0)),
        ("Fri, 27 Nov 2026 10:05:00 GMT", 300 * S),
        ("Friday, 27-Nov-26 10:05:00 GMT", 300 * S),
        ("Fri Nov 27 10:05:00 2026", 300 * S),
        ("Fri, 27 Nov 2026 11:05:00 +0100", 300 * S),
        ("99999999", MAX_RETRY_AFTER),
        ("9" * 40, MAX_RETRY_AFTER),
        ("Sat, 27 Nov 2027 10:00:00 GMT", MAX_RETRY_AFTER),
        (None, None),
        ("", None),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("\u0661\u0662", None),
        ("Thu, 26 Nov 2026 10:00:00 GMT", None),
        ("Fri, 99 Nov 2026 10:00:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: dt.timedelta | None) -> None:
    """Retry-After is read as delta-seconds or an HTTP-date; garbage and the past are ignored."""
    assert parse_retry_after(value, T0) == expected


def test_attempt_document_has_millisecond_z_time() -> None:
    """An attempt log entry uses camelCase keys and ISO-8601 Z with milliseconds."""
    at = T0 + dt.timedelta(microseconds=123456)
    attempt = Attempt.from_outcome(at, AttemptOutcome(503, None, 87, host="hooks.example.com"))
    doc = attempt.to_document()
    assert doc == {
        "at": "2026-11-27T10:00:00.123Z",
        "host": "hooks.example.com",
        "statusCode": 503,
        "error": None,
        "latencyMs": 87,
    }
    back = Attempt.from_document(doc)
    assert back.at == T0 + dt.timedelta(milliseconds=123)
    assert back.status_code == 503


def test_record_document_round_trip() -> None:
    """A record survives to_document / from_document."""
    record, _ = run_until_final(random.Random(3), [fail(500), fail(None), fail(204)])
    again = DeliveryRecord.from_document(record.to_document())
    assert again == record
    assert again.to_document()["state"] == "delivered"


def test_second_claim_is_refused() -> None:
    """Once an attempt is in flight, a second start_attempt is a conflict."""
    record = DeliveryRecord.new(T0).start_attempt(T0)
    assert record.state is DeliveryState.DELIVERING
    with pytest.raises(DeliveryConflict, match="in progress"):
        record.start_attempt(T0)


def test_not_due_before_its_time() -> None:
    """A retrying delivery cannot start before next_attempt_on."""
    record = DeliveryRecord.new(T0).start_attempt(T0).record_outcome(fail(500), T0, FixedRandom(0))
    with pytest.raises(DeliveryConflict, match="not due until"):
        record.start_attempt(T0 + S)


def test_record_outcome_needs_an_attempt() -> None:
    """An outcome without a started attempt is a conflict."""
    with pytest.raises(DeliveryConflict, match="no attempt in progress"):
        DeliveryRecord.new(T0).record_outcome(fail(200), T0, random.Random(0))


def test_expired_lease_is_abandoned_and_retried() -> None:
    """An attempt whose worker died is logged as abandoned and scheduled again."""
    record = DeliveryRecord.new(T0).start_attempt(T0, lease=dt.timedelta(minutes=2))
    assert not record.lease_expired(T0 + 119 * S)
    with pytest.raises(DeliveryConflict):
        record.abandon(T0 + 119 * S, random.Random(0))
    later = T0 + 120 * S
    record = record.abandon(later, FixedRandom(0.5))
    assert record.state is DeliveryState.RETRYING
    assert record.attempts[0].error is not None
    assert "abandoned" in record.attempts[0].error
    assert record.attempts[0].latency_ms == 120_000
    assert record.next_attempt_on == later + RETRY_DELAYS[0]


def test_due_on_is_when_the_tick_picks_the_delivery_up() -> None:
    """due_on: the next attempt while waiting, the lease's end in flight, none once final."""
    pending = DeliveryRecord.new(T0)
    delivering = pending.start_attempt(T0, lease=dt.timedelta(minutes=2))
    retrying = delivering.record_outcome(fail(500), T0 + S, FixedRandom(0.5))
    delivered = retrying.start_attempt(retrying.next_attempt_on or T0).record_outcome(
        fail(200), T0 + H, FixedRandom(0.5)
    )
    failed, _ = run_until_final(FixedRandom(0.5))
    assert pending.due_on == T0
    assert delivering.due_on == T0 + 120 * S
    assert retrying.due_on == retrying.next_attempt_on == T0 + S + RETRY_DELAYS[0]
    assert (delivered.due_on, failed.due_on) == (None, None)
    for record in (pending, delivering, retrying, delivered, failed):
        for moment in (T0, T0 + 119 * S, T0 + 120 * S, T0 + 7 * S, T0 + 100 * H):
            picked = record.due_on is not None and record.due_on <= moment
            assert picked == (record.is_due(moment) or record.lease_expired(moment))


def test_redeliver_starts_a_new_round_and_keeps_the_log() -> None:
    """Redelivery after a final failure is due at once, keeps the log and resets the schedule."""
    failed, times = run_until_final(FixedRandom(0.5))
    now = times[-1] + H
    record = failed.redeliver(now)
    assert record.state is DeliveryState.PENDING
    assert record.is_due(now)
    assert len(record.round_attempts) == 0
    record = record.start_attempt(now).record_outcome(fail(500), now, FixedRandom(0.5))
    assert record.state is DeliveryState.RETRYING
    assert record.next_attempt_on == now + RETRY_DELAYS[0]
    assert len(record.attempts) == MAX_ATTEMPTS + 1


def test_redeliver_refused_while_in_flight() -> None:
    """Redelivery waits for an in-flight attempt to finish."""
    record = DeliveryRecord.new(T0).start_attempt(T0)
    with pytest.raises(DeliveryConflict, match="in progress"):
        record.redeliver(T0)


def test_naive_datetimes_are_refused() -> None:
    """Times must carry a zone so the log never mixes local and UTC."""
    with pytest.raises(ValueError, match="timezone-aware"):
        DeliveryRecord.new(dt.datetime(2026, 1, 1))
