"""The history store as the admin console sees it: lists, details, transcripts, deletion.

Plain blocking functions, so the routes run them in a worker thread and the search bench
times exactly what the API does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from core.payloads import Role, SegmentKind
from core.phone import mask_identity, mask_name

from .log import logger
from .models import AuditEntry, Conversation, Participant, Recording, Segment
from .schemas import (
    ConversationDetail,
    ConversationPage,
    ConversationSummary,
    Match,
    ParticipantOut,
    RecordingOut,
    SegmentOut,
    Transcript,
)
from .search import ConversationFilters, Cursor, find_conversations, find_matches
from .storage import delete_objects, storage_key

MATCHES_PER_CONVERSATION = 3


def live_conversation(session: Session, conversation_id: str) -> Conversation | None:
    """The conversation, unless it does not exist or was deleted."""
    found = session.get(Conversation, conversation_id)
    return found if found is not None and found.deleted_at is None else None


def _duration(conversation: Conversation) -> float | None:
    if conversation.ended_at is None:
        return None
    return max(0.0, (conversation.ended_at - conversation.started_at).total_seconds())


def _room_recording(recordings: Sequence[Recording]) -> Recording | None:
    rooms = [r for r in recordings if r.kind == "room"]
    return min(
        rooms, key=lambda r: (r.started_at is None, r.started_at, r.created_at), default=None
    )


def _recording_status(recordings: Sequence[Recording]) -> str | None:
    """The newest room recording's status: after a recorder restart, the continuation's."""
    rooms = [r for r in recordings if r.kind == "room"]
    if rooms:
        return max(rooms, key=lambda r: (r.started_at is not None, r.started_at)).status
    latest = max(recordings, key=lambda r: r.updated_at or r.created_at, default=None)
    return latest.status if latest is not None else None


class _Facts:
    """What the list shows about each conversation besides its own row, in four queries."""

    def __init__(self, session: Session, ids: list[str]) -> None:
        self.identities: dict[str, list[str]] = defaultdict(list)
        self.languages: dict[str, set[str]] = defaultdict(set)
        self.segment_counts: dict[str, int] = defaultdict(int)
        self.recordings: dict[str, list[Recording]] = defaultdict(list)
        if not ids:
            return
        participants = session.execute(
            select(Participant.conversation_id, Participant.identity, Participant.language)
            .where(Participant.conversation_id.in_(ids))
            .order_by(Participant.joined_at)
        )
        for conversation_id, identity, language in participants:
            if identity not in self.identities[conversation_id]:
                self.identities[conversation_id].append(identity)
            if language:
                self.languages[conversation_id].add(language)
        per_language = session.execute(
            select(Segment.conversation_id, Segment.language, func.count())
            .where(Segment.conversation_id.in_(ids))
            .group_by(Segment.conversation_id, Segment.language)
        )
        for conversation_id, language, count in per_language:
            self.languages[conversation_id].add(language)
            self.segment_counts[conversation_id] += count
        for recording in session.scalars(
            select(Recording).where(Recording.conversation_id.in_(ids))
        ):
            self.recordings[recording.conversation_id].append(recording)

    def fields(self, conversation: Conversation) -> dict[str, object]:
        recordings = self.recordings[conversation.id]
        return {
            "id": conversation.id,
            "room_name": conversation.room_name,
            "room_sid": conversation.room_sid,
            "mode": conversation.mode,
            "started_at": conversation.started_at,
            "ended_at": conversation.ended_at,
            "duration_s": _duration(conversation),
            "languages": sorted(self.languages[conversation.id]),
            "has_recording": any(r.object_key is not None for r in recordings),
            "recording_status": _recording_status(recordings),
            "recording_partial": any(r.partial for r in recordings if r.kind == "room"),
            "segment_count": self.segment_counts[conversation.id],
        }


def list_conversations(
    session: Session, filters: ConversationFilters, *, limit: int, cursor: Cursor | None
) -> ConversationPage:
    """One page of the history list, newest first; the API's GET /api/conversations."""
    rows = find_conversations(session, filters, limit=limit + 1, after=cursor)
    page, more = rows[:limit], len(rows) > limit
    ids = [c.id for c in page]
    facts = _Facts(session, ids)
    matches = (
        find_matches(session, ids, filters.query, per_conversation=MATCHES_PER_CONVERSATION)
        if filters.query is not None
        else None
    )
    items = [
        ConversationSummary.model_validate(
            {
                **facts.fields(c),
                "participants": [mask_identity(i) for i in facts.identities[c.id]],
                "matches": None
                if matches is None
                else [
                    Match(
                        segment_id=m.segment_id, language=m.language, text=m.text, start_s=m.start_s
                    )
                    for m in matches.get(c.id, [])
                ],
            }
        )
        for c in page
    ]
    next_cursor = Cursor(page[-1].started_at, page[-1].id).encode() if more and page else None
    return ConversationPage(items=items, next_cursor=next_cursor)


def _segments(session: Session, conversation_id: str) -> list[SegmentOut]:
    """The transcript, each speaker's identity masked (core/phone.py): a detail's too, so
    transcripts, exports and the console's speaker labels all name a phone caller alike."""
    segments = session.scalars(
        select(Segment)
        .where(Segment.conversation_id == conversation_id)
        .options(selectinload(Segment.translations))
        .order_by(Segment.start_s, Segment.seq)
    )
    return [
        SegmentOut(
            id=s.id,
            participant_identity=mask_identity(s.participant_identity),
            language=s.language,
            text=s.text,
            start_s=s.start_s,
            end_s=s.end_s,
            translations={t.language: t.text for t in s.translations},
            role=cast(Role | None, s.role),  # written only through SegmentIn's Role
            engine=s.engine,
            interrupted=s.interrupted,
            kind=cast(SegmentKind, s.kind),  # written only through SegmentIn's SegmentKind
            timings=s.timings or {},
        )
        for s in segments
    ]


def transcript(session: Session, conversation_id: str) -> Transcript | None:
    if live_conversation(session, conversation_id) is None:
        return None
    return Transcript(conversation_id=conversation_id, segments=_segments(session, conversation_id))


def room_transcript(session: Session, room_name: str) -> Transcript | None:
    """The transcript of the newest conversation held in the room of that name: a caller's
    current call, or the one just ended."""
    newest = session.scalars(
        select(Conversation)
        .where(Conversation.room_name == room_name, Conversation.deleted_at.is_(None))
        .order_by(Conversation.started_at.desc(), Conversation.id.desc())
        .limit(1)
    ).first()
    if newest is None:
        return None
    return Transcript(conversation_id=newest.id, segments=_segments(session, newest.id))


def _recording_out(recording: Recording, room: Recording | None) -> RecordingOut:
    offset = None
    if recording is room:
        offset = 0.0
    elif room is not None and room.started_at and recording.started_at:
        offset = (recording.started_at - room.started_at).total_seconds()
    return RecordingOut(
        id=recording.id,
        kind=recording.kind,
        participant_identity=(
            mask_identity(recording.participant_identity)
            if recording.participant_identity is not None
            else None
        ),
        status=recording.status,
        partial=recording.partial,
        error=recording.error,
        started_at=recording.started_at,
        ended_at=recording.ended_at,
        offset_s=offset,
        duration_s=recording.duration_s,
        size=recording.size,
    )


def conversation_detail(session: Session, conversation_id: str) -> ConversationDetail | None:
    conversation = live_conversation(session, conversation_id)
    if conversation is None:
        return None
    facts = _Facts(session, [conversation_id])
    recordings = sorted(
        facts.recordings[conversation_id],
        key=lambda r: (r.kind != "room", r.started_at is None, r.started_at, r.created_at),
    )
    room = _room_recording(recordings)
    return ConversationDetail.model_validate(
        {
            **facts.fields(conversation),
            "participants": [
                ParticipantOut(
                    identity=p.identity,
                    name=p.name,
                    masked_identity=mask_identity(p.identity),
                    # Only a phone caller's name is LiveKit's (`Phone <number>`); others
                    # chose their own, and a number in it is theirs to show.
                    masked_name=mask_name(p.name) if p.name and p.kind == "sip" else p.name,
                    kind=p.kind,
                    language=p.language,
                    joined_at=p.joined_at,
                    left_at=p.left_at,
                )
                for p in conversation.participants
            ],
            "transcript": _segments(session, conversation_id),
            "summary": conversation.summary,
            "usage": conversation.usage,
            "recordings": [_recording_out(r, room) for r in recordings],
        }
    )


def delete_conversation(
    sessions: sessionmaker[Session], s3: Any, bucket: str, conversation_id: str, *, actor: str
) -> list[str] | None:
    """Delete the recordings' objects, then hide the conversation and write the audit entry.

    None if there is no such (live) conversation. Objects go first: if S3 fails, nothing
    changed and the admin can try again; deleting a key twice is harmless in S3.
    """
    with sessions() as session:
        if live_conversation(session, conversation_id) is None:
            return None
        recordings = session.scalars(
            select(Recording).where(Recording.conversation_id == conversation_id)
        ).all()
    keys = sorted(
        {r.object_key for r in recordings if r.object_key}
        | {storage_key(r.manifest_key, bucket) for r in recordings if r.manifest_key}
    )
    delete_objects(s3, bucket, keys)
    with sessions.begin() as session:
        conversation = live_conversation(session, conversation_id)
        if conversation is None:  # a concurrent delete won
            return None
        conversation.deleted_at = datetime.now(UTC)
        session.add(
            AuditEntry(
                actor=actor,
                action="conversation.delete",
                target_type="conversation",
                target_id=conversation_id,
                at=conversation.deleted_at,
                details={"object_keys": keys, "recordings": [r.id for r in recordings]},
            )
        )
    logger.info(
        "conversation deleted",
        extra={"conversation_id": conversation_id, "objects": len(keys), "actor": actor},
    )
    return keys


def rooms_started(session: Session, room_names: Sequence[str]) -> set[str]:
    """Those of the names whose room ever began (LiveKit told us, by webhook)."""
    found = session.scalars(
        select(Conversation.room_name).where(Conversation.room_name.in_(room_names))
    )
    return set(found)


def call_open(session: Session, room_name: str) -> bool:
    """Whether a call in the room of that name began and has not been seen to end (a room
    whose node died ends without a webhook, and its callers may still come back)."""
    found = session.scalar(
        select(Conversation.id)
        .where(
            Conversation.room_name == room_name,
            Conversation.ended_at.is_(None),
            Conversation.deleted_at.is_(None),
        )
        .limit(1)
    )
    return found is not None
