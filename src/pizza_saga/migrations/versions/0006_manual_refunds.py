"""Manual refunds: money an operator returned outside the product, recorded.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "manual_refunds",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("order_number", sa.String(40), nullable=False),
        sa.Column("amount", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(100), nullable=False),
        sa.Column("operator", sa.String(80), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        # One row per transfer of an order; it also serves the lookups by order.
        sa.UniqueConstraint("order_number", "reference", name="uq_manual_refunds_order_reference"),
    )


def downgrade() -> None:
    op.drop_table("manual_refunds")
