"""The embedded Temporal: a dev server of ours and the codec server its Web UI decodes
through, for `pizza server`, `pizza up` and the demo (a worker process imports none of it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

from pizza_saga.common.codec_auth import CodecToken, codec_token
from pizza_saga.common.codec_server import access_help, save_login_url, serving, ui_origins
from pizza_saga.common.crypto import EncryptionCodec
from pizza_saga.common.devserver import DevServer, DevServerConfig, running_dev_server
from pizza_saga.common.settings import Settings
from pizza_saga.common.temporal import key_ring


@dataclass(frozen=True)
class EmbeddedTemporal:
    """A dev server of ours, with the codec server its Web UI decodes payloads through."""

    config: DevServerConfig
    server: DevServer
    codec_url: str
    token: CodecToken
    login_file: Path
    """Holds the codec server's login URL (0600); named to the person, never printed."""

    def access_help(self) -> list[str]:
        """How a person lets the Web UI and the CLI through the codec server."""
        return access_help(
            self.codec_url, self.token, ui_url=self.config.ui_url, login_file=self.login_file
        )


@contextlib.asynccontextmanager
async def embedded_temporal(
    settings: Settings, config: DevServerConfig, *, codec_port: int
) -> AsyncIterator[EmbeddedTemporal]:
    """Run the codec server on ``codec_port``, then the dev server, for the block.

    The Web UI is told to decode through that codec server, with this deployment's keys and
    codec token. Raises KeyRingError or TokenError (bad keys or token), PortInUse,
    StateInUse (another dev server on its state file), RuntimeError or TimeoutError (it did
    not start); the server log is PIZZA_HOME/temporal-server.log.
    """
    config = replace(config, codec_endpoint=f"http://localhost:{codec_port}")
    codec = EncryptionCodec(key_ring(settings, config.address))
    token = codec_token(settings)
    async with (
        serving(codec, codec_port, ui_origins(config.ui_port), token=token.value) as url,
        running_dev_server(config, settings.home / "temporal-server.log") as server,
    ):
        login_file = save_login_url(settings.codec_login_file(codec_port), url, token)
        yield EmbeddedTemporal(config, server, url, token, login_file)
