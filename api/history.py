"""The history store: what LiveKit's events say happened, applied exactly once per event."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from livekit.protocol import models as lkmodels
from livekit.protocol.webhook import WebhookEvent as WebhookEventProto
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .models import Conversation, Participant, WebhookEvent

logger = logging.getLogger("kaiwa.api")


def _from_seconds(value: int) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value > 0 else None


def _from_millis(value: int) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if value > 0 else None


def _room_mode(metadata: str) -> str | None:
    try:
        mode = json.loads(metadata or "{}").get("mode")
    except (json.JSONDecodeError, AttributeError):
        return None
    return str(mode) if mode else None


def _conversation(session: Session, room: lkmodels.Room) -> Conversation:
    """Find or make the conversation for a room: events can arrive in any order."""
    found = session.scalar(select(Conversation).where(Conversation.room_sid == room.sid))
    if found is None:
        found = Conversation(room_sid=room.sid, room_name=room.name)
        session.add(found)
    if found.mode is None:
        found.mode = _room_mode(room.metadata)
    if found.started_at is None:
        found.started_at = _from_seconds(room.creation_time)
    return found


def _participant(
    session: Session, conversation: Conversation, info: lkmodels.ParticipantInfo
) -> Participant:
    found = session.scalar(select(Participant).where(Participant.participant_sid == info.sid))
    if found is None:
        found = Participant(
            conversation=conversation,
            participant_sid=info.sid,
            identity=info.identity,
            name=info.name or None,
            kind=lkmodels.ParticipantInfo.Kind.Name(info.kind).lower(),
            language=info.attributes.get("language") or None,
        )
        session.add(found)
    if found.joined_at is None:
        found.joined_at = _from_millis(info.joined_at_ms) or _from_seconds(info.joined_at)
    return found


def _on_room_started(session: Session, event: WebhookEventProto) -> None:
    _conversation(session, event.room)


def _on_room_finished(session: Session, event: WebhookEventProto) -> None:
    conversation = _conversation(session, event.room)
    conversation.ended_at = _from_seconds(event.created_at) or datetime.now(UTC)


def _on_participant_joined(session: Session, event: WebhookEventProto) -> None:
    _participant(session, _conversation(session, event.room), event.participant)


def _on_participant_left(session: Session, event: WebhookEventProto) -> None:
    participant = _participant(session, _conversation(session, event.room), event.participant)
    participant.left_at = _from_seconds(event.created_at) or datetime.now(UTC)


HANDLERS: dict[str, Callable[[Session, WebhookEventProto], None]] = {
    "room_started": _on_room_started,
    "room_finished": _on_room_finished,
    "participant_joined": _on_participant_joined,
    "participant_left": _on_participant_left,
    "participant_connection_aborted": _on_participant_left,
}


def apply_event(sessions: sessionmaker[Session], event: WebhookEventProto) -> bool:
    """Record the event and its effects in one transaction. False if it was seen before.

    Deliveries may be retried, replayed or concurrent: the event id's primary key makes the
    second one fail, and with it all its effects.
    """
    for attempt in range(3):
        try:
            with sessions.begin() as session:
                if session.get(WebhookEvent, event.id) is not None:
                    return False
                session.add(
                    WebhookEvent(
                        id=event.id,
                        event=event.event,
                        room_sid=event.room.sid or None,
                        created_at=_from_seconds(event.created_at) or datetime.now(UTC),
                    )
                )
                session.flush()
                handler = HANDLERS.get(event.event)
                if handler is not None and event.room.sid:
                    handler(session, event)
            return True
        except IntegrityError:
            # Either this event was stored by a concurrent delivery (then it is a duplicate),
            # or another event created the same conversation or participant at the same
            # moment (then a retry finds that row and succeeds).
            with sessions() as session:
                if session.get(WebhookEvent, event.id) is not None:
                    return False
            logger.info(
                "retrying webhook event after a concurrent insert", extra={"attempt": attempt}
            )
    raise RuntimeError("webhook event could not be stored after 3 attempts")
