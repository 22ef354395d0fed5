"""The saga's rules that need no server: misuse is refused before anything is scheduled."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio import activity
from toy import do, undo

from temporal_saga import Saga, SagaOptions, StepKind
from temporal_saga._names import activity_name


@activity.defn(name="custom-name")
async def renamed(arg: str) -> str:
    return arg


class Booking:
    @activity.defn
    async def book(self, arg: str) -> str:
        return arg


def test_activity_names_are_the_ones_temporal_schedules() -> None:
    # Fails if the SDK stops recording a definition where activity_name reads it: the
    # fallback (the callable's __name__) would then give "renamed".
    assert activity_name(renamed) == "custom-name"
    assert activity_name(Booking.book) == "book"
    assert activity_name("by-name") == "by-name"
    with pytest.raises(TypeError, match=r"not an @activity\.defn"):
        activity_name(len)


async def test_steps_outside_the_block_are_refused() -> None:
    with pytest.raises(RuntimeError, match="inside `async with saga:`"):
        await Saga().execute_activity(do, "a")


async def test_a_pivot_takes_no_compensation() -> None:
    async with Saga() as saga:
        with pytest.raises(ValueError, match="pivot step 'do' takes no compensation"):
            await saga.execute_activity(do, "a", kind=StepKind.PIVOT, compensate_with=undo)


async def test_one_argument_or_several_not_both() -> None:
    async with Saga() as saga:
        with pytest.raises(ValueError, match="arg or args=, not both"):
            await saga.execute_activity(do, "a", args=["b"])  # type: ignore[call-overload]


def test_options_refuse_zero_attempts() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SagaOptions(compensation_attempts=0, compensation_timeout=timedelta(seconds=1))
