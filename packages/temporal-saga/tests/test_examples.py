"""The examples as a user runs them: their own workflows, activities and workers on a real
Temporal dev server, and each as its one command (``--embedded``)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from temporal_saga import CompensationState, StepKind, StepOutcome, StepState

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the examples are scripts beside the package, not part of it

from examples import child_compensation, trip_booking  # noqa: E402
from examples.child_compensation import MoneyTransfer, Transfer  # noqa: E402
from examples.trip_booking import Trip, TripBooking  # noqa: E402

WAIT = 30.0  # seconds; a run not finished by then fails the test
BOOKINGS = ["car", "hotel", "flight"]
ResultT = TypeVar("ResultT")


async def result(handle: WorkflowHandle[Any, ResultT]) -> ResultT:
    async with asyncio.timeout(WAIT):
        return await handle.result()


async def failure(handle: WorkflowHandle[Any, Any]) -> ApplicationError:
    """The error a failed run ended with, as its activity raised it."""
    with pytest.raises(WorkflowFailureError) as raised:
        await result(handle)
    error: BaseException | None = raised.value
    while error is not None and not isinstance(error, ApplicationError):
        error = error.__cause__
    assert error is not None, raised.value
    return error


# --- trip booking ----------------------------------------------------------------------


@dataclass(frozen=True)
class Trips:
    client: Client
    task_queue: str

    async def book(
        self, fail_at: str | None = None
    ) -> tuple[Trip, WorkflowHandle[TripBooking, str]]:
        trip = Trip(f"trip-{uuid.uuid4().hex[:8]}", "ada", fail_at)
        handle = await self.client.start_workflow(
            TripBooking.run, trip, id=trip.id, task_queue=self.task_queue
        )
        return trip, handle


@pytest.fixture
async def trips(dev_server_env: WorkflowEnvironment, task_queue: str) -> AsyncIterator[Trips]:
    async with trip_booking.worker(dev_server_env.client, task_queue):
        yield Trips(dev_server_env.client, task_queue)


async def test_a_trip_that_goes_through_keeps_every_booking(trips: Trips) -> None:
    trip, handle = await trips.book()

    assert await result(handle) == f"car-{trip.id}, hotel-{trip.id}, flight-{trip.id}"
    assert trip_booking.journal[trip.id] == [
        "booked car",
        "booked hotel",
        "booked flight",
        "booked payment",
        "itinerary sent (attempt 1)",
    ]
    assert {trip_booking.bookings[trip.id, b] for b in BOOKINGS} == {"booked"}
    ledger = await handle.query(TripBooking.ledger)
    assert [(r.step, r.kind, r.state) for r in ledger] == [
        ("book_car", StepKind.COMPENSATABLE, StepState.SUCCEEDED),
        ("book_hotel", StepKind.COMPENSATABLE, StepState.SUCCEEDED),
        ("book_flight", StepKind.COMPENSATABLE, StepState.SUCCEEDED),
        ("charge_card", StepKind.PIVOT, StepState.SUCCEEDED),
        ("send_itinerary", StepKind.RETRIABLE, StepState.SUCCEEDED),
    ]
    # Registered, never run.
    assert [(r.compensation_state, r.compensation_attempts) for r in ledger[:3]] == [
        (CompensationState.REGISTERED, 0)
    ] * 3


@pytest.mark.parametrize("fail_at", [*BOOKINGS, "payment"])
async def test_a_failed_trip_cancels_what_was_booked_newest_first(
    trips: Trips, fail_at: str
) -> None:
    trip, handle = await trips.book(fail_at)

    error = await failure(handle)
    assert (error.type, error.non_retryable) == (trip_booking.ERRORS[fail_at], True)
    booked = BOOKINGS[: BOOKINGS.index(fail_at)] if fail_at in BOOKINGS else BOOKINGS
    assert trip_booking.journal.get(trip.id, []) == [
        *(f"booked {b}" for b in booked),
        *(f"cancelled {b}" for b in reversed(booked)),
    ]
    assert {b: trip_booking.bookings.get((trip.id, b)) for b in BOOKINGS} == {
        b: "cancelled" if b in booked else None for b in BOOKINGS
    }
    ledger = await handle.query(TripBooking.ledger)
    failed = ledger[-1]
    assert (failed.state, failed.outcome) == (StepState.FAILED, StepOutcome.FAILED)
    assert [r.state for r in ledger[:-1]] == [StepState.SUCCEEDED] * len(booked)
    # Every cancel ran once, the failed booking's too: told it FAILED, it found nothing.
    bookings = [r for r in ledger if r.kind is StepKind.COMPENSATABLE]
    assert [(r.compensation_state, r.compensation_attempts) for r in bookings] == [
        (CompensationState.COMPENSATED, 1)
    ] * len(bookings)


async def test_a_failure_after_the_pivot_is_retried_and_compensates_nothing(
    trips: Trips,
) -> None:
    trip, handle = await trips.book("itinerary")

    assert await result(handle) == f"car-{trip.id}, hotel-{trip.id}, flight-{trip.id}"
    assert trip_booking.journal[trip.id][3:] == [
        "booked payment",
        "itinerary not sent (attempt 1)",
        "itinerary not sent (attempt 2)",
        "itinerary sent (attempt 3)",
    ]
    assert {trip_booking.bookings[trip.id, b] for b in BOOKINGS} == {"booked"}
    ledger = await handle.query(TripBooking.ledger)
    assert [r.state for r in ledger] == [StepState.SUCCEEDED] * 5
    assert {r.compensation_state for r in ledger[:3]} == {CompensationState.REGISTERED}


# --- a compensation that is a child workflow ---------------------------------------------


@dataclass(frozen=True)
class Transfers:
    client: Client
    task_queue: str

    async def start(self, transfer: Transfer) -> WorkflowHandle[MoneyTransfer, None]:
        return await self.client.start_workflow(
            MoneyTransfer.run, transfer, id=f"transfer-{transfer.id}", task_queue=self.task_queue
        )

    async def children_started(self, handle: WorkflowHandle[MoneyTransfer, None]) -> int:
        history = await handle.fetch_history()
        return sum(
            e.HasField("start_child_workflow_execution_initiated_event_attributes")
            for e in history.events
        )


@pytest.fixture
async def transfers(
    dev_server_env: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[Transfers]:
    async with child_compensation.worker(dev_server_env.client, task_queue):
        yield Transfers(dev_server_env.client, task_queue)


def accounts(*opening: int) -> list[str]:
    """New accounts of this test's own, opened with these balances."""
    names = [f"account-{uuid.uuid4().hex[:8]}" for _ in opening]
    child_compensation.balances.update(zip(names, opening, strict=True))
    return names


def notices_of(transfer: Transfer) -> list[str]:
    return [n for n in child_compensation.notices if f"transfer {transfer.id} " in n]


async def test_a_transfer_that_goes_through_needs_no_refund(transfers: Transfers) -> None:
    source, target = accounts(100, 0)
    transfer = Transfer(uuid.uuid4().hex, source, target, 30)
    handle = await transfers.start(transfer)

    await result(handle)
    assert (child_compensation.balances[source], child_compensation.balances[target]) == (70, 30)
    assert await transfers.children_started(handle) == 0
    assert notices_of(transfer) == []
    ledger = await handle.query(MoneyTransfer.ledger)
    assert ledger[0].step == "refund"
    assert ledger[0].compensation_state is CompensationState.REGISTERED


async def test_a_failed_credit_is_undone_by_one_refund_child_workflow(
    transfers: Transfers,
) -> None:
    (source,) = accounts(100)
    transfer = Transfer(uuid.uuid4().hex, source, "closed-account", 40)
    handle = await transfers.start(transfer)

    error = await failure(handle)
    assert error.type == "AccountClosed"
    assert child_compensation.balances[source] == 100
    assert notices_of(transfer) == [f"{source}: 40 refunded, transfer {transfer.id} failed"]
    assert await transfers.children_started(handle) == 1
    child = await transfers.client.get_workflow_handle(f"{handle.id}-refund").describe()
    assert (child.workflow_type, child.status) == (
        "RefundWorkflow",
        WorkflowExecutionStatus.COMPLETED,
    )
    ledger = await handle.query(MoneyTransfer.ledger)
    assert [(r.step, r.state) for r in ledger] == [
        ("refund", StepState.SUCCEEDED),
        ("debit", StepState.SUCCEEDED),
        ("credit", StepState.FAILED),
    ]
    assert (ledger[0].compensation_state, ledger[0].compensation_attempts) == (
        CompensationState.COMPENSATED,
        1,
    )


async def test_a_failed_debit_runs_the_refund_which_pays_back_nothing(
    transfers: Transfers,
) -> None:
    (target,) = accounts(0)
    transfer = Transfer(uuid.uuid4().hex, "closed-account", target, 40)
    handle = await transfers.start(transfer)

    assert (await failure(handle)).type == "AccountClosed"
    # Registered before the debit, the refund ran; it found no debit posted: nothing to return.
    assert await transfers.children_started(handle) == 1
    assert notices_of(transfer) == []
    assert child_compensation.balances[target] == 0


# --- the one command -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "failed", "ledger"),
    [
        (
            "trip_booking.py",
            r"trip bob-\w+ failed \(NoSeat: flight refused for trip bob-\w+\) and was rolled back:",
            [
                r"book_car +SUCCEEDED +cancel_car COMPENSATED",
                r"book_hotel +SUCCEEDED +cancel_hotel COMPENSATED",
                r"book_flight +FAILED +cancel_flight COMPENSATED",
            ],
        ),
        (
            "child_compensation.py",
            r"to carol failed \(AccountClosed: carol is closed\) and was rolled back:",
            [
                r"refund +SUCCEEDED +compensation COMPENSATED",
                r"debit +SUCCEEDED +compensation NONE",
                r"credit +FAILED +compensation NONE",
                r"balances: \{'alice': 70, 'bob': 30\}",
            ],
        ),
    ],
)
def test_the_example_runs_with_one_command(example: str, failed: str, ledger: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example), "--embedded"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 0, run.stderr
    rolled_back = re.search(failed, run.stdout)
    assert rolled_back, run.stdout
    after = run.stdout[rolled_back.end() :]
    for line in ledger:
        assert re.search(line, after), f"{line!r} not in the rolled-back ledger:\n{run.stdout}"
