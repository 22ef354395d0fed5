"""Stock on hand and the movements orders made to it, in the store database."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Connection,
    Engine,
    String,
    UniqueConstraint,
    bindparam,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from pizza_saga.common.db import Base, retry_set_up, utcnow

RESERVE = "reserve"
RELEASE = "release"


class StockItem(Base):
    """How many of one menu item are on hand."""

    __tablename__ = "stock"
    __table_args__ = (CheckConstraint("quantity >= 0", name="stock_not_negative"),)

    item: Mapped[str] = mapped_column(String(100), primary_key=True)
    quantity: Mapped[int]


class StockMovement(Base):
    """One order's reservation or its release; at most one of each per workflow."""

    __tablename__ = "stock_movements"
    __table_args__ = (UniqueConstraint("workflow_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(10))
    order_number: Mapped[str] = mapped_column(String(40))
    items: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OutOfStock(Exception):
    """An item has fewer on hand than the order asks for."""

    def __init__(self, item: str, wanted: int, on_hand: int) -> None:
        super().__init__(f"not enough '{item}' in stock: {wanted} ordered, {on_hand} on hand")
        self.item, self.wanted, self.on_hand = item, wanted, on_hand


class AlreadyReleased(Exception):
    """The order's reservation was already rolled back; reserving now would leak stock."""


_ADD_MOVEMENT = insert(StockMovement)
_MOVEMENT_ITEMS = select(StockMovement.items).where(
    StockMovement.workflow_id == bindparam("wf"), StockMovement.kind == bindparam("kind")
)
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
_ON_HAND = select(StockItem.quantity).where(StockItem.item == bindparam("item_"))
_RECORD_RELEASED = (
    update(StockMovement)
    .where(StockMovement.workflow_id == bindparam("wf"), StockMovement.kind == RELEASE)
    .values(items=bindparam("released"))
)


class InventoryStore:
    """Reserve and release stock, each at most once per workflow."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def stock_up(self, quantities: Mapping[str, int], *, overwrite: bool = False) -> None:
        """Set items' quantities; without ``overwrite``, only items not yet stocked."""

        def stock() -> None:
            with Session(self._engine) as session, session.begin():
                for item, quantity in quantities.items():
                    row = session.get(StockItem, item)
                    if row is None:
                        session.add(StockItem(item=item, quantity=quantity))
                    elif overwrite:
                        row.quantity = quantity

        retry_set_up(stock)

    def on_hand(self) -> dict[str, int]:
        """Item -> quantity on hand."""
        with Session(self._engine) as session:
            rows = session.scalars(select(StockItem).order_by(StockItem.item))
            return {row.item: row.quantity for row in rows}

    # The writes below run prebuilt Core statements on a connection: they run in every
    # order's activities, where building statements (or the ORM's unit of work) cost several
    # times the CPU SQLite takes to run them.

    def reserve(self, workflow_id: str, order_number: str, items: Mapping[str, int]) -> None:
        """Take ``items`` off the shelf for this workflow, once however often it is called.

        Raises OutOfStock (nothing taken) or AlreadyReleased (the rollback came first).
        """
        try:
            with self._engine.begin() as conn:
                # The movement row goes first: it takes the write lock and makes a concurrent
                # or repeated call for the same workflow fail on the unique key.
                conn.execute(
                    _ADD_MOVEMENT,
                    {
                        "workflow_id": workflow_id,
                        "kind": RESERVE,
                        "order_number": order_number,
                        "items": dict(items),
                    },
                )
                if self._movement(conn, workflow_id, RELEASE) is not None:
                    raise AlreadyReleased(
                        f"order of workflow {workflow_id} was already rolled back"
                    )
                for item, wanted in items.items():
                    taken = conn.execute(_TAKE, {"item_": item, "count": wanted})
                    if taken.rowcount != 1:
                        on_hand = conn.scalar(_ON_HAND, {"item_": item})
                        raise OutOfStock(item, wanted, on_hand or 0)
        except IntegrityError:
            return  # reserved before: a retry of the same step

    def release(self, workflow_id: str, order_number: str) -> dict[str, int]:
        """Put back what this workflow reserved, once; returns what was put back.

        Safe when nothing was reserved (returns {}), and it leaves a marker so that a
        reservation arriving late for this workflow is refused instead of leaking stock.
        """
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    _ADD_MOVEMENT,
                    {
                        "workflow_id": workflow_id,
                        "kind": RELEASE,
                        "order_number": order_number,
                        "items": {},
                    },
                )
                reserved = self._movement(conn, workflow_id, RESERVE)
                if reserved is None:
                    return {}
                for item, quantity in reserved.items():
                    conn.execute(_PUT_BACK, {"item_": item, "count": quantity})
                conn.execute(_RECORD_RELEASED, {"wf": workflow_id, "released": reserved})
                return reserved
        except IntegrityError:
            with self._engine.connect() as conn:
                return self._movement(conn, workflow_id, RELEASE) or {}

    @staticmethod
    def _movement(conn: Connection, workflow_id: str, kind: str) -> dict[str, int] | None:
        """The items of this workflow's movement of ``kind``, None if there is none."""
        items: dict[str, int] | None = conn.scalar(
            _MOVEMENT_ITEMS, {"wf": workflow_id, "kind": kind}
        )
        return items
