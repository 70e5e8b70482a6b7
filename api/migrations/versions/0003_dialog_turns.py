"""Dialog turns: who spoke a segment (caller or agent), which engine served it, and whether
the caller cut it short.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch copy: on SQLite a copied table loses the full-text
    # index triggers that 0002 put on it.
    op.add_column("segments", sa.Column("role", sa.String(16)))
    op.add_column("segments", sa.Column("engine", sa.String(64)))
    op.add_column(
        "segments",
        sa.Column("interrupted", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    for column in ("interrupted", "engine", "role"):
        op.drop_column("segments", column)
