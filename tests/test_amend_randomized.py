"""Random sequences of amendments, failures and cancellations, run by the real workflow.

Each scenario draws a few amendments (pizzas added and removed, some of them impossible),
which of them are sent together with the next one (two at once), whether the bill bounces
after the kitchen (the order then rolls back, amendments and all), and whether the order is
cancelled: after some amendment, or together with one (a race). Whatever the draw:

- a completed order's net money is its final price, and the stock went down by exactly its
  final pizzas; a cancelled or failed order's net money is 0 and the stock is as before;
- the final pizzas are the ones the order's accepted amendments (its history) say, and, for
  amendments sent one at a time, the ones a model of the rules says (an impossible one is
  refused, naming its field, and changes nothing);
- no stock is ever negative (the stock table's constraint) and every run ends.

As in tests/test_randomized.py, hypothesis draws the scenarios and one real worker runs them
one after another; ``PIZZA_HYPOTHESIS_SEED`` replays a run.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import Stores, build_worker
from pizza_saga.order.amend import AMENDMENT_ERROR, Amendment, AmendmentError, reprice
from pizza_saga.order.menu import MENU, price_order
from pizza_saga.order.models import Pizza
from pizza_saga.order.workflow import PizzaOrderWorkflow
from tests.orders import OrderHandle, net_money, new_order, result_of
from tests.postgres import SQLITE_ONLY
from tests.test_amend import in_kitchen
from tests.timeskipping import started_time_skipping

pytestmark = SQLITE_ONLY

SCENARIOS = int(os.environ.get("PIZZA_RANDOM_SCENARIOS") or 20)
ITEMS = sorted(MENU)


@pytest.fixture(scope="module")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """This module's own time-skipping server: its orders wait on 10-minute kitchens that
    only a clock no other module's leftovers hold can skip (see conftest)."""
    async with started_time_skipping() as env:
        yield env


@dataclass(frozen=True)
class Change:
    add: tuple[str, ...]
    remove: tuple[str, ...]
    together_with_next: bool
    """Sent at once with the next change (or the cancellation), not after it answered."""


@dataclass(frozen=True)
class Scenario:
    changes: tuple[Change, ...]
    bounce: bool
    cancel_after: int | None
    """Cancelled after this many changes were sent (with the last one if it is together)."""


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    # Mostly changes the order can take: at most two removed, drawn from the order's three
    # and from what earlier changes added (a pizza added, then taken out again, empties that
    # change's reservation and charge); and mostly a rollback after some of them.
    changes: list[Change] = []
    pool = list(ITEMS)
    for _ in range(draw(st.integers(1, 4))):
        added = tuple(draw(st.lists(st.sampled_from(ITEMS), max_size=3)))
        removed = tuple(draw(st.lists(st.sampled_from(pool), max_size=2)))
        together = draw(st.sampled_from([False, False, True]))
        changes.append(Change(added, removed, together))
        pool += list(added) * 2
    cancel_after = draw(st.none() | st.integers(1, len(changes)) | st.just(0))
    return Scenario(tuple(changes), draw(st.booleans()), cancel_after)


def draw_scenarios(run_seed: int) -> list[Scenario]:
    drawn: list[Scenario] = []

    @seed(run_seed)
    @settings(
        max_examples=SCENARIOS,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(scenarios())
    def collect(scenario: Scenario) -> None:
        drawn.append(scenario)

    collect()
    return drawn


def pizza(description: str) -> Pizza:
    return Pizza(description=description, price=MENU[description])


async def send(handle: OrderHandle, key: str, change: Change) -> str | None:
    """Send one amendment; None if taken, else the field it was refused for ("order": the
    order takes no more, or had ended before the amendment reached it)."""
    amendment = Amendment(
        amendment_id=key, add=[pizza(d) for d in change.add], remove=list(change.remove)
    )
    try:
        await handle.execute_update(PizzaOrderWorkflow.amend, amendment)
    except RPCError as err:  # the run closed before the update reached it
        assert err.status is RPCStatusCode.NOT_FOUND, err
        return "order"
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        assert isinstance(cause, ApplicationError), cause
        assert cause.type == AMENDMENT_ERROR, cause
        return str(cause.details[0])
    return None


class Run:
    def __init__(self, client: Client, task_queue: str, stores: Stores) -> None:
        self.client, self.task_queue, self.stores = client, task_queue, stores
        self.violations: list[str] = []

    def check(self, ok: bool, number: int, scenario: Scenario, what: str) -> None:
        if not ok:
            self.violations.append(f"scenario {number} {scenario}: {what}")

    async def scenario(self, number: int, scenario: Scenario) -> None:
        before = self.stores.inventory.on_hand()
        changes = {"customer__email": "bounce@example.com"} if scenario.bounce else {}
        order_number, handle = await in_kitchen(
            self.client, self.stores, self.task_queue, **changes
        )
        model: list[str] = [p.description for p in new_order().items]
        sequential = True
        cancelled = False
        pending: list[asyncio.Task[str | None]] = []
        for index, change in enumerate(scenario.changes):
            if scenario.cancel_after == index:  # racing the changes sent together, if any
                await asyncio.gather(handle.cancel(), *pending)
                pending, cancelled = [], True
            task = asyncio.ensure_future(send(handle, f"s{number}c{index}", change))
            pending.append(task)
            if change.together_with_next:
                sequential = False
                continue
            refused = (await asyncio.gather(*pending))[-1]
            pending = []
            if not cancelled and sequential:
                model = self.modelled(model, change, refused, number, scenario)
        if scenario.cancel_after == len(scenario.changes):
            await asyncio.gather(handle.cancel(), *pending)
            cancelled = True
        else:
            await asyncio.gather(*pending)
        try:
            await result_of(handle)
            completed = True
        except WorkflowFailureError:
            completed = False
        self.check(
            completed == (not cancelled and not scenario.bounce),
            number,
            scenario,
            f"completed={completed}",
        )
        taken = await self.final_pizzas(handle)
        if sequential and not cancelled:
            self.check(sorted(taken) == sorted(model), number, scenario, f"pizzas {taken}")
        money = net_money(self.stores, order_number)
        price = price_order(MENU[d] for d in taken).total
        self.check(money == (price if completed else 0), number, scenario, f"net money {money}")
        after = self.stores.inventory.on_hand()
        drop = {item: before[item] - after[item] for item in before}
        wanted = Counter(taken) if completed else Counter()
        self.check(
            drop == {item: wanted.get(item, 0) for item in before},
            number,
            scenario,
            f"stock drop {drop}",
        )
        self.check(min(after.values()) >= 0, number, scenario, f"stock {after}")

    def modelled(
        self, model: list[str], change: Change, refused: str | None, n: int, s: Scenario
    ) -> list[str]:
        """The model's pizzas after ``change``; a violation if the workflow disagreed."""
        amendment = Amendment(
            amendment_id="model", add=[pizza(d) for d in change.add], remove=list(change.remove)
        )
        try:
            repriced = reprice([pizza(d) for d in model], 1, amendment)
        except AmendmentError as err:
            self.check(refused == err.field, n, s, f"{change} refused for {refused}, not {err}")
            return model
        self.check(refused is None, n, s, f"{change} refused for {refused}")
        return [p.description for p in repriced.items] if refused is None else model

    async def final_pizzas(self, handle: OrderHandle) -> list[str]:
        """The order's pizzas after the amendments its history says it took."""
        now = await handle.query(PizzaOrderWorkflow.now)
        return [p.description for p in now.items]


async def test_random_amendments_keep_money_and_stock_exact(
    time_skipping_env: WorkflowEnvironment, stores: Stores, task_queue: str
) -> None:
    run_seed = int(os.environ.get("PIZZA_HYPOTHESIS_SEED") or random.getrandbits(32))
    drawn = draw_scenarios(run_seed)
    assert len(drawn) >= SCENARIOS // 2, f"hypothesis drew only {len(drawn)} scenarios"
    run = Run(time_skipping_env.client, task_queue, stores)
    async with build_worker(time_skipping_env.client, stores, task_queue=task_queue):
        for number, scenario in enumerate(drawn):
            try:
                await run.scenario(number, scenario)
            except Exception as err:  # a hang or an unexpected error: report what ran
                run.violations.append(f"scenario {number} {scenario}: raised {err!r}")
                break
    assert not run.violations, (
        f"{len(run.violations)} invariant violations (PIZZA_HYPOTHESIS_SEED={run_seed}):\n"
        + "\n".join(run.violations)
    )
