"""What routes take from the app: the service and the Web UI links."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pizza_saga.order.service import OrderService


def _service(request: Request) -> OrderService:
    service: OrderService = request.app.state.service
    return service


Service = Annotated[OrderService, Depends(_service)]
"""The order service, as a route parameter."""
