"""Hosting the product's long-running processes: signals, a worker until it is told to stop,
its drain, the process's log. (The embedded Temporal is in embedded.py.)

`pizza worker`, `pizza up`, the demo and the bench's worker run their workers through
`host_worker`; every command that runs until Ctrl-C or SIGTERM runs through
`run_until_signal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from temporalio.worker import Worker

from pizza_saga.common.logmask import install_card_masking

T = TypeVar("T")

PURGE_EVERY = timedelta(hours=1)
"""How often a worker process destroys expired card numbers, forgets tokens destroyed long
ago (30 days: `CardVault.purge`) and idempotency keys older than a day."""

log = logging.getLogger(__name__)


class WorkerStopped(Exception):
    """The worker ended by itself (the SDK's fatal errors: namespace gone, ...)."""


def exit_process(code: int) -> NoReturn:
    """Flush and leave with ``code``, without finalizing the interpreter.

    The Temporal SDK's native threads can crash the interpreter while it finalizes (SIGABRT
    in PyGILState_Release, or SIGSEGV; temporalio/sdk-python#300): once a command's work and
    output are done, it leaves this way.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a reader that went away (`| head`) is no error
            stream.flush()
    os._exit(code)


def log_to(path: Path) -> None:
    """Send this process's log (its worker's, its API's) to ``path``, card numbers masked.

    For the commands that keep the terminal for outcomes and links (`pizza up`, the demo).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    install_card_masking()


def run_until_signal(main: Callable[[asyncio.Event], Coroutine[Any, Any, T]]) -> T:
    """Run ``main(stop)``: SIGTERM or Ctrl-C sets ``stop`` for a graceful end; a second
    signal ends the process at once (exit 130)."""

    async def runner() -> T:
        stop = asyncio.Event()

        def on_signal() -> None:
            if stop.is_set():
                log.warning("second stop signal: exiting now")
                exit_process(130)
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        return await main(stop)

    return asyncio.run(runner())


async def host_worker(
    worker: Worker,
    stop: asyncio.Event,
    *,
    alongside: Iterable[Awaitable[Any]] = (),
    once: Iterable[Awaitable[Any]] = (),
    before_drain: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run ``worker`` until ``stop`` is set, or it or one of ``alongside`` ends; ``once``
    runs beside it too, and may end without stopping it.

    Then it polls no more and lets running activities finish (the worker's graceful
    shutdown timeout), after ``before_drain`` (say, closing an API first). Raises
    WorkerStopped if the worker ended with an error; returns when it ended cleanly.
    """
    running = asyncio.create_task(worker.run(), name="worker")
    watched = [asyncio.ensure_future(a) for a in alongside]
    beside = [asyncio.ensure_future(a) for a in once]
    stopping = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({running, stopping, *watched}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        for task in [*watched, *beside]:
            task.cancel()
    if not running.done():
        if before_drain is not None:
            await before_drain()
        await worker.shutdown()
    try:
        await running
    except Exception as err:
        raise WorkerStopped(f"the worker stopped: {err}") from err


async def repeat(job: Callable[[], None], *, every: timedelta, what: str) -> None:
    """Run ``job`` (blocking; on a thread) now and every ``every``, until cancelled.

    A failure is logged and tried again next time: the store may be away for a moment.
    """
    while True:
        try:
            await asyncio.to_thread(job)
        except Exception as err:
            log.warning("cannot %s: %s", what, err)
        await asyncio.sleep(every.total_seconds())
