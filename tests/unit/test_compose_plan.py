"""The compose plan: rounds of at most 32 sources that keep the parts in order."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataset_export.core.compose import (
    ComposeStep,
    compose_steps,
    intermediate_name,
    intermediates,
)

SCRATCH = "tmp/q/"
FINAL = "exports/q.csv.gz"


def names(count: int) -> list[str]:
    return [f"tmp/q/part-{i:05d}" for i in range(count)]


def leaves(plan: list[list[ComposeStep]]) -> list[str]:
    """The original sources of the final object, by expanding every intermediate composite."""
    made = {step.destination: step.sources for round_steps in plan for step in round_steps}

    def expand(name: str) -> list[str]:
        if name in made and name != FINAL:
            return [leaf for source in made[name] for leaf in expand(source)]
        return [name]

    (final,) = plan[-1]
    return [leaf for source in final.sources for leaf in expand(source)]


def check_plan(plan: list[list[ComposeStep]], sources: list[str], limit: int) -> None:
    """Every property a caller relies on, for any plan."""
    assert plan[-1] == [ComposeStep(FINAL, plan[-1][0].sources)]
    assert leaves(plan) == sources
    assert all(1 <= len(step.sources) <= limit for steps in plan for step in steps)
    assert len(plan) == min(r for r in range(1, 64) if limit**r >= len(sources))
    calls = sum(len(steps) for steps in plan)
    assert calls == max(1, math.ceil((len(sources) - 1) / (limit - 1)))
    scratch = intermediates(plan)
    assert all(name.startswith(SCRATCH + "compose-r") for name in scratch)
    assert len(set(scratch)) == len(scratch)
    for number, steps in enumerate(plan, start=1):
        written = {step.destination for step in steps}
        # A round reads nothing it writes itself: its steps may run in parallel.
        assert not written & {s for step in steps for s in step.sources}
        if number < len(plan):
            assert [s.destination for s in steps] == [
                intermediate_name(SCRATCH, number, i) for i in range(len(steps))
            ]
    # Every intermediate is read exactly once, by a later round.
    read = Counter(s for steps in plan for step in steps for s in step.sources)
    assert all(read[name] == 1 for name in scratch)


def test_one_source_is_one_compose_into_the_final_name() -> None:
    """A single part still gets one compose call, which gives it the final name."""
    assert compose_steps(["tmp/q/part-00000"], FINAL, SCRATCH) == [
        [ComposeStep(FINAL, ("tmp/q/part-00000",))]
    ]


@pytest.mark.parametrize("count", [2, 32])
def test_up_to_32_sources_are_one_call(count: int) -> None:
    """Up to the limit, the plan is one call with every source in order."""
    assert compose_steps(names(count), FINAL, SCRATCH) == [
        [ComposeStep(FINAL, tuple(names(count)))]
    ]


def test_33_sources_compose_two_then_the_rest() -> None:
    """33 sources: one intermediate of the first two, then a final call of 32."""
    plan = compose_steps(names(33), FINAL, SCRATCH)
    first = ComposeStep("tmp/q/compose-r1-00000", tuple(names(2)))
    assert plan == [[first], [ComposeStep(FINAL, (first.destination, *names(33)[2:]))]]
    assert intermediates(plan) == ["tmp/q/compose-r1-00000"]


def test_70_sources_take_three_calls_in_two_rounds() -> None:
    """70 sources: intermediates of 32 and 8, then a final call of 32, order kept."""
    plan = compose_steps(names(70), FINAL, SCRATCH)
    assert [[len(s.sources) for s in steps] for steps in plan] == [[32, 8], [32]]
    check_plan(plan, names(70), 32)


def test_1024_sources_take_two_rounds() -> None:
    """1024 parts: 32 calls of 32 in parallel, then one call of the 32 composites."""
    plan = compose_steps(names(1024), FINAL, SCRATCH)
    assert [len(steps) for steps in plan] == [32, 1]
    assert all(len(step.sources) == 32 for steps in plan for step in steps)
    assert plan[1][0].sources == tuple(intermediates(plan))
    check_plan(plan, names(1024), 32)


def test_1025_sources_take_three_rounds() -> None:
    """1024 parts and a CSV header exceed 32 * 32 sources, so a third round is needed."""
    plan = compose_steps(names(1025), FINAL, SCRATCH)
    assert [len(steps) for steps in plan] == [1, 32, 1]
    check_plan(plan, names(1025), 32)


def test_the_plan_is_the_same_every_time() -> None:
    """A retried compose plans the same intermediate names for the same sources."""
    assert compose_steps(names(500), FINAL, SCRATCH) == compose_steps(names(500), FINAL, SCRATCH)


@settings(deadline=None)
@given(st.integers(min_value=1, max_value=3000), st.integers(min_value=2, max_value=40))
def test_any_count_and_limit_give_a_valid_minimal_plan(count: int, limit: int) -> None:
    """For any count and limit: order kept, limit respected, fewest rounds and calls."""
    sources = names(count)
    check_plan(compose_steps(sources, FINAL, SCRATCH, limit=limit), sources, limit)


@pytest.mark.parametrize(
    ("sources", "limit", "message"),
    [
        ([], 32, "at least one source"),
        (["a", "b"], 1, "limit below 2"),
        (["tmp/q/compose-r1-00000", *names(40)], 32, "clash"),
    ],
)
def test_impossible_plans_are_refused(sources: list[str], limit: int, message: str) -> None:
    """No sources, a limit below 2, or a source named like an intermediate raise ValueError."""
    with pytest.raises(ValueError, match=message):
        compose_steps(sources, FINAL, SCRATCH, limit=limit)
