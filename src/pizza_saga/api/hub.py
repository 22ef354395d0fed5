"""One watcher per followed thing, shared by every subscriber: the event streams' fan-out.

A browser tab that follows order 42 subscribes to the hub under key "42". The first
subscriber starts one task that runs the source (`OrderService.watch("42")`); every later
subscriber shares it and starts from its latest snapshot. The task stops when its source
ends (the order finished) or when the last subscriber leaves, so ten tabs on one order cost
Temporal what one tab costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

BACKLOG = 64
"""Snapshots kept for a subscriber that reads slowly; older ones are dropped (each snapshot
is a whole state, so a late reader still ends on the latest)."""

log = logging.getLogger(__name__)


class _Ended:
    """Marker: the source has no more snapshots."""


ENDED = _Ended()


class HubClosed(Exception):
    """The hub was closed (the server is stopping): no more snapshots."""


class Subscription(Generic[T]):
    """One subscriber's queue of snapshots from a shared watcher."""

    def __init__(self, release: Callable[[Subscription[T]], None]) -> None:
        self._release = release
        self._items: deque[T] = deque(maxlen=BACKLOG)
        self._end: _Ended | BaseException | None = None
        self._wake = asyncio.Event()
        self._closed = False

    def push(self, item: T) -> None:
        """A new snapshot from the watcher."""
        self._items.append(item)
        self._wake.set()

    def finish(self, end: _Ended | BaseException) -> None:
        """The watcher has stopped: normally (ENDED) or with an error."""
        if self._end is None:
            self._end = end
        self._wake.set()

    async def next(self) -> T | None:
        """The next snapshot; None once the source has ended. Raises the source's error."""
        while not self._items:
            if isinstance(self._end, BaseException):
                raise self._end
            if self._end is not None:
                return None
            await self._wake.wait()
            self._wake.clear()
        return self._items.popleft()

    def close(self) -> None:
        """Leave; the watcher stops if this was its last subscriber. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._release(self)


@dataclass
class _Feed(Generic[T]):
    """A watcher task and its subscribers."""

    subscribers: set[Subscription[T]] = field(default_factory=set)
    latest: T | None = None
    task: asyncio.Task[None] | None = None


class Hub(Generic[K, T]):
    """Runs ``source(key)`` once per key that has subscribers and fans its items out."""

    def __init__(self, source: Callable[[K], AsyncIterator[T]]) -> None:
        self._source = source
        self._feeds: dict[K, _Feed[T]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    @property
    def watchers(self) -> int:
        """How many watcher tasks run now (one per key followed)."""
        return len(self._feeds)

    def subscribers(self, key: K) -> int:
        """How many subscribers share the watcher of ``key``."""
        feed = self._feeds.get(key)
        return len(feed.subscribers) if feed else 0

    async def idle(self) -> None:
        """Return once no watcher runs."""
        await self._idle.wait()

    def subscribe(self, key: K) -> Subscription[T]:
        """Follow ``key``: the latest snapshot first (if the watcher has one), then each new
        one. Close the subscription when done with it."""
        feed = self._feeds.get(key)
        if feed is None or self._closed:
            feed = _Feed()
            if not self._closed:
                self._feeds[key] = feed
                self._idle.clear()
                feed.task = asyncio.create_task(self._watch(key, feed), name=f"watch {key}")
        subscription: Subscription[T] = Subscription(lambda s: self._leave(key, feed, s))
        if self._closed:
            subscription.finish(HubClosed("the server is stopping"))
            return subscription
        feed.subscribers.add(subscription)
        if feed.latest is not None:
            subscription.push(feed.latest)
        return subscription

    async def close(self) -> None:
        """Stop every watcher and end every subscription (the server is stopping)."""
        self._closed = True
        feeds = list(self._feeds.values())
        self._feeds.clear()
        for feed in feeds:
            for subscription in feed.subscribers:
                subscription.finish(HubClosed("the server is stopping"))
            if feed.task is not None:
                feed.task.cancel()
        for feed in feeds:
            if feed.task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await feed.task
        self._idle.set()

    async def _watch(self, key: K, feed: _Feed[T]) -> None:
        end: _Ended | BaseException = ENDED
        try:
            async for item in self._source(key):
                feed.latest = item
                for subscription in feed.subscribers:
                    subscription.push(item)
        except asyncio.CancelledError:
            raise
        except Exception as err:  # handed to each subscriber, which reports it
            log.info("watcher of %s stopped: %s", key, err)
            end = err
        finally:
            self._forget(key, feed)
        for subscription in feed.subscribers:
            subscription.finish(end)

    def _leave(self, key: K, feed: _Feed[T], subscription: Subscription[T]) -> None:
        feed.subscribers.discard(subscription)
        if not feed.subscribers and feed.task is not None and not feed.task.done():
            feed.task.cancel()
            self._forget(key, feed)

    def _forget(self, key: K, feed: _Feed[T]) -> None:
        if self._feeds.get(key) is feed:
            del self._feeds[key]
        if not self._feeds:
            self._idle.set()
