"""The hub behind the event streams: one run of a source per key, shared by its subscribers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from pizza_saga.api.hub import Hub, HubClosed, Subscription


class Source:
    """A source a test feeds by hand: its items, how often it was started and stopped."""

    def __init__(self) -> None:
        self.items: asyncio.Queue[int | Exception | None] = asyncio.Queue()
        self.started: list[str] = []
        self.stopped: list[str] = []
        self.any_stopped = asyncio.Event()

    async def __call__(self, key: str) -> AsyncIterator[int]:
        self.started.append(key)
        try:
            while (item := await self.items.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.stopped.append(key)
            self.any_stopped.set()


async def next_of(subscription: Subscription[int]) -> int | None:
    """The subscription's next item; a hub that never delivers fails the test."""
    return await asyncio.wait_for(subscription.next(), 5)


async def test_subscribers_of_a_key_share_one_run_and_a_late_one_starts_from_the_latest() -> None:
    source = Source()
    hub: Hub[str, int] = Hub(source)
    first = hub.subscribe("42")
    second = hub.subscribe("42")
    source.items.put_nowait(1)

    assert await next_of(first) == 1
    assert await next_of(second) == 1
    late = hub.subscribe("42")
    assert await next_of(late) == 1
    source.items.put_nowait(2)
    source.items.put_nowait(None)
    assert [await next_of(s) for s in (first, second, late)] == [2, 2, 2]
    assert [await next_of(s) for s in (first, second, late)] == [None, None, None]
    assert source.started == ["42"]
    assert hub.watchers == 0


async def test_the_run_stops_when_its_last_subscriber_leaves() -> None:
    source = Source()
    hub: Hub[str, int] = Hub(source)
    first, second = hub.subscribe("7"), hub.subscribe("7")
    source.items.put_nowait(1)
    assert await next_of(first) == 1

    first.close()
    assert hub.watchers == 1
    assert hub.subscribers("7") == 1
    second.close()
    second.close()  # twice is harmless

    assert hub.watchers == 0
    await asyncio.wait_for(hub.idle(), 5)
    await asyncio.wait_for(source.any_stopped.wait(), 5)
    assert source.stopped == ["7"]


async def test_an_error_of_the_source_reaches_every_subscriber() -> None:
    source = Source()
    hub: Hub[str, int] = Hub(source)
    first, second = hub.subscribe("9"), hub.subscribe("9")
    source.items.put_nowait(LookupError("no such order"))

    for subscription in (first, second):
        with pytest.raises(LookupError, match="no such order"):
            await next_of(subscription)
    assert hub.watchers == 0


async def test_closing_the_hub_ends_every_subscription() -> None:
    source = Source()
    hub: Hub[str, int] = Hub(source)
    subscriptions = [hub.subscribe("1"), hub.subscribe("2")]

    await hub.close()

    for subscription in [*subscriptions, hub.subscribe("3")]:
        with pytest.raises(HubClosed):
            await next_of(subscription)
    assert hub.watchers == 0
