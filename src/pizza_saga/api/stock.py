"""Stock on hand, as the JSON API shows and sets it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from pizza_saga.api.access import OperatorActor
from pizza_saga.api.deps import Service
from pizza_saga.api.schemas import StockChange, StockLevel, problems
from pizza_saga.order.service import InvalidInput

router = APIRouter(prefix="/api/inventory", tags=["inventory"])


@router.get("", response_model=dict[str, int])
async def inventory(service: Service) -> dict[str, int]:
    """Pizzas on hand: menu item -> quantity (anyone: what can be ordered)."""
    return service.stock()


@router.put(
    "/{item}",
    response_model=StockLevel,
    responses=problems(
        400, 401, 403, 422, 429, on_422="Not a menu item, or not a quantity from 0 to 1000000"
    ),
)
async def set_stock(
    item: Annotated[str, Path(max_length=100, description="A menu item, as the menu names it.")],
    actor: OperatorActor,
    change: StockChange,
    service: Service,
) -> StockLevel:
    """Set how many of a menu item are on hand. Operators only (in the audit trail)."""
    try:
        stock = service.set_stock({item: change.quantity}, by=actor)
    except InvalidInput as err:
        field = "/quantity" if err.field == "quantity" else err.field
        raise InvalidInput(err.reason, field=field) from None
    return StockLevel(item=item, quantity=stock[item])
