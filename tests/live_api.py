"""A live deployment for the HTTP API's tests: a private Temporal dev server, a real
`pizza worker` and real `pizza api` processes, each on its own PIZZA_TASK_QUEUE and ports.

Waiting for a state polls it with a deadline; nothing sleeps a guessed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pizza_saga.app import SEARCH_ATTRIBUTES, Stores, open_stores
from pizza_saga.common.devserver import DevServerConfig, free_port, running_dev_server
from pizza_saga.common.settings import Settings

WAIT_SECONDS = 60.0
"""How long a poll waits for a state before the test fails."""
POLL_SECONDS = 0.05
EXIT_SECONDS = 30.0


async def until(what: str, check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Poll ``check`` until it holds; fail, saying what was awaited, at the deadline."""
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                result = check()
                if await result if inspect.isawaitable(result) else result:
                    return
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        raise AssertionError(f"gave up after {WAIT_SECONDS}s waiting for {what}") from None


@dataclass
class Api:
    """A running `pizza api` process and where it listens."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Deployment:
    """The dev server's address, the environment every process shares, the processes."""

    home: Path
    env: dict[str, str]
    ui_url: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    @property
    def stores(self) -> Stores:
        """The stores the worker writes, read in-process."""
        return open_stores(self.settings)

    def spawn(self, name: str, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
        """Start `pizza ARGS` with this deployment's environment, its output in a log."""
        log = self.home / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "pizza_saga", *args],
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.processes.append(process)
        return process, log

    async def api(self, name: str, **env: str) -> Api:
        """A `pizza api` process on a free loopback port, once it answers /healthz."""
        port = free_port()
        process, log = self.spawn(name, "api", "--host", "127.0.0.1", "--port", str(port), **env)
        url = f"http://127.0.0.1:{port}"

        async def answers() -> bool:
            assert process.poll() is None, f"{name} exited:\n{log.read_text(errors='replace')}"
            try:
                async with httpx.AsyncClient(base_url=url) as client:
                    return (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await until(f"{name} to answer on {url}", answers)
        return Api(url=url, process=process, log=log)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=EXIT_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def logs(self) -> str:
        """Everything every process of the deployment logged."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.home.glob("*.log")))


@contextlib.asynccontextmanager
async def deployment(home: Path, **env: str) -> AsyncIterator[Deployment]:
    """A private dev server and the environment of this deployment's processes."""
    config = DevServerConfig.private(home / "temporal.db", SEARCH_ATTRIBUTES)
    shared = {
        **os.environ,
        "PIZZA_HOME": str(home / "pizza-home"),
        "TEMPORAL_ADDRESS": config.address,
        "TEMPORAL_NAMESPACE": "default",
        "PIZZA_TASK_QUEUE": f"api-{uuid.uuid4().hex}",
        "PIZZA_PREP_SECONDS": "0",
        "PIZZA_DRIVER_SECONDS": "0",
        "PIZZA_UI_URL": config.ui_url,
        **env,
    }
    async with running_dev_server(config, home / "server.log"):
        live = Deployment(home=home, env=shared, ui_url=config.ui_url)
        try:
            yield live
        finally:
            live.stop()


async def ready(api: Api) -> None:
    """Wait until ``api`` says it is ready (its worker polls the task queue)."""

    async def is_ready() -> bool:
        async with httpx.AsyncClient(base_url=api.url) as client:
            return (await client.get("/readyz")).status_code == 200

    await until(f"{api.url}/readyz to answer 200", is_ready)
