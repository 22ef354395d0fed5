"""Hostile bodies: too large ones are refused before they are read whole (413), and a body of
many bad fields gets a short answer."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import create_engine

from pizza_saga.api.app import MAX_BODY_BYTES
from pizza_saga.app import Stores, build_api, build_service
from pizza_saga.common.ports import free_port
from pizza_saga.common.settings import Settings
from pizza_saga.inventory.store import InventoryStore


@pytest.fixture
async def http(stores: Stores, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    web = build_api(build_service(None, stores, settings), ui_url="http://ui", namespace="default")
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def test_a_body_over_the_limit_is_refused_by_its_length(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/api/orders",
        content=b"{" + b" " * MAX_BODY_BYTES + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"
    assert str(MAX_BODY_BYTES) in answer.json()["detail"]


async def test_a_streamed_body_over_the_limit_is_refused_as_it_arrives(
    http: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 4096  # no Content-Length: chunked

    answer = await http.post(
        "/api/orders", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413


async def test_many_bad_fields_get_a_short_answer(http: httpx.AsyncClient) -> None:
    body = json.dumps({f"unknown_{i}": i for i in range(3000)})
    assert len(body) < MAX_BODY_BYTES

    answer = await http.post(
        "/api/orders", content=body, headers={"Content-Type": "application/json"}
    )

    assert answer.status_code == 422
    assert len(answer.content) < 10_000
    assert "more" in answer.json()["detail"]


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.", ""])
async def test_a_request_for_another_name_is_refused(http: httpx.AsyncClient, host: str) -> None:
    # A page whose name was rebound to this machine sends its own name as Host.
    answer = await http.get("/api/inventory", headers={"Host": host})

    assert answer.status_code == 400
    assert "PIZZA_ALLOWED_HOSTS" in answer.json()["detail"]


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "[::1]:8000", "LOCALHOST:1"])
async def test_loopback_names_are_answered(http: httpx.AsyncClient, host: str) -> None:
    answer = await http.get("/api/inventory", headers={"Host": host})
    assert answer.status_code == 200


async def test_a_name_the_operator_allowed_is_answered(stores: Stores, settings: Settings) -> None:
    allowing = settings.model_copy(update={"allowed_hosts": "pizza.example,10.0.0.5"})
    web = build_api(
        build_service(None, stores, allowing),
        ui_url="http://ui",
        namespace="default",
        allowed_hosts=allowing.api_host_names,
    )
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://pizza.example") as http:
        assert (await http.get("/api/inventory")).status_code == 200
        assert (await http.get("/api/inventory", headers={"Host": "x.example"})).status_code == 400


async def test_a_store_database_that_does_not_answer_is_503_not_500(
    stores: Stores, settings: Settings
) -> None:
    # The stock's database is away (restarting, failing over): nothing listens at its address.
    away = create_engine(f"postgresql+psycopg://pizza@127.0.0.1:{free_port()}/pizza")
    service = build_service(
        None, dataclasses.replace(stores, inventory=InventoryStore(away)), settings
    )
    web = build_api(service, ui_url="http://ui", namespace="default")
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        answer = await http.get("/api/inventory")

    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert "store database" in answer.json()["detail"]
    assert answer.headers["retry-after"]
