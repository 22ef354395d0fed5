"""The codec server: lets the Temporal Web UI (and CLI) show decrypted payloads.

POST /encode and /decode take and return ``{"payloads": [...]}`` in protobuf JSON, as the
Web UI sends them. The Web UI calls it from the browser, so it answers CORS preflights for
the UI's origin. Bind it to localhost: whoever can reach it can read the payloads.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from pizza_saga.common.logmask import mask_card_numbers

MAX_REQUEST_BYTES = 4 * 1024 * 1024

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]


def build_app(codec: PayloadCodec, allowed_origins: Sequence[str]) -> web.Application:
    """The aiohttp application: /encode, /decode, CORS for ``allowed_origins``."""
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[_cors(allowed_origins)])
    app.router.add_post("/encode", _handler(codec.encode))
    app.router.add_post("/decode", _handler(_masking(codec.decode)))
    app.router.add_route("OPTIONS", "/{tail:.*}", _preflight)
    return app


@contextlib.asynccontextmanager
async def serving(
    codec: PayloadCodec, port: int, allowed_origins: Sequence[str], host: str = "localhost"
) -> AsyncIterator[str]:
    """Serve the codec on ``host:port`` for the duration of the block; yields its URL."""
    runner = web.AppRunner(build_app(codec, allowed_origins), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def ui_origins(ui_port: int) -> list[str]:
    """The origins a local Temporal Web UI on ``ui_port`` calls the codec server from."""
    return [f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}"]


def _handler(transform: Transform) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return _error(415, "send Content-Type: application/json")
        try:
            payloads = json_format.Parse(await request.text(), Payloads())
        except (json_format.ParseError, UnicodeDecodeError) as err:
            return _error(400, f'body is not {{"payloads": [...]}} in protobuf JSON: {err}')
        try:
            result = await transform(payloads.payloads)
        except ValueError as err:  # a wrong or unknown key, a tampered payload
            return _error(400, str(err))
        body = json_format.MessageToJson(Payloads(payloads=result))
        return web.Response(text=body, content_type="application/json")

    return handle


def _masking(decode: Transform) -> Transform:
    """Decoded payloads with any card-number-like digits masked (424242******4242).

    The product never puts a card number in a payload (the vault's tokens stand for them),
    but another client may have: what a person sees through the Web UI never shows it whole.
    """

    async def masked(payloads: Sequence[Payload]) -> list[Payload]:
        shown = []
        for payload in await decode(payloads):
            text = payload.data.decode("utf-8", errors="surrogateescape")
            hidden = mask_card_numbers(text)
            if hidden != text:
                payload = Payload(
                    metadata=payload.metadata,
                    data=hidden.encode("utf-8", errors="surrogateescape"),
                )
            shown.append(payload)
        return shown

    return masked


async def _preflight(_request: web.Request) -> web.Response:
    return web.Response(status=204)


def _cors(allowed_origins: Sequence[str]) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def cors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        response = await handler(request)
        origin = request.headers.get("Origin")
        if origin is not None and origin in allowed_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "content-type, x-namespace, authorization"
            )
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        return response

    return cors


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps({"error": message}), content_type="application/json"
    )
