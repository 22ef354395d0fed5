"""The tests' one harness for real processes: a private dev server, `pizza` processes, waits.

`deployment(home)` runs a private Temporal dev server and yields a `Deployment`: where that
Temporal listens and the environment every process of it shares (`pizza_env`: PIZZA_HOME,
TEMPORAL_ADDRESS, a task queue of its own, the simulated waits at zero), its stores, and
the processes it started. `spawn` starts `pizza ...` as a `Process` (its output in NAME.log
in the log directory), `run` runs a command to its end, `worker`/`api` start one and wait
until it serves. At the end (or leaving `with deployment_object:`) each process is stopped:
SIGTERM, then SIGKILL past a deadline. A Deployment whose Temporal something else runs is
built directly, with `pizza_env` (tests/test_cli.py's `Pizza`: a `pizza server`).

Waiting for a state polls it with a deadline (`until`); nothing sleeps a guessed time. A
process the wait watches that exits fails it at once, and the message shows its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
from temporalio.client import Client

from pizza_saga.app import SEARCH_ATTRIBUTES, Stores, build_service, open_stores
from pizza_saga.common.devserver import DevServerConfig, running_dev_server
from pizza_saga.common.ports import free_port
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import connect

WAIT_SECONDS = 60.0
"""How long a poll waits for a state before the test fails."""
POLL_SECONDS = 0.05
EXIT_SECONDS = 30.0
"""How long a process may take to exit once it is told to (then it is killed)."""
COMMAND_SECONDS = 90.0
"""How long a `pizza` command run to its end may take."""
LOG_TAIL = 4000
"""How much of a process's log (its end) a failure message shows."""
ZERO_WAITS = {"PIZZA_PREP_SECONDS": "0", "PIZZA_DRIVER_SECONDS": "0"}
"""The kitchen's and the driver's simulated waits, off: orders finish as fast as they can."""


def pizza_command(*args: str, module: str = "pizza_saga") -> list[str]:
    """`pizza ARGS` as a command line (``module``: another entry point, e.g. tests.faults)."""
    return [sys.executable, "-m", module, *args]


def pizza_env(home: Path, address: str, ui_url: str, task_queue: str, **env: str) -> dict[str, str]:
    """This process's environment with a deployment's on top, then ``env``."""
    return {
        **os.environ,
        "PIZZA_HOME": str(home),
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_NAMESPACE": "default",
        "PIZZA_TASK_QUEUE": task_queue,
        "PIZZA_UI_URL": ui_url,
        **ZERO_WAITS,
        **env,
    }


def run_pizza(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `pizza ARGS` to its end with PIZZA_HOME ``home`` and ``env`` on top of this
    process's environment (an empty value removes a variable); stdout and stderr as text."""
    merged = {**os.environ, "PIZZA_HOME": str(home), **env}
    return subprocess.run(
        pizza_command(*args),
        env={k: v for k, v in merged.items() if v != ""},
        capture_output=True,
        text=True,
        timeout=COMMAND_SECONDS,
        stdin=subprocess.DEVNULL,
    )


def new_task_queue(prefix: str) -> str:
    """A task queue no other deployment's worker polls."""
    return f"{prefix}-{uuid.uuid4().hex}"


class Process(subprocess.Popen[bytes]):
    """A started program, its stdout and stderr in its log file (stdout apart, if given)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: Mapping[str, str],
        log: Path,
        stdout: Path | None = None,
    ) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as files:
            err = files.enter_context(log.open("ab"))
            out = files.enter_context(stdout.open("ab")) if stdout else err
            super().__init__(
                command,
                env=dict(env),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        self.name, self.log = name, log

    def output(self) -> str:
        """Everything it has logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def describe(self) -> str:
        """Its name, whether it runs, and the end of its log: for a failure message."""
        state = "running" if self.poll() is None else f"exited with {self.returncode}"
        return f"--- {self.name} ({state}), {self.log}:\n{self.output()[-LOG_TAIL:]}"

    def assert_running(self) -> None:
        assert self.poll() is None, f"{self.name} exited early\n{self.describe()}"

    def stop(self, within: float = EXIT_SECONDS) -> int:
        """SIGTERM it and wait; SIGKILL it if it is still there after ``within`` seconds."""
        if self.poll() is None:
            self.terminate()
            try:
                return self.wait(within)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.wait()


async def until(
    what: str,
    check: Callable[[], bool | Awaitable[bool]],
    *,
    watching: Iterable[Process] = (),
    within: float = WAIT_SECONDS,
) -> None:
    """Poll ``check`` until it holds; fail, saying what was awaited, at the deadline.

    Each of ``watching`` must keep running meanwhile: one that exits fails the wait at
    once, and the message shows their logs.
    """
    watched = list(watching)
    try:
        async with asyncio.timeout(within):
            while True:
                for process in watched:
                    process.assert_running()
                result = check()
                if await result if inspect.isawaitable(result) else result:
                    return
                await asyncio.sleep(POLL_SECONDS)
    except TimeoutError:
        logs = "".join(f"\n{process.describe()}" for process in watched)
        raise AssertionError(f"gave up after {within}s waiting for {what}{logs}") from None


@dataclass
class Api:
    """A running `pizza api` process and where it listens."""

    url: str
    process: Process

    async def ready(self) -> None:
        """Wait until it says it is ready (its worker polls the task queue)."""

        async def is_ready() -> bool:
            async with httpx.AsyncClient(base_url=self.url) as client:
                return (await client.get("/readyz")).status_code == 200

        await until(f"{self.url}/readyz to answer 200", is_ready, watching=[self.process])


@dataclass
class Deployment:
    """Where a Temporal listens, the environment its processes share, the processes started.

    As a context manager (and at the end of `deployment`), it stops its processes.
    """

    address: str
    ui_url: str
    env: dict[str, str]
    log_dir: Path
    """Where each process's NAME.log goes."""
    processes: list[Process] = field(default_factory=list)

    @property
    def home(self) -> Path:
        """Its PIZZA_HOME."""
        return Path(self.env["PIZZA_HOME"])

    @property
    def task_queue(self) -> str:
        return self.env["PIZZA_TASK_QUEUE"]

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    @property
    def stores(self) -> Stores:
        """The stores its processes write, read in-process (quicker than a subprocess)."""
        return open_stores(self.settings)

    def operator_key(self, name: str = "test-operator") -> str:
        """An operator API key in its store (a new one each call), for the API's operator
        routes: ``Authorization: Bearer <key>``."""
        _, key = self.stores.operators.add(name)
        return key

    def share(self, log_dir: Path, **env: str) -> Deployment:
        """More processes on the same Temporal: their own logs and list, ``env`` on top."""
        return Deployment(self.address, self.ui_url, {**self.env, **env}, log_dir)

    def spawn(
        self,
        name: str | Path,
        *args: str,
        module: str = "pizza_saga",
        stdout: str | None = None,
        **env: str,
    ) -> Process:
        """Start `pizza ARGS` (``env`` on top of the deployment's), its output in NAME.log.

        ``name`` a path: the log is that file instead. ``stdout``: a file name, in the log
        directory, for stdout apart; the log is then stderr alone (where `pizza` logs).
        """
        log = name if isinstance(name, Path) else self.log_dir / f"{name}.log"
        out = self.log_dir / stdout if stdout else None
        command = pizza_command(*args, module=module)
        process = Process(log.stem, command, {**self.env, **env}, log, out)
        self.processes.append(process)
        return process

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run `pizza ARGS` to its end; its stdout and stderr as text."""
        return subprocess.run(
            pizza_command(*args),
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=COMMAND_SECONDS,
            stdin=subprocess.DEVNULL,
        )

    async def temporal_answers(self, *, watching: Iterable[Process] = ()) -> None:
        """Wait until a client can connect to its Temporal (started by ``watching``)."""

        async def connects() -> bool:
            try:
                await Client.connect(self.address)
            except RuntimeError:
                return False
            return True

        await until(f"Temporal to answer on {self.address}", connects, watching=watching)

    async def worker_polls(self, *, watching: Iterable[Process] = (), **env: str) -> None:
        """Wait until a worker polls the task queue (of ``env``, if it names another)."""
        settings = Settings.from_env({**self.env, **env})
        client = await connect(settings, self.address)
        service = build_service(client, open_stores(settings), settings)
        await until(
            f"a worker to poll task queue {settings.task_queue}",
            service.worker_polling,
            watching=watching,
        )

    async def worker(self, name: str = "worker", **env: str) -> Process:
        """A `pizza worker` process, once it polls its task queue."""
        process = self.spawn(name, "worker", **env)
        await self.worker_polls(watching=[process], **env)
        return process

    async def api(self, name: str, **env: str) -> Api:
        """A `pizza api` process on a free loopback port, once it answers /healthz."""
        port = free_port()
        process = self.spawn(name, "api", "--host", "127.0.0.1", "--port", str(port), **env)
        url = f"http://127.0.0.1:{port}"

        async def answers() -> bool:
            try:
                async with httpx.AsyncClient(base_url=url) as client:
                    return (await client.get("/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await until(f"{name} to answer on {url}", answers, watching=[process])
        return Api(url=url, process=process)

    def stop(self) -> None:
        """Stop every process it started, the last started first."""
        for process in reversed(self.processes):
            process.stop()

    def logs(self) -> str:
        """Everything every process of the deployment logged (its log directory's *.log)."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@contextlib.asynccontextmanager
async def deployment(
    home: Path, *, pizza_home: Path | None = None, queue: str = "test", **env: str
) -> AsyncIterator[Deployment]:
    """A private dev server (its state and server.log in ``home``) and a deployment on it.

    The processes' logs go to ``home`` too; PIZZA_HOME is ``pizza_home``, or ``home``. What
    the deployment started is stopped before the server.
    """
    config = DevServerConfig.private(home / "temporal.db", SEARCH_ATTRIBUTES)
    task_queue = new_task_queue(queue)
    shared = pizza_env(pizza_home or home, config.address, config.ui_url, task_queue, **env)
    live = Deployment(config.address, config.ui_url, shared, log_dir=home)
    async with running_dev_server(config, home / "server.log"):
        try:
            yield live
        finally:
            await asyncio.to_thread(live.stop)


def processes_mentioning(text: str) -> list[str]:
    """The command lines of this machine's processes that contain ``text`` (a PIZZA_HOME)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found
