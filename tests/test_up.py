"""`pizza up` as a developer runs it: one process, every URL printed, Ctrl-C stops it all."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pizza_saga.app import open_stores
from pizza_saga.common.ports import free_port
from pizza_saga.common.settings import Settings
from tests.processes import processes_mentioning
from tests.site import SEED_FORM, Stream, csrf_of

pytestmark = pytest.mark.devserver

START_SECONDS = 60.0
EXIT_SECONDS = 30.0


async def test_up_serves_pages_temporal_and_a_worker_until_ctrl_c(tmp_path: Path) -> None:
    home = tmp_path / "up-home"
    ports = {name: free_port() for name in ("port", "ui-port", "codec-port", "api-port")}
    metrics_port = free_port()
    env = {
        **os.environ,
        "PIZZA_HOME": str(home),
        "PIZZA_PREP_SECONDS": "0",
        "PIZZA_DRIVER_SECONDS": "0",
        "PIZZA_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
    }
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "pizza_saga", "up"),
        *(arg for name, port in ports.items() for arg in (f"--{name}", str(port))),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    printed = ""
    try:
        async with asyncio.timeout(START_SECONDS):
            while "Ctrl-C stops all of it." not in printed:
                line = await process.stdout.readline()
                assert line, f"pizza up ended early:\n{printed}"
                printed += line.decode()
        api = f"http://127.0.0.1:{ports['api-port']}"
        assert f"Pages and API  {api}" in printed
        assert f"Web UI http://localhost:{ports['ui-port']}" in printed
        assert f"Temporal       localhost:{ports['port']}" in printed

        async with httpx.AsyncClient(base_url=api, timeout=START_SECONDS) as http:
            # A customer: the new-order form, then the order's page and its events by the
            # link placing it lands on (the order's token in it).
            form = {**SEED_FORM, "csrf": await csrf_of(http)}
            placed = await http.post("/orders/new", data=form)
            assert placed.status_code == 303, placed.text
            link = placed.headers["location"]
            assert (await http.get(link)).status_code == 200
            page, _, token = link.partition("?")
            events = f"/api{page}/events?{token}"
            async with http.stream("GET", events) as response:
                assert response.status_code == 200
                final = (await Stream(response).rest())[-1].json()
            assert final["status"] == "COMPLETED"
            assert final["web_ui_url"].startswith(f"http://localhost:{ports['ui-port']}/")
            ui = await http.get(f"http://localhost:{ports['ui-port']}/")
            assert ui.status_code == 200
            # Metrics are on in `pizza up`: the SDK's, the saga's and the API's, on one page.
            assert f"Metrics        http://127.0.0.1:{metrics_port}/metrics" in printed
            scraped = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
            for metric in ("temporal_workflow_completed", "saga_", "http_"):
                assert metric in scraped, metric
        # An operator logs in to the pages with a key of the store `pizza up` uses.
        _, key = open_stores(Settings.from_env(env)).operators.add("developer")
        async with httpx.AsyncClient(base_url=api, timeout=START_SECONDS) as operator:
            assert (await operator.get("/")).status_code == 303  # to the login
            csrf = await csrf_of(operator, "/login")
            login = await operator.post("/login", data={"key": key, "csrf": csrf})
            assert login.status_code == 303, login.text
            assert (await operator.get("/")).status_code == 200
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), EXIT_SECONDS)
        rest = await process.stdout.read()
        printed += rest.decode()

    assert code == 0, printed
    assert "Traceback" not in printed
    assert printed.rstrip().endswith("Stopped.")
    assert processes_mentioning(str(home)) == []
    for port in ports.values():
        with socket.socket() as sock:
            assert sock.connect_ex(("localhost", port)) != 0, f"port {port} still listens"


async def test_up_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await asyncio.to_thread(
            subprocess.run,
            [
                *(sys.executable, "-m", "pizza_saga", "up", "--api-port", str(port)),
                *("--port", str(free_port()), "--ui-port", str(free_port())),
                *("--codec-port", str(free_port())),
            ],
            env={**os.environ, "PIZZA_HOME": str(tmp_path / "home")},
            capture_output=True,
            text=True,
            timeout=EXIT_SECONDS,
            stdin=subprocess.DEVNULL,
        )

    assert done.returncode == 3
    assert done.stderr.strip() == (
        f"error: --api-port {port} is already in use by another process; "
        "stop it or choose another port"
    )
