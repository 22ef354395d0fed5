"""The card vault: tokenized card numbers, sealed, until charged, rolled back or expired.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_vault",
        sa.Column("token", sa.String(40), primary_key=True),
        sa.Column("order_number", sa.String(40), nullable=False, index=True),
        sa.Column("key_id", sa.String(100), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.Column("brand", sa.String(20), nullable=False),
        sa.Column("last4", sa.String(4), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("card_vault")
