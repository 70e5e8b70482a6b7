"""Each segment's latency ledger: where its time went, stage by stage.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("segments", sa.Column("timings", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.drop_column("segments", "timings")
