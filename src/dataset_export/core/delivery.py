"""Webhook delivery policy and state machine: when to retry, when to stop, what to record.

Pure code: no network, no environment, no clock of its own. Callers pass ``now`` and a
``random.Random`` so tests can walk the whole schedule in milliseconds.

Schedule (Standard Webhooks / Svix-like): the first attempt, then retries after 5 s, 5 min,
30 min, 2 h, 5 h, 10 h and 10 h: eight attempts in all. Each delay gets +-20 % jitter so many
failing exports do not retry in lock-step. The nominal span is 27 h 35 min; because downward
jitter could bring that under a day, the last attempt is never scheduled earlier than 24 h after
the first one of its round (:data:`MIN_TOTAL_SPAN`). A ``Retry-After`` answer can only push an
attempt later, never earlier, and is capped at 24 h.

Outcomes: 2xx is delivered. ``410 Gone`` stops delivery. Other 4xx stop too, except 408 and 429,
which are retried like 5xx. 3xx is retried like 5xx: the sender follows no redirects (a redirect
could point anywhere, including our own network), so a redirect is a failed attempt that may
succeed once the endpoint is fixed. Network errors and timeouts are retried. An outcome marked
``permanent`` (the URL no longer passes the policy at send time) stops delivery.

State: ``pending`` (waiting for its first attempt) -> ``delivering`` (an attempt is in flight,
under a lease) -> ``delivered`` | ``retrying`` (waiting for ``next_attempt_on``) | ``failed``.
``delivered`` and ``failed`` are final until :meth:`DeliveryRecord.redeliver` starts a new round
(the attempt log is kept; the schedule counts attempts of the current round only).

Claims: whoever persists these records must make every transition a compare-and-set (Firestore:
a transaction or an update with a ``last_update_time`` precondition on the document read), so two
workers that both see a due record cannot both start an attempt, and nothing can start an attempt
after ``delivered``. A worker that dies mid-attempt leaves ``delivering`` with an expired lease;
:meth:`DeliveryRecord.abandon` turns that into a logged failed attempt and schedules the next one.
The receiver may then see the same ``webhook-id`` twice (the abandoned attempt may have
arrived): that is the at-least-once edge every webhook system has, and why the id is stable.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Final

from dataset_export.core.errors import DeliveryConflict
from dataset_export.core.lifecycle import DEFAULT_LEASE
from dataset_export.core.records import iso_z

__all__ = [
    "JITTER",
    "MAX_ATTEMPTS",
    "MAX_RETRY_AFTER",
    "MIN_TOTAL_SPAN",
    "RETRY_DELAYS",
    "Attempt",
    "AttemptOutcome",
    "Decision",
    "DeliveryRecord",
    "DeliveryState",
    "decide",
    "next_delay",
    "parse_retry_after",
]


class DeliveryState(StrEnum):
    """Where one export's webhook delivery stands."""

    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    FAILED = "failed"


_S = dt.timedelta(seconds=1)
_MIN = dt.timedelta(minutes=1)
_H = dt.timedelta(hours=1)

RETRY_DELAYS: Final[tuple[dt.timedelta, ...]] = (
    5 * _S,
    5 * _MIN,
    30 * _MIN,
    2 * _H,
    5 * _H,
    10 * _H,
    10 * _H,
)
"""Nominal wait before retry ``n`` (1-based), counted from the end of the previous attempt."""

MAX_ATTEMPTS: Final = 1 + len(RETRY_DELAYS)
JITTER: Final = 0.2
MIN_TOTAL_SPAN: Final = dt.timedelta(hours=24)
MAX_RETRY_AFTER: Final = dt.timedelta(hours=24)

_RETRYABLE_4XX: Final = frozenset({408, 429})
_PUBLIC_ATTEMPT: Final = ("at", "host", "statusCode", "error", "latencyMs")
_MS = dt.timedelta(milliseconds=1)


def _aware(moment: dt.datetime, name: str) -> dt.datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment


def _parse_iso(text: Any) -> dt.datetime | None:
    if text is None:
        return None
    moment = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _span(delta: dt.timedelta) -> str:
    """A short human duration: ``5 s``, ``30 min``, ``2 h 5 min``."""
    seconds = round(delta.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min" + (f" {seconds} s" if seconds else "")
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def next_delay(attempt_number: int, rng: random.Random) -> dt.timedelta | None:
    """The jittered wait after attempt ``attempt_number`` (1-based), or ``None`` when exhausted.

    ``next_delay(1, rng)`` is the wait before the second attempt (5 s +- 20 %);
    ``next_delay(MAX_ATTEMPTS, rng)`` is ``None``. Results are whole milliseconds.
    """
    if attempt_number < 1:
        raise ValueError(f"attempt_number starts at 1 (got {attempt_number})")
    if attempt_number > len(RETRY_DELAYS):
        return None
    nominal = RETRY_DELAYS[attempt_number - 1]
    factor = 1.0 + rng.uniform(-JITTER, JITTER)
    return dt.timedelta(milliseconds=round(nominal / _MS * factor))


def parse_retry_after(value: str | None, now: dt.datetime) -> dt.timedelta | None:
    """Read a ``Retry-After`` header (delta-seconds or HTTP-date) as a wait from ``now``.

    Missing, malformed, negative or past values give ``None``; waits are capped at
    :data:`MAX_RETRY_AFTER`. A date without a zone is read as UTC.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        if len(text) > 12:  # far beyond the cap; avoid building a huge timedelta
            return MAX_RETRY_AFTER
        return min(dt.timedelta(seconds=int(text)), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    wait = when - _aware(now, "now")
    if wait < dt.timedelta(0):
        return None
    return min(wait, MAX_RETRY_AFTER)


@dataclass(frozen=True)
class AttemptOutcome:
    """What one attempt produced: an HTTP status, or an error, and how long it took.

    ``permanent`` marks a failure no retry can cure (the URL no longer passes the policy);
    ``host`` is the URL's host for the attempt log; ``response_bytes`` how much of the response
    body the sender read (it stops at its cap).
    """

    status_code: int | None
    error: str | None
    latency_ms: int
    retry_after: dt.timedelta | None = None
    host: str | None = None
    permanent: bool = False
    response_bytes: int = 0


@dataclass(frozen=True)
class Attempt:
    """One attempt as the log keeps it."""

    at: dt.datetime
    host: str | None
    status_code: int | None
    error: str | None
    latency_ms: int

    @classmethod
    def from_outcome(cls, at: dt.datetime, outcome: AttemptOutcome) -> Attempt:
        """The log entry for an attempt that started at ``at``."""
        return cls(
            at=_aware(at, "at"),
            host=outcome.host,
            status_code=outcome.status_code,
            error=outcome.error,
            latency_ms=outcome.latency_ms,
        )

    def to_document(self) -> dict[str, Any]:
        """``{"at", "host", "statusCode", "error", "latencyMs"}`` with ``at`` as ISO-8601 Z."""
        return {
            "at": iso_z(self.at),
            "host": self.host,
            "statusCode": self.status_code,
            "error": self.error,
            "latencyMs": self.latency_ms,
        }

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Attempt:
        """Read back what :meth:`to_document` wrote."""
        at = _parse_iso(doc["at"])
        if at is None:
            raise ValueError("attempt without a time")
        status = doc.get("statusCode")
        return cls(
            at=at,
            host=doc.get("host"),
            status_code=None if status is None else int(status),
            error=doc.get("error"),
            latency_ms=int(doc.get("latencyMs") or 0),
        )


@dataclass(frozen=True)
class Decision:
    """What to do after an attempt: the new state, when to try again, and why."""

    state: DeliveryState
    next_attempt_on: dt.datetime | None
    reason: str


def _problem(outcome: AttemptOutcome) -> str:
    if outcome.status_code is None:
        return outcome.error or "the attempt failed"
    text = f"endpoint answered {outcome.status_code}"
    return f"{text} ({outcome.error})" if outcome.error else text


def decide(
    outcome: AttemptOutcome,
    attempts_so_far: int,
    now: dt.datetime,
    rng: random.Random,
    *,
    first_attempt_at: dt.datetime | None = None,
) -> Decision:
    """Classify an attempt's outcome and schedule the next attempt, if any.

    ``attempts_so_far`` counts the attempts of this round including the one that produced
    ``outcome``. ``first_attempt_at`` (the round's first attempt) lets the last retry be held
    back to :data:`MIN_TOTAL_SPAN` after it.
    """
    if attempts_so_far < 1:
        raise ValueError(f"attempts_so_far starts at 1 (got {attempts_so_far})")
    now = _aware(now, "now")
    code = outcome.status_code
    if outcome.permanent:
        return Decision(DeliveryState.FAILED, None, outcome.error or "permanent failure")
    if code is not None and 200 <= code < 300:
        return Decision(DeliveryState.DELIVERED, None, f"delivered: endpoint answered {code}")
    if code == 410:
        return Decision(DeliveryState.FAILED, None, "endpoint answered 410 Gone: delivery stopped")
    if code is not None and 400 <= code < 500 and code not in _RETRYABLE_4XX:
        return Decision(
            DeliveryState.FAILED,
            None,
            f"endpoint answered {code}: client errors other than 408 and 429 are not retried",
        )
    problem = _problem(outcome)
    delay = next_delay(attempts_so_far, rng)
    if delay is None:
        return Decision(
            DeliveryState.FAILED, None, f"{problem}; gave up after {attempts_so_far} attempts"
        )
    if outcome.retry_after is not None:
        delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER))
    next_on = now + delay
    if first_attempt_at is not None and attempts_so_far + 1 == MAX_ATTEMPTS:
        next_on = max(next_on, _aware(first_attempt_at, "first_attempt_at") + MIN_TOTAL_SPAN)
    reason = (
        f"{problem}; attempt {attempts_so_far + 1} of {MAX_ATTEMPTS} "
        f"in {_span(next_on - now)} at {iso_z(next_on)}"
    )
    return Decision(DeliveryState.RETRYING, next_on, reason)


@dataclass(frozen=True)
class DeliveryRecord:
    """One export's delivery state and attempt log; every method returns a new record.

    The persistence adapter stores :meth:`to_document` and writes each transition with a
    precondition on the version it read, so a transition computed from a stale read fails.
    """

    state: DeliveryState = DeliveryState.PENDING
    attempts: tuple[Attempt, ...] = ()
    next_attempt_on: dt.datetime | None = None
    reason: str | None = None
    attempt_started_on: dt.datetime | None = None
    lease_until: dt.datetime | None = None
    round_start: int = 0
    """Index in ``attempts`` where the current round (first delivery or a redelivery) began."""
    round_id: str | None = None
    """Which redelivery request started the current round (None for the first delivery)."""

    @classmethod
    def new(cls, now: dt.datetime) -> DeliveryRecord:
        """A delivery that is due at once."""
        return cls(next_attempt_on=_aware(now, "now"), reason="waiting for the first attempt")

    @property
    def round_attempts(self) -> tuple[Attempt, ...]:
        """The attempts that count against the schedule."""
        return self.attempts[self.round_start :]

    def is_due(self, now: dt.datetime) -> bool:
        """Whether an attempt may start now (``pending`` or ``retrying`` and its time has come)."""
        if self.state not in (DeliveryState.PENDING, DeliveryState.RETRYING):
            return False
        return self.next_attempt_on is None or _aware(now, "now") >= self.next_attempt_on

    @property
    def due_on(self) -> dt.datetime | None:
        """When the retry tick should pick this delivery up; None once it is final.

        The next attempt's time while ``pending`` or ``retrying``, the lease's end while
        ``delivering`` (its worker may have died): ``is_due(t) or lease_expired(t)`` is
        ``due_on <= t``. Stores index it so that the tick asks only for ``due_on <= now``.
        """
        if self.state in (DeliveryState.PENDING, DeliveryState.RETRYING):
            return self.next_attempt_on
        if self.state is DeliveryState.DELIVERING:
            return self.lease_until
        return None

    def lease_expired(self, now: dt.datetime) -> bool:
        """Whether an in-flight attempt's lease ran out (its worker presumably died)."""
        return (
            self.state is DeliveryState.DELIVERING
            and self.lease_until is not None
            and _aware(now, "now") >= self.lease_until
        )

    def start_attempt(
        self, now: dt.datetime, *, lease: dt.timedelta = DEFAULT_LEASE
    ) -> DeliveryRecord:
        """Claim the delivery for one attempt: ``delivering`` until ``now + lease``."""
        if not self.is_due(now):
            raise DeliveryConflict(self._why_not_due(now))
        return replace(
            self,
            state=DeliveryState.DELIVERING,
            attempt_started_on=now,
            lease_until=now + lease,
            reason="attempt in progress",
        )

    def record_outcome(
        self, outcome: AttemptOutcome, now: dt.datetime, rng: random.Random
    ) -> DeliveryRecord:
        """Log the in-flight attempt's outcome and move to the state :func:`decide` picks."""
        if self.state is not DeliveryState.DELIVERING or self.attempt_started_on is None:
            raise DeliveryConflict(f"no attempt in progress (state is {self.state.value})")
        attempt = Attempt.from_outcome(self.attempt_started_on, outcome)
        attempts = (*self.attempts, attempt)
        round_attempts = attempts[self.round_start :]
        decision = decide(
            outcome, len(round_attempts), now, rng, first_attempt_at=round_attempts[0].at
        )
        return replace(
            self,
            state=decision.state,
            attempts=attempts,
            next_attempt_on=decision.next_attempt_on,
            reason=decision.reason,
            attempt_started_on=None,
            lease_until=None,
        )

    def abandon(self, now: dt.datetime, rng: random.Random) -> DeliveryRecord:
        """Record an in-flight attempt whose lease expired as failed, and schedule the next."""
        if not self.lease_expired(now):
            raise DeliveryConflict("no expired attempt to abandon")
        assert self.attempt_started_on is not None
        latency = int((now - self.attempt_started_on) / _MS)
        outcome = AttemptOutcome(
            status_code=None,
            error="attempt abandoned: the sender stopped before recording an outcome",
            latency_ms=latency,
            host=None,
        )
        return self.record_outcome(outcome, now, rng)

    def redeliver(self, now: dt.datetime, round_id: str | None = None) -> DeliveryRecord:
        """Start a new round (due now) keeping the log; refused while an attempt is in flight.

        ``round_id`` names the request that asks, so it can later tell its own round, not yet
        started, from one that a worker or another request has moved on (see
        :meth:`is_unstarted_round`).
        """
        if self.state is DeliveryState.DELIVERING and not self.lease_expired(now):
            raise DeliveryConflict("an attempt is in progress; try again shortly")
        return replace(
            self,
            state=DeliveryState.PENDING,
            next_attempt_on=_aware(now, "now"),
            reason="redelivery requested",
            attempt_started_on=None,
            lease_until=None,
            round_start=len(self.attempts),
            round_id=round_id,
        )

    def is_unstarted_round(self, round_id: str) -> bool:
        """Whether this is still the round ``round_id`` started, with no attempt begun."""
        return (
            self.round_id == round_id
            and self.state is DeliveryState.PENDING
            and self.round_start == len(self.attempts)
        )

    def _why_not_due(self, now: dt.datetime) -> str:
        if self.state is DeliveryState.DELIVERED:
            return "already delivered"
        if self.state is DeliveryState.FAILED:
            return "delivery failed; redeliver to try again"
        if self.state is DeliveryState.DELIVERING:
            return "another attempt is in progress"
        return f"not due until {iso_z(self.next_attempt_on)} (now {iso_z(now)})"

    def to_document(self) -> dict[str, Any]:
        """The Firestore / status form; timestamps ISO-8601 Z (they sort as strings)."""
        return {
            "state": self.state.value,
            "attempts": [attempt.to_document() for attempt in self.attempts],
            "nextAttemptOn": iso_z(self.next_attempt_on),
            "reason": self.reason,
            "attemptStartedOn": iso_z(self.attempt_started_on),
            "leaseUntil": iso_z(self.lease_until),
            "roundStart": self.round_start,
            "roundId": self.round_id,
        }

    def public_document(self) -> dict[str, Any]:
        """The customer's view (the status document's ``delivery``): state, schedule and
        attempt log, without the lease and round details."""
        stored = self.to_document()
        view: dict[str, Any] = {"state": stored["state"]}
        for key in ("nextAttemptOn", "reason"):
            if stored[key]:
                view[key] = stored[key]
        view["attempts"] = [
            {k: attempt.get(k) for k in _PUBLIC_ATTEMPT} for attempt in stored["attempts"]
        ]
        return view

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> DeliveryRecord:
        """Read back what :meth:`to_document` wrote."""
        return cls(
            state=DeliveryState(doc.get("state", DeliveryState.PENDING.value)),
            attempts=tuple(Attempt.from_document(a) for a in doc.get("attempts") or ()),
            next_attempt_on=_parse_iso(doc.get("nextAttemptOn")),
            reason=doc.get("reason"),
            attempt_started_on=_parse_iso(doc.get("attemptStartedOn")),
            lease_until=_parse_iso(doc.get("leaseUntil")),
            round_start=int(doc.get("roundStart") or 0),
            round_id=doc.get("roundId"),
        )
