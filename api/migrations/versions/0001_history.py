"""Conversations, participants, and the webhook events that fed them.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ts = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("room_sid", sa.String(64), nullable=False, unique=True),
        sa.Column("room_name", sa.String(128), nullable=False, index=True),
        sa.Column("mode", sa.String(16)),
        sa.Column("started_at", ts, index=True),
        sa.Column("ended_at", ts),
        sa.Column("created_at", ts, nullable=False),
    )
    op.create_table(
        "participants",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "conversation_id",
            sa.String(32),
            sa.ForeignKey("conversations.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("participant_sid", sa.String(64), nullable=False, unique=True),
        sa.Column("identity", sa.String(128), nullable=False, index=True),
        sa.Column("name", sa.String(128)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("language", sa.String(16)),
        sa.Column("joined_at", ts),
        sa.Column("left_at", ts),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("room_sid", sa.String(64), index=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("received_at", ts, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("webhook_events")
    op.drop_table("participants")
    op.drop_table("conversations")
