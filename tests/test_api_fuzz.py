"""The JSON API fuzzed from its own OpenAPI document (schemathesis) on a live deployment.

For every operation, requests generated from the schema (valid by the schema, and invalid
on purpose) go to a real `pizza api` process with a real worker behind it. No request may
get a 5xx or an answer the document does not describe; and the requests that were refused
(4xx) must change nothing: stock and payments are the same after the run. The requests go
as an operator's (their API key as a bearer), so that every route is reached past its
credentials check.

A plain synchronous test drives schemathesis against the live server's URL, so its
hypothesis runs stay clear of pytest-asyncio's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.processes import Api, Deployment, deployment

pytestmark = pytest.mark.devserver

EXAMPLES_PER_OPERATION = 25
"""Per operation and generation mode (hypothesis stops sooner when it runs out of cases)."""
DEADLINE_MS = 5000
"""A single request slower than this is a failure too (hypothesis's deadline)."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
CHANGES = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
async def fuzzed(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[tuple[Deployment, Api, dict[str, str]]]:
    """The deployment, its API process, and the headers of an operator's requests."""
    home = tmp_path_factory.mktemp("fuzz")
    async with deployment(home, pizza_home=home / "pizza-home", queue="api") as dep:
        dep.spawn("worker", "worker")
        api = await dep.api("api")
        await api.ready()
        yield dep, api, {"Authorization": f"Bearer {dep.operator_key('fuzzer')}"}


def state(api: Api, operator: dict[str, str]) -> tuple[Any, Any]:
    """Stock and payments, as the API reports them (to an operator)."""
    stock = requests.get(f"{api.url}/api/inventory", timeout=30)
    payments = requests.get(f"{api.url}/api/payments", headers=operator, timeout=30)
    assert stock.status_code == payments.status_code == 200
    return stock.json(), payments.json()


def test_no_generated_request_gets_a_server_error_and_refused_ones_change_nothing(
    fuzzed: tuple[Deployment, Api, dict[str, str]],
) -> None:
    dep, api, operator = fuzzed
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    before = state(api, operator)
    answered: list[tuple[str, str, int]] = []
    session = requests.Session()
    session.headers.update(operator)

    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the API's own document is invalid: {result.err()}"
        operations.append(result.ok())
    assert len(operations) >= 10
    for operation in operations:
        if "/events" in operation.path:
            continue  # endless event streams: read over a real socket in tests/test_events.py
        takes_input = any(True for _ in operation.iter_parameters()) or bool(
            operation.get_request_payload_content_types()
        )
        for mode in GenerationMode if takes_input else [GenerationMode.POSITIVE]:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=DEADLINE_MS,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: schemathesis.Case[Any]) -> None:
                response = case.call(base_url=api.url, session=session, timeout=30)
                answered.append((case.method.upper(), case.path, response.status_code))
                case.validate_response(response, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                # Nothing invalid can be made of this operation's inputs (an optional header
                # that takes any text, say): there is no negative case to send.
                assert mode is GenerationMode.NEGATIVE, operation.path

    changes = [(m, p, s) for m, p, s in answered if m in CHANGES]
    assert answered and changes
    assert all(s < 500 for _, _, s in answered)
    refused = [(m, p, s) for m, p, s in answered if s in (401, 403, 429)]
    assert refused == [], "the operator's requests were refused their credentials"
    accepted = [(m, p, s) for m, p, s in changes if s < 400]
    assert accepted == [], "generated requests were accepted and may have changed state"
    assert state(api, operator) == before
    assert "Traceback" not in dep.logs()
