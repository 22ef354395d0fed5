"""An index of the card numbers still kept, by expiry, for the purge every tokenize runs.

Without it the purge read the whole vault (tokens are remembered 30 days after their number
is destroyed): on SQLite tokenizing took 0.12 ms with up to 1,000 tokens, 1.4 ms at 13,000.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

KEPT = sa.text("sealed IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_card_vault_kept_expiry",
        "card_vault",
        ["expires_at"],
        sqlite_where=KEPT,
        postgresql_where=KEPT,
    )


def downgrade() -> None:
    op.drop_index("ix_card_vault_kept_expiry", table_name="card_vault")
