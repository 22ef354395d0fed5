"""Payments per saga step: an amended order has a charge or refund per amendment.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

FIRST_CHARGE_STEP = "process_credit_card"
# The name the unnamed (order_number, kind) constraint of 0001 has on each database: what
# PostgreSQL gave it, and what the batch copy on SQLite calls it by this naming convention.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
OLD_NAME = {
    "postgresql": "payments_order_number_kind_key",
    "sqlite": "uq_payments_order_number_kind",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("payments", naming_convention=NAMING) as batch:
        batch.add_column(
            sa.Column("step", sa.String(100), nullable=False, server_default=FIRST_CHARGE_STEP)
        )
        batch.drop_constraint(OLD_NAME[dialect], type_="unique")
        batch.create_unique_constraint(
            "uq_payments_order_kind_step", ["order_number", "kind", "step"]
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("payments", naming_convention=NAMING) as batch:
        batch.drop_constraint("uq_payments_order_kind_step", type_="unique")
        batch.create_unique_constraint(OLD_NAME[dialect], ["order_number", "kind"])
        batch.drop_column("step")
