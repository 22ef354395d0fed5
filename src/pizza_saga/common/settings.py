"""Settings read from the environment, validated once, with field-named errors."""

from __future__ import annotations

import importlib.metadata
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator


class SettingsError(ValueError):
    """An environment variable holds a value the product cannot use."""


_HOST = r"[A-Za-z0-9.:-]+"
"""A host name or address (IPv6 without brackets), as PIZZA_ALLOWED_HOSTS lists them."""


class Settings(BaseModel):
    """Everything a pizza-saga process needs to know about where its state lives."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    home: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("pizza-saga")),
        alias="PIZZA_HOME",
    )
    database_url: str | None = Field(default=None, alias="PIZZA_DATABASE_URL", min_length=1)
    ui_url: str | None = Field(default=None, alias="PIZZA_UI_URL", pattern=r"^https?://\S+$")
    """Temporal Web UI for links; default: the dev server's, port of the service + 1000."""
    prep_seconds: float = Field(default=3.0, alias="PIZZA_PREP_SECONDS", ge=0, le=3600)
    driver_seconds: float = Field(default=2.0, alias="PIZZA_DRIVER_SECONDS", ge=0, le=3600)
    order_deadline_seconds: float = Field(
        default=1800.0, alias="PIZZA_ORDER_DEADLINE_SECONDS", ge=1, le=7 * 24 * 3600
    )
    compensation_attempts: int = Field(default=5, alias="PIZZA_COMPENSATION_ATTEMPTS", ge=1, le=100)
    compensation_backoff_seconds: float = Field(
        default=1.0, alias="PIZZA_COMPENSATION_BACKOFF_SECONDS", ge=0.01, le=3600
    )

    task_queue: str = Field(
        default="pizza-tasks", alias="PIZZA_TASK_QUEUE", pattern=r"^[A-Za-z0-9._-]{1,100}$"
    )
    """The task queue workers poll and orders are started on."""
    activity_slots: int = Field(default=50, alias="PIZZA_WORKER_ACTIVITY_SLOTS", ge=1, le=1000)
    """Activities one worker runs at once; the store's connection pool is sized to it."""
    workflow_slots: int = Field(default=50, alias="PIZZA_WORKER_WORKFLOW_SLOTS", ge=1, le=1000)
    """Workflow tasks one worker runs at once."""
    shutdown_grace_seconds: float = Field(
        default=30.0, alias="PIZZA_SHUTDOWN_GRACE_SECONDS", ge=0, le=3600
    )
    """On SIGTERM a worker stops polling and gives running activities this long to finish."""
    workflow_sandbox: bool = Field(default=True, alias="PIZZA_WORKFLOW_SANDBOX")
    """Run workflows in the SDK's sandbox, which refuses a non-deterministic call instead of
    letting it corrupt a run. False saves worker CPU (docs/speed.md); then only the lint rule
    on workflow modules and the replay tests guard them."""

    worker_versioning: bool = Field(default=True, alias="PIZZA_WORKER_VERSIONING")
    """Workers declare their deployment version (PIZZA_DEPLOYMENT, PIZZA_BUILD_ID): each order
    runs to its end on the build that started it (docs/deploying.md). False: unversioned
    workers, every running order moves to whatever code the workers run."""
    deployment: str = Field(
        default="pizza-saga", alias="PIZZA_DEPLOYMENT", pattern=r"^[A-Za-z0-9_-]{1,100}$"
    )
    """The Worker Deployment the workers belong to: one per shop (its task queue)."""
    build_id: str | None = Field(
        default=None, alias="PIZZA_BUILD_ID", pattern=r"^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,99}$"
    )
    """This code's build; default: the package's version. Each deploy of changed workflow
    code needs a build id of its own (a release's version, or the commit)."""

    local_activities: bool = Field(default=False, alias="PIZZA_LOCAL_ACTIVITIES")
    """Orders run their short steps as local activities (see SagaPolicy)."""
    encryption_keys: str | None = Field(default=None, alias="PIZZA_ENCRYPTION_KEYS")
    """The key ring as JSON (see common/crypto.py); wins over PIZZA_KEY_FILE."""
    key_file: Path | None = Field(default=None, alias="PIZZA_KEY_FILE")
    """A file holding the key ring; default for a local server: PIZZA_HOME's, made once."""
    vault_keys: str | None = Field(default=None, alias="PIZZA_VAULT_KEYS")
    """The card vault's key ring as JSON (same form as the codec's); wins over the file."""
    vault_key_file: Path | None = Field(default=None, alias="PIZZA_VAULT_KEY_FILE")
    """A file holding the vault's key ring; default for a SQLite store: PIZZA_HOME's, made once."""
    card_token_ttl_seconds: float = Field(
        default=900.0, alias="PIZZA_CARD_TOKEN_TTL_SECONDS", ge=10, le=24 * 3600
    )
    """How long a card token can at least be charged after the edge made it (15 minutes); a
    placed order's lives until its deadline (PIZZA_ORDER_DEADLINE_SECONDS), whichever is longer."""
    codec_token: SecretStr | None = Field(default=None, alias="PIZZA_CODEC_TOKEN")
    """The codec server's access token; wins over PIZZA_CODEC_TOKEN_FILE."""
    codec_token_file: Path | None = Field(default=None, alias="PIZZA_CODEC_TOKEN_FILE")
    """A file holding the codec server's token; default: PIZZA_HOME's, made once."""

    metrics_address: str | None = Field(default=None, alias="PIZZA_METRICS_ADDRESS")
    """host:port where `pizza worker` and `pizza api` serve Prometheus metrics; off if unset."""
    log_format: Literal["text", "json"] = Field(default="text", alias="PIZZA_LOG_FORMAT")
    """Log lines as text, or as one JSON object per line (with order, workflow, step)."""
    allowed_hosts: str | None = Field(
        default=None,
        alias="PIZZA_ALLOWED_HOSTS",
        pattern=r"^[A-Za-z0-9.:\[\]*-]+(,[A-Za-z0-9.:\[\]*-]+)*$",
    )
    """Comma-separated host names the API answers to (its `Host` header), besides loopback's
    and the address it listens on: a page on another site that rebinds its own name to this
    machine gets 400 (DNS rebinding)."""

    trusted_proxies: str | None = Field(
        default=None, alias="PIZZA_TRUSTED_PROXIES", pattern=rf"^{_HOST}(,{_HOST})*$"
    )
    """Comma-separated addresses of the reverse proxies in front of the API whose
    X-Forwarded-For and -Proto it believes; unset: none (the client's address is the
    connection's)."""

    streams_per_client: int = Field(default=16, alias="PIZZA_STREAMS_PER_CLIENT", ge=1, le=100_000)
    """Event streams one client address may hold open at once in one `pizza api` process;
    one more is refused with 429."""
    streams_max: int = Field(default=1000, alias="PIZZA_STREAMS_MAX", ge=1, le=100_000)
    """Event streams one `pizza api` process holds open at once, all clients together."""

    @property
    def worker_build_id(self) -> str:
        """PIZZA_BUILD_ID, or the installed package's version."""
        return self.build_id or importlib.metadata.version("pizza-saga")

    @property
    def proxy_addresses(self) -> tuple[str, ...]:
        """PIZZA_TRUSTED_PROXIES as a list of addresses."""
        return tuple(self.trusted_proxies.split(",")) if self.trusted_proxies else ()

    @property
    def api_host_names(self) -> tuple[str, ...]:
        """PIZZA_ALLOWED_HOSTS as a list of names."""
        return tuple(self.allowed_hosts.split(",")) if self.allowed_hosts else ()

    @field_validator("metrics_address")
    @classmethod
    def _host_and_port(cls, address: str | None) -> str | None:
        if address is None:
            return None
        host, sep, port = address.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        try:
            ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
        except ValueError:
            ip = None
        if (
            not sep
            or ip is None
            or (ip.version == 6) != bracketed
            or not port.isdigit()
            or not 0 < int(port) < 65536
        ):
            raise ValueError(
                f"{address!r} is not an IP address and port (e.g. 127.0.0.1:9464, 0.0.0.0:9464 "
                "or [::1]:9464)"
            )
        return address

    @property
    def store_url(self) -> str:
        """SQLAlchemy URL of the store database (inventory, payments, bills)."""
        return self.database_url or f"sqlite:///{self.home / 'pizza.db'}"

    @property
    def default_key_file(self) -> Path:
        """The key ring generated for the embedded (local) default."""
        return self.home / "encryption-keys.json"

    @property
    def default_vault_key_file(self) -> Path:
        """The vault's key ring generated for a SQLite store (one machine)."""
        return self.home / "vault-keys.json"

    @property
    def default_codec_token_file(self) -> Path:
        """The codec server's token generated for the embedded (local) default."""
        return self.home / "codec-token"

    def codec_login_file(self, port: int) -> Path:
        """Where the login URL of the codec server on ``port`` is kept (it holds the token)."""
        return self.home / f"codec-login-{port}"

    @property
    def server_db(self) -> Path:
        """SQLite file of the embedded Temporal dev server."""
        return self.home / "temporal.db"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read settings from the environment; raise SettingsError naming the variable."""
        env = os.environ if environ is None else environ
        names = {f.alias for f in cls.model_fields.values() if f.alias}
        values = {name: env[name] for name in names if env.get(name, "") != ""}
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            first = err.errors()[0]
            raise SettingsError(f"{first['loc'][0]}: {first['msg']}") from None
