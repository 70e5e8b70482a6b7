"""Transcripts, translations, recordings, the audit log, and full-text search over text.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ts = sa.DateTime(timezone=True)
# INTEGER PRIMARY KEY is SQLite's rowid, which FTS5 maps its rows by (see api/models.py).
search_key = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

SEARCHABLE = ("segments", "translations")


def _sqlite_fts(table: str) -> list[str]:
    # External content: the index stores tokens only and reads `search_terms` back from the
    # table. `search_terms` is already lower-cased and split into words and CJK bigrams by
    # api/search.py, so the tokenizer only has to split on spaces; diacritics stay
    # significant (Vietnamese "ma" and "mà" are different words), as on PostgreSQL.
    fts = f"{table}_fts"
    return [
        f"CREATE VIRTUAL TABLE {fts} USING fts5(search_terms, content='{table}', "
        "content_rowid='seq', tokenize='unicode61 remove_diacritics 0')",
        f"CREATE TRIGGER {fts}_insert AFTER INSERT ON {table} BEGIN "
        f"INSERT INTO {fts}(rowid, search_terms) VALUES (new.seq, new.search_terms); END",
        f"CREATE TRIGGER {fts}_delete AFTER DELETE ON {table} BEGIN "
        f"INSERT INTO {fts}({fts}, rowid, search_terms) "
        "VALUES ('delete', old.seq, old.search_terms); END",
        f"CREATE TRIGGER {fts}_update AFTER UPDATE OF search_terms ON {table} BEGIN "
        f"INSERT INTO {fts}({fts}, rowid, search_terms) "
        "VALUES ('delete', old.seq, old.search_terms); "
        f"INSERT INTO {fts}(rowid, search_terms) VALUES (new.seq, new.search_terms); END",
    ]


def _postgresql_fts(table: str) -> list[str]:
    # The 'simple' configuration only lower-cases: no stemming, no stop words, so a
    # lexeme is exactly a token of search_terms, as in SQLite.
    return [
        f"CREATE INDEX ix_{table}_search ON {table} "
        "USING gin (to_tsvector('simple'::regconfig, search_terms))"
    ]


def upgrade() -> None:
    dialect = op.get_bind().dialect.name

    op.add_column("conversations", sa.Column("deleted_at", ts))
    op.add_column("conversations", sa.Column("summary", sa.Text()))
    op.add_column("conversations", sa.Column("usage", sa.JSON()))
    # The history list pages on (started_at, id), which needs a value in every row.
    op.execute("UPDATE conversations SET started_at = created_at WHERE started_at IS NULL")
    if dialect != "sqlite":
        # SQLite cannot change a column in place, and rebuilding a table that others
        # reference fails with foreign keys on: there the model keeps it filled.
        op.alter_column("conversations", "started_at", nullable=False)
    op.drop_index("ix_conversations_started_at", table_name="conversations")
    op.create_index("ix_conversations_started_at_id", "conversations", ["started_at", "id"])

    op.create_table(
        "segments",
        sa.Column("seq", search_key, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "conversation_id", sa.String(32), sa.ForeignKey("conversations.id"), nullable=False
        ),
        sa.Column("participant_identity", sa.String(128), nullable=False),
        sa.Column("participant_sid", sa.String(64)),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("start_s", sa.Float(), nullable=False),
        sa.Column("end_s", sa.Float(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("search_terms", sa.Text(), nullable=False),
    )
    op.create_index("ix_segments_conversation_start", "segments", ["conversation_id", "start_s"])
    op.create_index(
        "ix_segments_conversation_language", "segments", ["conversation_id", "language"]
    )
    op.create_table(
        "translations",
        sa.Column("seq", search_key, primary_key=True, autoincrement=True),
        sa.Column("segment_id", sa.String(64), sa.ForeignKey("segments.id"), nullable=False),
        sa.Column(
            "conversation_id",
            sa.String(32),
            sa.ForeignKey("conversations.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("search_terms", sa.Text(), nullable=False),
        sa.UniqueConstraint("segment_id", "language"),
    )
    op.create_table(
        "recordings",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("egress_id", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "conversation_id",
            sa.String(32),
            sa.ForeignKey("conversations.id"),
            nullable=False,
            index=True,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("participant_identity", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("partial", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.Column("started_at", ts),
        sa.Column("ended_at", ts),
        sa.Column("object_key", sa.String(1024)),
        sa.Column("location", sa.Text()),
        sa.Column("size", sa.BigInteger()),
        sa.Column("duration_s", sa.Float()),
        sa.Column("manifest_key", sa.String(1024)),
        sa.Column("updated_at", ts),
        sa.Column("created_at", ts, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("at", ts, nullable=False, index=True),
        sa.Column("details", sa.JSON()),
    )

    for table in SEARCHABLE:
        for statement in _sqlite_fts(table) if dialect == "sqlite" else _postgresql_fts(table):
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in SEARCHABLE:
        if dialect == "sqlite":
            for suffix in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_fts_{suffix}")
            op.execute(f"DROP TABLE IF EXISTS {table}_fts")
    op.drop_table("audit_log")
    op.drop_table("recordings")
    op.drop_table("translations")
    op.drop_table("segments")
    op.drop_index("ix_conversations_started_at_id", table_name="conversations")
    op.create_index("ix_conversations_started_at", "conversations", ["started_at"])
    if dialect != "sqlite":
        op.alter_column("conversations", "started_at", nullable=True)
    op.drop_column("conversations", "usage")
    op.drop_column("conversations", "summary")
    op.drop_column("conversations", "deleted_at")
