"""Storing the transcript segments agents post: once each, translations added as they come."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import KaiwaError
from core.payloads import (
    MAX_RESUMED_TURNS,
    MAX_USAGE_COUNTERS,
    CallReport,
    CallReportStored,
    CallState,
    InvalidSegment,
    LastSegment,
    ResumedTurn,
    SegmentBatch,
    SegmentIn,
    SegmentOutcome,
    SegmentsStored,
)

from .events import conversation_for_room
from .log import logger
from .models import Conversation, Segment, Translation
from .search_terms import search_terms


class ConversationDeleted(KaiwaError):
    """The conversation was deleted by an admin; its transcript takes no more text."""


class StaleGeneration(KaiwaError):
    """An older agent of the call wrote after a newer one took over: it must leave."""


FOREIGN_SEGMENT = "its id belongs to another conversation"
# A segment's id is its speaker's: a message typed under another's id (which an agent that
# took over a call cannot tell) must not add its translations to that person's line.
OTHERS_SEGMENT = "its id belongs to another participant's line"


def fence(session: Session, conversation: Conversation, generation: int) -> None:
    """Record `generation` as the conversation's newest, or raise StaleGeneration when a
    newer one has written. One conditional UPDATE: it holds the row until the transaction
    ends, so a stale writer racing its successor waits for it and is then refused."""
    raised = session.execute(
        update(Conversation)
        .where(Conversation.id == conversation.id, Conversation.generation <= generation)
        .values(generation=generation)
        .execution_options(synchronize_session=False)
    )
    if raised.rowcount == 0:  # type: ignore[attr-defined]
        raise StaleGeneration(f"generation {generation} is behind the conversation's")


def _store(session: Session, batch: SegmentBatch) -> SegmentsStored:
    """Settle each segment on its own: stored, a duplicate, or refused with a reason."""
    conversation = conversation_for_room(session, batch.room_sid, room_name=batch.room_name or "")
    if conversation.deleted_at is not None:
        raise ConversationDeleted(conversation.id)
    fence(session, conversation, batch.generation)
    valid = [s for s in batch.segments if isinstance(s, SegmentIn)]
    known = {
        s.id: (s.conversation_id, s.participant_identity)
        for s in session.scalars(select(Segment).where(Segment.id.in_([s.id for s in valid])))
    }
    wanted = [(s.id, lang) for s in valid for lang in s.translations]
    translated: set[tuple[str, str]] = set()
    if wanted:
        rows = session.execute(
            select(Translation.segment_id, Translation.language).where(
                tuple_(Translation.segment_id, Translation.language).in_(wanted)
            )
        )
        translated = {(segment_id, language) for segment_id, language in rows}
    results: list[SegmentOutcome] = []
    seen: dict[str, str] = {}
    for item in batch.segments:
        if isinstance(item, InvalidSegment):
            results.append(SegmentOutcome(id=item.id, result="refused", reason=item.reason))
            continue
        owner, speaker = known.get(item.id, (conversation.id, item.participant_identity))
        if owner != conversation.id:
            results.append(SegmentOutcome(id=item.id, result="refused", reason=FOREIGN_SEGMENT))
            continue
        if seen.get(item.id, speaker) != item.participant_identity:
            results.append(SegmentOutcome(id=item.id, result="refused", reason=OTHERS_SEGMENT))
            continue
        if item.id in known or item.id in seen:
            results.append(SegmentOutcome(id=item.id, result="duplicate"))
        else:
            session.add(
                Segment(
                    id=item.id,
                    conversation_id=conversation.id,
                    participant_identity=item.participant_identity,
                    participant_sid=item.participant_sid,
                    language=item.language,
                    text=item.text,
                    start_s=item.start_s,
                    end_s=item.end_s,
                    role=item.role,
                    engine=item.engine,
                    interrupted=item.interrupted,
                    kind=item.kind,
                    timings=item.timings or None,
                    search_terms=search_terms(item.text),
                )
            )
            results.append(SegmentOutcome(id=item.id, result="stored"))
        seen[item.id] = item.participant_identity
        for language, text in item.translations.items():
            if (item.id, language) in translated:
                continue
            translated.add((item.id, language))
            session.add(
                Translation(
                    segment_id=item.id,
                    conversation_id=conversation.id,
                    language=language,
                    text=text,
                    search_terms=search_terms(text),
                )
            )
    counts = Counter(r.result for r in results)
    return SegmentsStored(
        stored=counts["stored"],
        duplicates=counts["duplicate"],
        refused=counts["refused"],
        results=results,
    )


def store_segments(sessions: sessionmaker[Session], batch: SegmentBatch) -> SegmentsStored:
    """Store a batch in one transaction. Raises ConversationDeleted.

    An agent retries a post it got no answer to, possibly while the first is still running:
    the second then fails on a unique key, and a retry sees the first's rows as duplicates.
    """
    for attempt in range(3):
        try:
            with sessions.begin() as session:
                return _store(session, batch)
        except IntegrityError:
            logger.info("retrying segments after a concurrent insert", extra={"attempt": attempt})
    raise RuntimeError("segments could not be stored after 3 attempts")


class TooManyCounters(KaiwaError):
    """The report would take the call past MAX_USAGE_COUNTERS distinct counters."""


def store_report(sessions: sessionmaker[Session], report: CallReport) -> CallReportStored:
    """Set the call's summary and usage counters. Raises ConversationDeleted, TooManyCounters."""
    with sessions.begin() as session:
        conversation = conversation_for_room(
            session, report.room_sid, room_name=report.room_name or ""
        )
        if conversation.deleted_at is not None:
            raise ConversationDeleted(conversation.id)
        fence(session, conversation, report.generation)
        if report.summary is not None:
            conversation.summary = report.summary
        # A new dict, so the JSON column sees the change.
        usage = {**(conversation.usage or {}), **report.usage}
        if len(usage) > MAX_USAGE_COUNTERS:
            raise TooManyCounters(len(usage))
        conversation.usage = usage
        return CallReportStored(summary=conversation.summary, usage=usage)


class NoSuchCall(KaiwaError):
    """No conversation has this room sid (yet)."""


def claim_call(sessions: sessionmaker[Session], room_sid: str, generation: int) -> CallState:
    """An agent joins the call as `generation`: from now on every older agent's writes are
    refused (StaleGeneration for this one if a newer agent already claimed it). Answers what
    it restores: the dialog's turns and summary, each speaker's last segment. Raises
    NoSuchCall, ConversationDeleted."""
    with sessions.begin() as session:
        conversation = session.scalar(select(Conversation).where(Conversation.room_sid == room_sid))
        if conversation is None:
            raise NoSuchCall(room_sid)
        if conversation.deleted_at is not None:
            raise ConversationDeleted(conversation.id)
        fence(session, conversation, generation)
        session.refresh(conversation)
        segments = list(
            session.scalars(
                select(Segment)
                .where(Segment.conversation_id == conversation.id)
                .order_by(Segment.start_s.desc(), Segment.seq.desc())
                .limit(MAX_RESUMED_TURNS)
            )
        )
        segments.reverse()
        turns = [
            ResumedTurn(role=s.role, text=s.text, interrupted=s.interrupted)
            for s in segments
            if s.role in ("user", "agent")
        ]
        last = {s.participant_identity: LastSegment(id=s.id, end_s=s.end_s) for s in segments}
        engine = next(
            (s.engine for s in reversed(segments) if s.role == "agent" and s.engine), None
        )
        return CallState(
            room_sid=room_sid,
            started_at=conversation.started_at.timestamp(),
            generation=conversation.generation,
            summary=conversation.summary,
            engine=engine,
            turns=turns,
            last_segments=last,
        )
