"""Stock on hand, and reservations made and released once per order (see temporal_saga.effects)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from sqlalchemy import CheckConstraint, Engine, String, bindparam, select, update
from sqlalchemy.orm import Mapped, mapped_column
from temporal_saga.effects import Detail, EffectKey, insert_if_absent

from pizza_saga.common.db import Base
from pizza_saga.common.effects import effect_log


class StockItem(Base):
    """How many of one menu item are on hand."""

    __tablename__ = "stock"
    __table_args__ = (CheckConstraint("quantity >= 0", name="stock_not_negative"),)

    item: Mapped[str] = mapped_column(String(100), primary_key=True)
    quantity: Mapped[int]


class OutOfStock(Exception):
    """An item has fewer on hand than the order asks for."""

    def __init__(self, item: str, wanted: int, on_hand: int) -> None:
        super().__init__(f"not enough '{item}' in stock: {wanted} ordered, {on_hand} on hand")
        self.item, self.wanted, self.on_hand = item, wanted, on_hand


_TAKE = (
    update(StockItem)
    .where(StockItem.item == bindparam("item_"), StockItem.quantity >= bindparam("count"))
    .values(quantity=StockItem.quantity - bindparam("count"))
)
_PUT_BACK = (
    update(StockItem)
    .where(StockItem.item == bindparam("item_"))
    .values(quantity=StockItem.quantity + bindparam("count"))
)
_SET = (
    update(StockItem)
    .where(StockItem.item == bindparam("item_"))
    .values(quantity=bindparam("count"))
)
_ON_HAND = select(StockItem.quantity).where(StockItem.item == bindparam("item_"))


class InventoryStore:
    """Reserve and release stock, each at most once per order."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._effects = effect_log(engine)
        self._add_item = insert_if_absent(engine, StockItem, "item")

    def stock_up(self, quantities: Mapping[str, int], *, overwrite: bool = False) -> None:
        """Set items' quantities; without ``overwrite``, only items not yet stocked.

        Safe when several processes do it at once: an item is added once, by whichever
        comes first.
        """
        rows = [{"item": item, "quantity": count} for item, count in quantities.items()]
        if not rows:
            return
        with self._engine.begin() as conn:
            conn.execute(self._add_item, rows)
            if overwrite:
                conn.execute(_SET, [{"item_": r["item"], "count": r["quantity"]} for r in rows])

    def on_hand(self) -> dict[str, int]:
        """Item -> quantity on hand."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(StockItem.item, StockItem.quantity).order_by(StockItem.item))
            return {item: quantity for item, quantity in rows}

    def reserve(self, effect: EffectKey, items: Mapping[str, int]) -> None:
        """Take ``items`` off the shelf for this order, once however often it is called.

        Raises OutOfStock (nothing taken), or EffectRefused when the order's reservation was
        rolled back first or belongs to another execution.
        """
        with self._engine.begin() as conn:
            if self._effects.do(conn, effect, {"items": dict(items)}) is not None:
                return  # reserved before: a retry of the same step
            # Rows in one order everywhere, so two orders never wait on each other in a circle.
            for item, wanted in sorted(items.items()):
                taken = conn.execute(_TAKE, {"item_": item, "count": wanted})
                if taken.rowcount != 1:
                    on_hand = conn.scalar(_ON_HAND, {"item_": item})
                    raise OutOfStock(item, wanted, on_hand or 0)

    def reserved(self, effect: EffectKey) -> dict[str, int] | None:
        """What this order's execution has taken and not put back; None if nothing."""
        with self._engine.connect() as conn:
            done = self._effects.done(conn, effect)
        return dict(done["items"]) if done else None

    def put_back(self, effect: EffectKey, take_from: Mapping[str, Mapping[str, int]]) -> None:
        """Put back pizzas an amendment removed, once however often it is called: from each
        of the order's reservations named in ``take_from`` (step -> items), which then hold
        that much less, so that rolling them back later puts back only what they still hold.

        Raises EffectRefused if a reservation named was rolled back (or this amendment's
        release was), ValueError if one holds fewer than asked; nothing changes then.
        """
        detail: Detail = {"take_from": {step: dict(items) for step, items in take_from.items()}}
        with self._engine.begin() as conn:
            if self._effects.do(conn, effect, detail) is not None:
                return  # put back before: a retry of the same step
            for step, items in sorted(take_from.items()):
                held = EffectKey(key=effect.key, step=step, owner=effect.owner)
                self._effects.revise(conn, held, functools.partial(_less, items=items))
                for item, count in sorted(items.items()):
                    conn.execute(_PUT_BACK, {"item_": item, "count": count})

    def reservations(
        self, order_number: str, owner: str, *, steps: Callable[[str], bool]
    ) -> dict[str, dict[str, int]]:
        """This execution's reservations of the order that stand, among the effect steps
        ``steps`` accepts: step -> what it holds, oldest first."""
        with self._engine.connect() as conn:
            standing = self._effects.standing(conn, order_number, owner)
        return {step: dict(d["items"]) for step, d in standing.items() if steps(step)}

    def release(self, effect: EffectKey) -> dict[str, int] | None:
        """Put back what this order's execution reserved, once; returns what was put back
        ({} when amendments had put all of it back already).

        Safe when nothing was reserved (returns None): it leaves a marker, so a reservation
        arriving late for this order is refused instead of leaking stock.
        """

        def put_back(detail: Detail) -> None:
            for item, count in sorted(detail["items"].items()):
                conn.execute(_PUT_BACK, {"item_": item, "count": count})

        with self._engine.begin() as conn:
            undone = self._effects.undo(conn, effect, put_back)
        return dict(undone["items"]) if undone is not None else None


def _less(detail: Detail, *, items: Mapping[str, int]) -> Detail:
    """A reservation's record with ``items`` taken out of it; ValueError if it lacks them."""
    held = dict(detail["items"])
    for item, count in items.items():
        if held.get(item, 0) < count:
            raise ValueError(f"the reservation holds {held.get(item, 0)} '{item}', not {count}")
        held[item] -= count
        if not held[item]:
            del held[item]
    return {**detail, "items": held}
