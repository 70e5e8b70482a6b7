"""The history store's tables."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, on SQLite (which stores naive text) as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime}


class Conversation(Base):
    """One LiveKit room session (a room name can be reused; its sid cannot)."""

    __tablename__ = "conversations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    room_sid: Mapped[str] = mapped_column(String(64), unique=True)
    room_name: Mapped[str] = mapped_column(String(128), index=True)
    mode: Mapped[str | None] = mapped_column(String(16))
    # Never null, so the history list can page on (started_at, id): the room's creation
    # time when LiveKit has told us, else the moment we first heard of the conversation.
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Set by an admin's delete: the row stays for the audit trail, the API hides it.
    deleted_at: Mapped[datetime | None]
    # Filled in by agents after the call.
    summary: Mapped[str | None] = mapped_column(Text)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The newest agent generation that wrote to it (agents/lease.py): an older agent's
    # writes are refused, so a paused agent never writes over its successor.
    generation: Mapped[int] = mapped_column(default=0, server_default="0")

    participants: Mapped[list[Participant]] = relationship(
        back_populates="conversation", order_by="Participant.joined_at"
    )

    __table_args__ = (Index("ix_conversations_started_at_id", "started_at", "id"),)


class Participant(Base):
    """One participant session in a conversation (a rejoin gets a new sid and a new row)."""

    __tablename__ = "participants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    participant_sid: Mapped[str] = mapped_column(String(64), unique=True)
    identity: Mapped[str] = mapped_column(String(128), index=True)
    name: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    language: Mapped[str | None] = mapped_column(String(16))
    joined_at: Mapped[datetime | None]
    left_at: Mapped[datetime | None]

    conversation: Mapped[Conversation] = relationship(back_populates="participants")


class WebhookEvent(Base):
    """Each delivered webhook event, once: its id is the key that makes replays no-ops."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event: Mapped[str] = mapped_column(String(64))
    room_sid: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime]
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


# SQLite's FTS5 maps its rows to the content table by an integer rowid. A table's implicit
# rowid may be renumbered by VACUUM, so the searchable tables carry an explicit INTEGER
# PRIMARY KEY (which is the rowid). BIGINT on PostgreSQL.
SearchKey = BigInteger().with_variant(Integer(), "sqlite")


class Segment(Base):
    """One final transcript segment, as an agent heard it."""

    __tablename__ = "segments"

    seq: Mapped[int] = mapped_column(SearchKey, primary_key=True, autoincrement=True)
    # Chosen by the agent: posting the same segment twice stores it once.
    id: Mapped[str] = mapped_column(String(64), unique=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"))
    participant_identity: Mapped[str] = mapped_column(String(128))
    participant_sid: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    # Seconds from the start of the call.
    start_s: Mapped[float]
    end_s: Mapped[float]
    # Dialog turns only: "user" or "agent", the engine that heard or spoke it, and whether
    # the caller talked over it (its text is then what was spoken before the cut).
    role: Mapped[str | None] = mapped_column(String(16))
    engine: Mapped[str | None] = mapped_column(String(64))
    interrupted: Mapped[bool] = mapped_column(default=False, server_default=false())
    # "speech" or "text" (typed into the call's chat): SegmentIn's SegmentKind.
    kind: Mapped[str] = mapped_column(String(8), default="speech", server_default="speech")
    # The line's latency ledger: seconds per stage as the pipeline measured them (SegmentIn).
    timings: Mapped[dict[str, float] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # `text` as the full-text index sees it (api/search.py: search_terms).
    search_terms: Mapped[str] = mapped_column(Text)

    translations: Mapped[list[Translation]] = relationship(
        back_populates="segment", order_by="Translation.language"
    )

    __table_args__ = (
        Index("ix_segments_conversation_start", "conversation_id", "start_s"),
        Index("ix_segments_conversation_language", "conversation_id", "language"),
    )


class Translation(Base):
    """A segment's text in another language."""

    __tablename__ = "translations"

    seq: Mapped[int] = mapped_column(SearchKey, primary_key=True, autoincrement=True)
    segment_id: Mapped[str] = mapped_column(ForeignKey("segments.id"))
    # The segment's, repeated so a search can go from a match to its conversation directly.
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    language: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    search_terms: Mapped[str] = mapped_column(Text)

    segment: Mapped[Segment] = relationship(back_populates="translations")

    __table_args__ = (UniqueConstraint("segment_id", "language"),)


class Recording(Base):
    """One egress (LiveKit Egress or Kaiwa's recorder): its state and the file it made."""

    __tablename__ = "recordings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    egress_id: Mapped[str] = mapped_column(String(64), unique=True)
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # room, participant or track
    participant_identity: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    # Failed or aborted, yet a file was written: playable up to where it stopped.
    partial: Mapped[bool] = mapped_column(default=False)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    # Keys in the recordings bucket. Only ever read from here, never from a request.
    object_key: Mapped[str | None] = mapped_column(String(1024))
    location: Mapped[str | None] = mapped_column(Text)
    size: Mapped[int | None] = mapped_column(BigInteger)
    duration_s: Mapped[float | None]
    manifest_key: Mapped[str | None] = mapped_column(String(1024))
    # EgressInfo.updated_at: decides which of two reports about one egress is newer.
    updated_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """Who did what to which record: written in the same transaction as the change."""

    __tablename__ = "audit_log"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
