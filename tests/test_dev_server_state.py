"""One dev server per state file: `pizza up`, `server` and `demo` refuse a PIZZA_HOME whose
temporal.db another dev server of ours runs on, instead of writing to it as a second server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pizza_saga.app import SEARCH_ATTRIBUTES
from pizza_saga.common.devserver import (
    DevServerConfig,
    StateInUse,
    ensure_free,
    running_dev_server,
)
from pizza_saga.common.ports import free_port
from tests.processes import run_pizza

pytestmark = pytest.mark.devserver


@pytest.mark.parametrize("command", ["up", "server", "demo"])
async def test_a_second_dev_server_on_the_same_state_is_refused_in_one_line(
    tmp_path: Path, command: str
) -> None:
    home = tmp_path / "home"
    running = DevServerConfig.private(home / "temporal.db", SEARCH_ATTRIBUTES)
    ports = {"--port": free_port(), "--ui-port": free_port(), "--codec-port": free_port()}
    if command == "up":
        ports["--api-port"] = free_port()
    args = [item for option, port in ports.items() for item in (option, str(port))]

    async with running_dev_server(running, tmp_path / "first.log"):
        done = run_pizza(home, command, *args, TEMPORAL_ADDRESS="")

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"{home / 'temporal.db'} is in use by another Temporal dev server" in lines[0]
    ensure_free(ports)  # nothing of the refused command is left listening


async def test_the_state_is_free_again_once_its_server_stopped(tmp_path: Path) -> None:
    config = DevServerConfig.private(tmp_path / "temporal.db")
    async with running_dev_server(config, tmp_path / "first.log"):
        second = DevServerConfig.private(tmp_path / "temporal.db")
        with pytest.raises(StateInUse):
            async with running_dev_server(second, tmp_path / "second.log"):
                pass
    again = DevServerConfig.private(tmp_path / "temporal.db")
    async with running_dev_server(again, tmp_path / "again.log") as server:
        assert server.process.returncode is None
