"""The compose plan: many objects, in order, into one, at most ``limit`` sources a call.

Cloud Storage composes at most 32 sources in one call, and a composite may itself be a source, so
a longer list is composed in rounds. The plan takes as few rounds as possible (``r`` rounds hold
``limit^r`` sources) and as few calls as the rounds allow: a round composes runs of sources from
the front of the list only until what is left fits the rounds still to come, and passes the rest
on untouched. 33 sources are one call of 2 and a final call of 32 (not 32 + 1 + a final of 2);
1024 are 32 calls of 32 and a final call; 1025 (1024 parts and a CSV header) need three rounds.

The steps of one round read nothing another step of that round writes, so they may run in
parallel; the last round is one step whose destination is the final object. Every intermediate
composite is named under ``scratch_prefix`` from its round and position only
(``<scratch_prefix>compose-r1-00003``), so a retried compose makes the same names again and
``intermediates`` lists what to delete afterwards.

Pure: no Google import, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

GCS_COMPOSE_LIMIT: Final = 32
"""The most sources Cloud Storage accepts in one compose call."""


@dataclass(frozen=True)
class ComposeStep:
    """One compose call: ``sources``, in order, into ``destination``."""

    destination: str
    sources: tuple[str, ...]


def intermediate_name(scratch_prefix: str, round_number: int, index: int) -> str:
    """The name of the ``index``-th composite that round ``round_number`` (from 1) writes."""
    return f"{scratch_prefix}compose-r{round_number}-{index:05d}"


def compose_steps(
    sources: Sequence[str],
    destination: str,
    scratch_prefix: str,
    *,
    limit: int = GCS_COMPOSE_LIMIT,
) -> list[list[ComposeStep]]:
    """The rounds of compose calls that make ``destination`` of ``sources`` in order.

    A single source is one step too (a compose of one object gives it the final name).
    """
    if not sources:
        raise ValueError("a compose needs at least one source")
    if limit < 2:
        raise ValueError(f"a compose limit below 2 sources cannot shorten the list: {limit}")
    rounds_left = 1
    while limit**rounds_left < len(sources):
        rounds_left += 1

    plan: list[list[ComposeStep]] = []
    current = list(sources)
    while rounds_left > 1:
        rounds_left -= 1
        # Each call of k sources shortens the list by k - 1; stop once the rest fits.
        excess = len(current) - limit**rounds_left
        number = len(plan) + 1
        steps: list[ComposeStep] = []
        start = 0
        while excess > 0:
            size = min(limit, excess + 1)
            name = intermediate_name(scratch_prefix, number, len(steps))
            steps.append(ComposeStep(name, tuple(current[start : start + size])))
            excess -= size - 1
            start += size
        plan.append(steps)
        current = [step.destination for step in steps] + current[start:]
    plan.append([ComposeStep(destination, tuple(current))])

    clashes = set(intermediates(plan)) & {*sources, destination}
    if clashes:
        raise ValueError(
            f"intermediate composite names under {scratch_prefix!r} clash with the objects "
            f"being composed: {sorted(clashes)[:3]}"
        )
    return plan


def intermediates(steps: Sequence[Sequence[ComposeStep]]) -> list[str]:
    """The intermediate composites a plan writes (every destination but the final one)."""
    return [step.destination for round_steps in steps[:-1] for step in round_steps]
