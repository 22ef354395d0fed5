"""The codec server: lets the Temporal Web UI (and CLI) show decrypted payloads, to its owner.

POST /encode and /decode take and return ``{"payloads": [...]}`` in protobuf JSON, as the
Web UI sends them. They answer only callers with a credential (see common/codec_auth.py):
``Authorization: Bearer <token>`` from the CLI and scripts, or the session cookie a browser
gets from ``GET /login?token=...``, which the Web UI sends once its Codec Server setting
"Include cross-origin credentials" is on. Before any of that, a request must name the server
as it listens (``Host: localhost:<port>``, so a DNS-rebound name gets nothing) and come from
no browser page or from an allowed Web UI origin. Refusals decrypt nothing. Every request
is logged in one line, without payloads, query strings or credentials.
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import shlex
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from pizza_saga.common.codec_auth import CodecToken, Credentials
from pizza_saga.common.logmask import mask_card_numbers
from pizza_saga.common.private_file import write_private

MAX_REQUEST_BYTES = 4 * 1024 * 1024
SESSION_COOKIE = "pizza_codec_session"
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
"""The names a codec server on this machine answers as (with its port)."""
SHOWN_CHARS = 120
"""Characters of a client-chosen header or path quoted in a log line."""
REFUSAL = web.RequestKey("refusal", str)
"""Why the request was refused, for its log line."""

log = logging.getLogger("pizza_saga.codec_server")

Transform = Callable[[Sequence[Payload]], Awaitable[list[Payload]]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(
    codec: PayloadCodec,
    allowed_origins: Sequence[str],
    *,
    token: str,
    port: int,
    names: Sequence[str] = LOCAL_NAMES,
) -> web.Application:
    """/encode, /decode and /login for callers with ``token``, from ``allowed_origins``,
    that reach the server as one of ``names`` on ``port``."""
    credentials = Credentials(token)
    hosts = {f"{name}:{port}" for name in names} | (set(names) if port == 80 else set())
    app = web.Application(
        client_max_size=MAX_REQUEST_BYTES,
        middlewares=[_logged, _guard(frozenset(allowed_origins), frozenset(hosts), credentials)],
    )
    app.router.add_post("/encode", _handler(codec.encode))
    app.router.add_post("/decode", _handler(_masking(codec.decode)))
    app.router.add_get("/login", _login(credentials, allowed_origins))
    return app


@contextlib.asynccontextmanager
async def serving(
    codec: PayloadCodec,
    port: int,
    allowed_origins: Sequence[str],
    *,
    token: str,
    host: str = "localhost",
) -> AsyncIterator[str]:
    """Serve the codec on ``host:port`` for the duration of the block; yields its URL."""
    app = build_app(codec, allowed_origins, token=token, port=port)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def ui_origins(ui_port: int) -> list[str]:
    """The origins a local Temporal Web UI on ``ui_port`` calls the codec server from."""
    return [f"http://localhost:{ui_port}", f"http://127.0.0.1:{ui_port}"]


def login_url(endpoint: str, token: str) -> str:
    """The URL that logs a browser in to the codec server at ``endpoint``."""
    return f"{endpoint}/login?token={token}"


def save_login_url(path: Path, endpoint: str, token: CodecToken) -> Path:
    """Keep the login URL of the codec server at ``endpoint`` in ``path`` (mode 0600): it
    holds the token, so it is never printed, only the file named."""
    write_private(path, login_url(endpoint, token.value) + "\n")
    return path


def access_help(
    endpoint: str, token: CodecToken, *, ui_url: str | None, login_file: Path
) -> list[str]:
    """How a person lets the Web UI and the CLI through the codec server at ``endpoint``;
    its login URL is in ``login_file`` (see `save_login_url`). Never the token itself."""
    if token.file is not None:
        where, auth = f"in {token.file}", f'"Bearer $(cat {shlex.quote(str(token.file))})"'
    else:
        where, auth = f"from {token.source}", f'"Bearer ${token.source}"'
    ui = f"the Web UI ({ui_url})" if ui_url else "the Web UI"
    return [
        f"Codec server {endpoint} decodes only for holders of its token ({where}).",
        f"  Web UI: open the login URL kept in {login_file} (yours only: it holds the token) "
        f"once in your browser; then in {ui} "
        'open Codec Server (its icon at the top right), choose "Use my browser setting and '
        f'ignore Cluster-level setting", endpoint {endpoint}, turn on "Include cross-origin '
        'credentials", Apply, and reload the page.',
        f"  CLI: temporal workflow show -w <workflow id> --codec-endpoint {endpoint} "
        f"--codec-auth {auth}",
    ]


def _handler(transform: Transform) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
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


def _guard(origins: frozenset[str], hosts: frozenset[str], credentials: Credentials) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host", "").lower()
        if host not in hosts:
            # DNS rebinding: a page of another site whose name now points here.
            return _refuse(request, 403, f"Host {_shown(host)} is not served here")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in origins:
            return _refuse(request, 403, "Origin is not an allowed Web UI")
        if request.method == "OPTIONS":
            if origin is None:
                return _refuse(request, 403, "a preflight without an Origin")
            return _with_cors(web.Response(status=204), origin)
        if request.path != "/login":
            refusal = _unauthenticated(request, credentials)
            if refusal is not None:
                refused = _refuse(request, 401, refusal, challenge=True)
                return _with_cors(refused, origin) if origin else refused
        response = await handler(request)
        return _with_cors(response, origin) if origin else response

    return guard


def _unauthenticated(request: web.Request, credentials: Credentials) -> str | None:
    """Why the request's credential does not admit it; None if it does."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:  # an explicit credential decides, right or wrong
        return None if credentials.bearer_matches(authorization) else "wrong bearer token"
    session = request.cookies.get(SESSION_COOKIE)
    if session is not None:
        return None if credentials.session_matches(session) else "expired or forged session"
    return "no credential"


def _with_cors(response: web.StreamResponse, origin: str) -> web.StreamResponse:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "content-type, x-namespace, authorization"
    response.headers["Access-Control-Max-Age"] = "600"
    response.headers["Vary"] = "Origin"
    return response


def _refuse(
    request: web.Request, status: int, reason: str, *, challenge: bool = False
) -> web.Response:
    request[REFUSAL] = reason
    message = reason
    if status == 401:
        message += (
            ": send Authorization: Bearer <token> (the token `pizza server` prints where to "
            "find), or log this browser in at /login?token=<token>"
        )
    response = _error(status, message)
    if challenge:
        detail = "" if reason == "no credential" else ', error="invalid_token"'
        response.headers["WWW-Authenticate"] = f'Bearer realm="pizza-saga codec server"{detail}'
    return response


def _login(credentials: Credentials, origins: Sequence[str]) -> Handler:
    async def login(request: web.Request) -> web.StreamResponse:
        endpoint = f"http://{request.headers['Host'].lower()}"  # checked by the guard
        ui = origins[0] if origins else "the Temporal Web UI"
        if not credentials.token_matches(request.query.get("token", "")):
            request[REFUSAL] = "login with a wrong or no token"
            return _page(401, "Wrong or missing token", _LOGIN_REFUSED, endpoint=endpoint)
        hours = f"{credentials.session_seconds / 3600:g}"
        response = _page(200, "Logged in", _LOGGED_IN, endpoint=endpoint, ui=ui, hours=hours)
        response.set_cookie(
            SESSION_COOKIE,
            credentials.new_session(),
            max_age=credentials.session_seconds,
            path="/",
            httponly=True,
            samesite="Strict",
        )
        return response

    return login


_LOGGED_IN = """<p>This browser may now read payloads through the codec server at
<code>{endpoint}</code> for {hours} hours.</p>
<p>The Web UI sends this login only if you turn one thing on: in
<a href="{ui}">{ui}</a>, open <b>Codec Server</b> (the codec icon at the top right),
choose <b>Use my browser setting and ignore Cluster-level setting</b>, enter
<code>{endpoint}</code> as the endpoint, turn on <b>Include cross-origin credentials</b>
press <b>Apply</b> and reload the page. Without that the Web UI shows payloads still
encrypted.</p>"""

_LOGIN_REFUSED = """<p>This link's token is not the codec server's: nothing was changed.</p>
<p>Use the login link in the file <code>pizza server</code> named, or
<code>{endpoint}/login?token=</code> followed by the token from the codec server's token
file or <code>PIZZA_CODEC_TOKEN</code>.</p>"""


def _page(status: int, title: str, body: str, **values: str) -> web.Response:
    text = body.format(**{name: html.escape(value) for name, value in values.items()})
    document = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1>{text}</body></html>"
    )
    response = web.Response(status=status, text=document, content_type="text/html")
    # The address holds the token: keep it out of caches and of the next page's Referer.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Content-Security-Policy"] = "default-src 'none'"
    return response


@web.middleware
async def _logged(request: web.Request, handler: Handler) -> web.StreamResponse:
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as err:
        status = err.status
        raise
    finally:
        _log_line(request, status)


def _log_line(request: web.Request, status: int) -> None:
    origin = request.headers.get("Origin")
    line = f"{request.method} {_shown(request.path)} {status} origin={_shown(origin)}"
    refusal = request.get(REFUSAL)
    if refusal is not None:
        line += f" refused: {refusal}"
    log.log(logging.WARNING if refusal else logging.INFO, "%s", mask_card_numbers(line))


def _shown(value: str | None) -> str:
    """A client-chosen value for a log line: cut short, quoted, control characters escaped."""
    if value is None:
        return "-"
    return json.dumps(value[:SHOWN_CHARS])


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps({"error": message}), content_type="application/json"
    )
