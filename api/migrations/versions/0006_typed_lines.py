"""Typed lines: each segment says whether it was said aloud or typed into the call's chat.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every line stored before this was heard, not typed.
    op.add_column(
        "segments",
        sa.Column("kind", sa.String(8), nullable=False, server_default="speech"),
    )


def downgrade() -> None:
    op.drop_column("segments", "kind")
