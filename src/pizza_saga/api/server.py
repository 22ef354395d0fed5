"""The API and pages served by uvicorn inside a process's own event loop.

For processes that run more than the API (`pizza up`, the demo, the tests): start it, keep
doing other things, stop it. Signals stay with the process (uvicorn's own handlers are not
installed), and stopping ends the event streams first, so open browser tabs do not hold the
server up.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from pizza_saga.api import events

GRACEFUL_SECONDS = 5
"""How long requests still running when the server stops may take to finish."""


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free port); OSError if it cannot be."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class ApiServer:
    """``app`` served on ``host:port`` while the ``async with`` block runs."""

    def __init__(
        self,
        app: FastAPI,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        """``trusted_proxies``: addresses whose X-Forwarded-For/-Proto are believed (the
        client's address is then the one they name); none by default, so that a caller
        cannot name another address (to dodge the rate limits, or in the audit trail)."""
        self.app, self.host, self.port = app, host, port
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_level="warning",
                lifespan="off",
                timeout_graceful_shutdown=GRACEFUL_SECONDS,
                proxy_headers=bool(trusted_proxies),
                forwarded_allow_ips=list(trusted_proxies) or None,
            )
        )
        self._socket: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """Where the app is served (the actual port, once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def start(self) -> None:
        """Start serving; OSError if it cannot listen (port taken, address unknown)."""
        self._socket = _listen(self.host, self.port)
        self.port = int(self._socket.getsockname()[1])
        config = self._server.config
        if not config.loaded:
            config.load()
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup(sockets=[self._socket])
        self._task = asyncio.create_task(self._server.main_loop(), name="api server")

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """End every event stream, then stop serving and wait until it has."""
        if self._task is None:
            return
        await events.close(self.app)
        self._server.should_exit = True
        await self._task
        self._task = None
        if self._socket is not None:
            await self._server.shutdown(sockets=[self._socket])
            self._socket.close()
