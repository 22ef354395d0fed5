"""The product's effect log: `temporal_saga.effects` on the ``effects`` table of its stores.

Every store keys its side effects on (order number, saga step) in that table, in the same
transaction as the change, so a step and its compensation serialize on one row (see
`temporal_saga.effects` for the rules). The table is created by the product's migrations.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Engine, String
from sqlalchemy.orm import Mapped, mapped_column
from temporal_saga.effects import EffectLog

from pizza_saga.common.db import Base, utcnow


class EffectRow(Base):
    """One step's side effect for one order, and whether it was undone."""

    __tablename__ = "effects"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    step: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(10))
    detail: Mapped[dict[str, object] | None] = mapped_column(JSON)
    """What the step did; None for a compensation that found nothing to undo."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


def effect_log(engine: Engine) -> EffectLog:
    """The effect log on the stores' ``effects`` table."""
    return EffectLog(engine, EffectRow.__table__)  # type: ignore[arg-type]
