"""Build the FastAPI app over an OrderService."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI

from pizza_saga.api import events, health, orders, pages, payments, problems, stock
from pizza_saga.api.access import AccessLimiter
from pizza_saga.order.service import OrderService


@dataclass(frozen=True)
class Links:
    """Where the Temporal Web UI is, for links from orders to their workflows."""

    ui_url: str
    namespace: str


def create_app(service: OrderService, *, links: Links) -> FastAPI:
    """The API and the pages, over ``service``; who may call what: api/access.py."""
    app = FastAPI(
        title="pizza-saga",
        summary="Pizza orders that run as sagas on Temporal.",
        version="0.1.0",
    )
    app.state.service = service
    app.state.links = links
    app.state.access_limiter = AccessLimiter()
    problems.install(app)
    app.include_router(health.router)
    app.include_router(orders.router)
    app.include_router(stock.router)
    app.include_router(payments.router)
    events.install(app)
    pages.install(app)
    return app
