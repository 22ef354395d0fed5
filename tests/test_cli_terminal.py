"""`pizza order` on a terminal, as a user at a shell meets it: what it says while it waits,
and what Ctrl-C leaves them with.

The command runs on a pseudo-terminal (its stdout and stderr are a tty, as at a shell)
against a private dev server and a `pizza worker` (tests/processes.py) serving the module.
Ctrl-C is the SIGINT a terminal sends, sent to the command while it waits.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.processes import Deployment, deployment, pizza_command

pytestmark = pytest.mark.devserver

SAY_SECONDS = 60.0
"""How long the command may take to say something before the test fails."""
COLUMNS = 200
"""The pseudo-terminal's width: wide enough that no line the test reads is wrapped."""
PREP_SECONDS = "300"
"""The order's preparation wait: it is still running whenever the test presses Ctrl-C."""
HINT_SECONDS = 3.0
"""After about this long `pizza order` says that no worker has picked the order up."""

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class Terminal:
    """A `pizza` command whose stdin, stdout and stderr are one pseudo-terminal."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, COLUMNS, 0, 0))
        try:
            self.process = subprocess.Popen(
                command, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self._master = master
        self._raw = b""
        self._ended = False

    @property
    def screen(self) -> str:
        """Everything the command wrote, as text, without colours and other escapes."""
        return _ESCAPES.sub("", self._raw.decode(errors="replace")).replace("\r\n", "\n")

    def expect(self, text: str, timeout: float = SAY_SECONDS) -> int:
        """Where ``text`` first appears on the screen, once the command has written it."""
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"gave up after {timeout}s waiting for {text!r}:\n{self.screen}"
                )
            if not self._read(left):
                raise AssertionError(f"the command ended without saying {text!r}:\n{self.screen}")
        return self.screen.index(text)

    def interrupt(self) -> None:
        """Ctrl-C, as the terminal sends it: SIGINT."""
        self.process.send_signal(signal.SIGINT)

    def finish(self, timeout: float = SAY_SECONDS) -> int:
        """The command's exit status, once it has ended and all it wrote is read."""
        deadline = time.monotonic() + timeout
        while self._read(max(0.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout}s:\n{self.screen}")
        return self.process.wait(timeout=max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self._master)

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False once the command's end is read."""
        if self._ended:
            return False
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # EIO: the command, and every copy of the terminal it had, is gone
            chunk = b""
        self._raw += chunk
        self._ended = not chunk
        return not self._ended


@pytest.fixture(scope="module")
async def shop(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Deployment]:
    """A private dev server and a `pizza worker` polling the module's task queue."""
    async with deployment(tmp_path_factory.mktemp("terminal"), queue="terminal") as live:
        await live.worker()
        yield live


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    """Commands a test starts on a terminal; any still running afterwards is killed."""
    started: list[Terminal] = []
    yield started
    for terminal in started:
        terminal.close()


def _on_terminal(terminals: list[Terminal], shop: Deployment, *args: str, **env: str) -> Terminal:
    terminal = Terminal(pizza_command(*args), {**shop.env, **env})
    terminals.append(terminal)
    return terminal


def _new_number() -> str:
    return f"TTY{uuid.uuid4().hex[:8].upper()}"


def _words(text: str) -> str:
    """Text as a reader sees it, whatever the terminal wrapped."""
    return " ".join(text.split())


def _status(shop: Deployment, number: str, **env: str) -> str:
    done = shop.run("status", number, "--json", **env)
    assert done.returncode == 0, done.stderr
    status: str = json.loads(done.stdout)["status"]
    return status


async def test_ctrl_c_while_an_order_waits_leaves_the_user_its_number_and_what_to_do(
    shop: Deployment, terminals: list[Terminal]
) -> None:
    number = _new_number()
    order = _on_terminal(
        terminals, shop, "order", "--order-number", number, PIZZA_PREP_SECONDS=PREP_SECONDS
    )

    placed = await asyncio.to_thread(order.expect, f"Order {number} placed: ")
    link = f"{shop.ui_url}/namespaces/default/workflows/pizza-workflow-order-{number}/"
    await asyncio.to_thread(order.expect, link)
    await asyncio.sleep(HINT_SECONDS + 1)  # past the no-worker hint: a worker has this order
    order.interrupt()
    code = await asyncio.to_thread(order.finish)

    screen = order.screen
    assert code == 130, screen
    assert "Traceback" not in screen, screen
    assert "No worker has picked up" not in screen, screen
    after = _words(screen[placed:])
    stopped = after.index(f"Stopped waiting; order {number} goes on")
    assert f"follow it with `pizza status {number}`" in after[stopped:], screen
    assert f"`pizza cancel {number}`" in after[stopped:], screen
    assert _status(shop, number) == "RUNNING", "the order goes on without the command"
    cancelled = shop.run("cancel", number, "--json")
    assert json.loads(cancelled.stdout)["status"] == "CANCELLED", cancelled.stderr


async def test_an_order_no_worker_picks_up_says_so_once_while_it_waits(
    shop: Deployment, terminals: list[Terminal]
) -> None:
    # A worker of its own task queue polls, then dies: Temporal still counts it as polling
    # for a while, so the order is placed, and nobody picks it up.
    queue = {"PIZZA_TASK_QUEUE": f"gone-{uuid.uuid4().hex}"}
    worker = await shop.worker("gone-worker", **queue)
    worker.kill()
    await asyncio.to_thread(worker.wait)
    number = _new_number()
    order = _on_terminal(terminals, shop, "order", "--order-number", number, **queue)

    placed = await asyncio.to_thread(order.expect, f"Order {number} placed: ")
    hint = await asyncio.to_thread(order.expect, f"No worker has picked up order {number} yet")
    await asyncio.sleep(1)
    order.interrupt()
    code = await asyncio.to_thread(order.finish)

    screen = order.screen
    assert code == 130, screen
    assert "Traceback" not in screen, screen
    assert placed < hint, screen
    assert f"is `pizza worker` running (on task queue {queue['PIZZA_TASK_QUEUE']})" in _words(
        screen[hint:]
    ), screen
    assert screen.count("No worker has picked up") == 1, screen
    assert f"follow it with `pizza status {number}`" in _words(screen[hint:]), screen
    assert _status(shop, number, **queue) == "RUNNING"
