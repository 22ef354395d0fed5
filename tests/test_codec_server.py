"""The codec server on a real port: it decrypts for holders of its token, and for no one else.

Each refusal is checked to have decrypted nothing: the server's codec counts its calls, and
the answer holds none of the plaintext.
"""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from google.protobuf import json_format
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import PayloadCodec

from pizza_saga.common.codec_auth import Credentials, TokenError, codec_token
from pizza_saga.common.codec_server import SESSION_COOKIE, build_app, login_url
from pizza_saga.common.crypto import EncryptionCodec, KeyRing
from pizza_saga.common.ports import free_port
from pizza_saga.common.settings import Settings

TOKEN = "codec-test-token-0123456789abcdef"
UI_ORIGIN = "http://localhost:8233"
SECRET_TEXT = "María García, 701 Mission Street"
JSON = {"Content-Type": "application/json"}


class CountingCodec(PayloadCodec):
    """The product's codec, counting how often the server asks it to work."""

    def __init__(self, inner: EncryptionCodec) -> None:
        self.inner = inner
        self.calls = 0

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.calls += 1
        return await self.inner.encode(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        self.calls += 1
        return await self.inner.decode(payloads)


@dataclass
class Server:
    url: str
    port: int
    codec: CountingCodec
    sealed_body: str
    """A /decode request body: SECRET_TEXT encrypted by the server's key ring."""

    def host(self, name: str = "localhost") -> str:
        return f"{name}:{self.port}"


def plain(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(text).encode())


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    ring = KeyRing.generate("k1")
    codec = CountingCodec(EncryptionCodec(ring))
    port = free_port()
    runner = web.AppRunner(build_app(codec, [UI_ORIGIN], token=TOKEN, port=port))
    await runner.setup()
    await web.TCPSite(runner, "localhost", port).start()
    sealed = await EncryptionCodec(ring).encode([plain(SECRET_TEXT)])
    try:
        yield Server(
            f"http://localhost:{port}",
            port,
            codec,
            json_format.MessageToJson(Payloads(payloads=sealed)),
        )
    finally:
        await runner.cleanup()


async def post(
    server: Server, headers: Mapping[str, str], *, path: str = "/decode", body: str | None = None
) -> tuple[int, Mapping[str, str], str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            server.url + path,
            data=server.sealed_body if body is None else body,
            headers={**JSON, **headers},
        ) as response,
    ):
        return response.status, response.headers, await response.text()


def decoded(text: str) -> list[Payload]:
    return list(json_format.Parse(text, Payloads()).payloads)


async def test_right_bearer_token_gets_the_payloads_decoded(server: Server) -> None:
    status, headers, text = await post(
        server, {"Authorization": f"Bearer {TOKEN}", "Origin": UI_ORIGIN}
    )

    assert status == 200
    assert decoded(text) == [plain(SECRET_TEXT)]
    assert headers["Access-Control-Allow-Origin"] == UI_ORIGIN
    assert headers["Access-Control-Allow-Credentials"] == "true"


@pytest.mark.parametrize(
    ("headers", "status", "reason"),
    [
        ({}, 401, "no credential"),
        ({"Authorization": "Bearer not-the-token-0123456789"}, 401, "wrong bearer token"),
        ({"Authorization": f"Basic {TOKEN}"}, 401, "wrong bearer token"),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, 401, "wrong bearer token"),
        ({"Cookie": f"{SESSION_COOKIE}=9999999999.{'0' * 64}"}, 401, "expired or forged session"),
        # The right token does not help a caller the server must not answer at all.
        ({"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}, 403, "Origin"),
        ({"Authorization": f"Bearer {TOKEN}", "Origin": "null"}, 403, "Origin"),
        ({"Authorization": f"Bearer {TOKEN}", "Host": "evil.example"}, 403, "Host"),
        ({"Authorization": f"Bearer {TOKEN}", "Host": "evil.example:{port}"}, 403, "Host"),
        ({"Authorization": f"Bearer {TOKEN}", "Host": "localhost:1"}, 403, "Host"),
    ],
    ids=[
        "no-credential",
        "wrong-token",
        "not-bearer",
        "token-prefix",
        "forged-session",
        "foreign-origin",
        "null-origin",
        "rebound-host",
        "rebound-host-with-port",
        "other-port",
    ],
)
@pytest.mark.parametrize("path", ["/decode", "/encode"])
async def test_refused_callers_get_nothing_decrypted_or_encrypted(
    server: Server, headers: dict[str, str], status: int, reason: str, path: str
) -> None:
    headers = {name: value.format(port=server.port) for name, value in headers.items()}

    got_status, got_headers, text = await post(server, headers, path=path)

    assert got_status == status
    assert reason in json.loads(text)["error"]
    assert server.codec.calls == 0
    assert "García" not in text and "Mission" not in text
    if status == 401:
        assert got_headers["WWW-Authenticate"].startswith("Bearer ")
    if status == 403:
        assert "Access-Control-Allow-Origin" not in got_headers


async def test_login_sets_a_session_cookie_that_lets_the_web_ui_decode(server: Server) -> None:
    async with aiohttp.ClientSession() as browser:
        async with browser.get(login_url(server.url, TOKEN)) as response:
            assert response.status == 200
            page = await response.text()
            cookie = response.cookies[SESSION_COOKIE]
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
        assert cookie["path"] == "/"
        assert int(cookie["max-age"]) > 0
        assert "Include cross-origin credentials" in page
        assert TOKEN not in page
        assert response.headers["Cache-Control"] == "no-store"

        async with browser.post(
            f"{server.url}/decode", data=server.sealed_body, headers={**JSON, "Origin": UI_ORIGIN}
        ) as response:
            assert response.status == 200
            assert decoded(await response.text()) == [plain(SECRET_TEXT)]
            assert response.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
            assert response.headers["Access-Control-Allow-Credentials"] == "true"

        # The same cookie from another site's page gets nothing.
        async with browser.post(
            f"{server.url}/decode",
            data=server.sealed_body,
            headers={**JSON, "Origin": "http://evil.example"},
        ) as response:
            assert response.status == 403
    assert server.codec.calls == 1


@pytest.mark.parametrize("query", ["", "?token=", "?token=not-the-token-0123456789"])
async def test_login_with_a_wrong_token_sets_no_cookie(server: Server, query: str) -> None:
    async with (
        aiohttp.ClientSession() as browser,
        browser.get(f"{server.url}/login{query}") as response,
    ):
        assert response.status == 401
        assert "Set-Cookie" not in response.headers
        assert "not-the-token" not in await response.text()


async def test_login_on_a_rebound_host_is_refused(server: Server) -> None:
    async with (
        aiohttp.ClientSession() as browser,
        browser.get(
            login_url(server.url, TOKEN), headers={"Host": server.host("evil.example")}
        ) as response,
    ):
        assert response.status == 403
        assert "Set-Cookie" not in response.headers


async def test_preflight_answers_the_allowed_origin_only(server: Server) -> None:
    preflight = {"Access-Control-Request-Method": "POST"}
    async with aiohttp.ClientSession() as session:
        async with session.options(
            f"{server.url}/decode", headers={**preflight, "Origin": UI_ORIGIN}
        ) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == UI_ORIGIN
            assert response.headers["Access-Control-Allow-Credentials"] == "true"
            assert "POST" in response.headers["Access-Control-Allow-Methods"]
            allowed = response.headers["Access-Control-Allow-Headers"]
            assert "x-namespace" in allowed and "content-type" in allowed
        for origin in ("http://evil.example", "http://localhost:8233.evil.example", None):
            headers = preflight if origin is None else {**preflight, "Origin": origin}
            async with session.options(f"{server.url}/decode", headers=headers) as response:
                assert response.status == 403
                assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        ("{not json", "application/json", 400, "protobuf JSON"),
        ('{"payloads": "x"}', "application/json", 400, "protobuf JSON"),
        ("{}", "text/plain", 415, "Content-Type: application/json"),
        (
            '{"payloads": [{"metadata": {"encoding": "YmluYXJ5L2VuY3J5cHRlZA==",'
            ' "encryption-key-id": "bm9wZQ=="}, "data": "AAAA"}]}',
            "application/json",
            400,
            "key 'nope', which is not configured",
        ),
    ],
)
async def test_malformed_requests_with_the_token_are_refused_cleanly(
    server: Server, body: str, content_type: str, status: int, reason: str
) -> None:
    got_status, _, text = await post(
        server,
        {"Authorization": f"Bearer {TOKEN}", "Content-Type": content_type},
        body=body,
    )

    assert got_status == status
    assert reason in json.loads(text)["error"]


async def test_each_request_is_logged_in_one_line_without_payloads_or_secrets(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    with caplog.at_level(logging.INFO, logger="pizza_saga.codec_server"):
        await post(server, {**bearer, "Origin": UI_ORIGIN})
        await post(server, {"Origin": UI_ORIGIN})
        await post(server, {**bearer, "Origin": "http://evil.example"})
        await post(server, {**bearer, "Host": server.host("evil.example")})
        async with aiohttp.ClientSession() as browser:
            async with browser.get(login_url(server.url, TOKEN)):
                pass
            async with browser.post(
                f"{server.url}/decode/4242424242424242", data=server.sealed_body
            ):
                pass

    lines = [r.getMessage() for r in caplog.records if r.name == "pizza_saga.codec_server"]
    assert len(lines) == 6
    assert all("\n" not in line for line in lines)
    ok, no_token, evil_origin, evil_host, login, junk = lines
    assert ok == f'POST "/decode" 200 origin="{UI_ORIGIN}"'
    assert no_token == f'POST "/decode" 401 origin="{UI_ORIGIN}" refused: no credential'
    assert evil_origin.startswith('POST "/decode" 403 origin="http://evil.example" refused: Origin')
    assert evil_host.startswith('POST "/decode" 403 origin=- refused: Host "evil.example:')
    assert login == 'GET "/login" 200 origin=-'
    assert junk == 'POST "/decode/424242******4242" 404 origin=-'
    text = "\n".join(lines)
    sealed_data = json.loads(server.sealed_body)["payloads"][0]["data"]
    for secret in ("García", "Mission", "4242424242424242", TOKEN, "token=", sealed_data[:16]):
        assert secret not in text


def test_session_cookies_expire_and_die_with_the_token() -> None:
    now = [1_000_000.0]
    credentials = Credentials(TOKEN, session_seconds=60, clock=lambda: now[0])
    session = credentials.new_session()

    assert credentials.session_matches(session)
    assert not Credentials("another-token-0123456789abcdef").session_matches(session)
    expires, _, mac = session.partition(".")
    assert not credentials.session_matches(f"{int(expires) + 3600}.{mac}")
    assert not credentials.session_matches(f"{expires}.{mac[:-1]}0")
    assert not credentials.session_matches("garbage")
    now[0] += 61
    assert not credentials.session_matches(session)


def test_token_from_the_environment_wins_over_a_file(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text("file-token-0123456789abcdef\n")
    settings = Settings.model_validate(
        {
            "PIZZA_HOME": tmp_path,
            "PIZZA_CODEC_TOKEN": "env-token-0123456789abcdef",
            "PIZZA_CODEC_TOKEN_FILE": file,
        }
    )

    assert codec_token(settings).value == "env-token-0123456789abcdef"
    assert codec_token(settings.model_copy(update={"codec_token": None})).value == (
        "file-token-0123456789abcdef"
    )
    assert "env-token" not in repr(settings) + repr(codec_token(settings))


def test_default_token_is_generated_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings.model_validate({"PIZZA_HOME": tmp_path / "home"})

    first, second = codec_token(settings), codec_token(settings)

    assert first.value == second.value and len(first.value) >= 32
    assert first.file == settings.default_codec_token_file
    assert stat.S_IMODE(settings.default_codec_token_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("bad", ["short", "has spaces in it 0123456789", "naïve-token-0123456789"])
def test_unusable_token_is_refused_without_repeating_it(tmp_path: Path, bad: str) -> None:
    settings = Settings.model_validate({"PIZZA_HOME": tmp_path, "PIZZA_CODEC_TOKEN": bad})

    with pytest.raises(TokenError, match=r"^PIZZA_CODEC_TOKEN: not a usable codec token") as err:
        codec_token(settings)
    assert bad not in str(err.value)


def test_missing_token_file_is_a_one_line_error(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"PIZZA_HOME": tmp_path, "PIZZA_CODEC_TOKEN_FILE": tmp_path / "absent"}
    )

    with pytest.raises(TokenError, match=r"PIZZA_CODEC_TOKEN_FILE .*absent: cannot read"):
        codec_token(settings)


def test_settings_keep_the_token_secret() -> None:
    settings = Settings.model_validate({"PIZZA_CODEC_TOKEN": "env-token-0123456789abcdef"})

    assert isinstance(settings.codec_token, SecretStr)
    assert "env-token" not in str(settings)
