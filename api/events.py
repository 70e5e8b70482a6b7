"""The history store: what LiveKit's webhook events say happened, applied once per event."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from livekit.protocol import egress as lkegress
from livekit.protocol import models as lkmodels
from livekit.protocol.webhook import WebhookEvent as WebhookEventProto
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from .log import logger
from .models import Conversation, Participant, Recording, WebhookEvent, new_id


def _from_seconds(value: int) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if value > 0 else None


def _from_millis(value: int) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if value > 0 else None


def _from_nanos(value: int) -> datetime | None:
    return datetime.fromtimestamp(value / 1e9, UTC) if value > 0 else None


def room_mode(metadata: str) -> str | None:
    try:
        mode = json.loads(metadata or "{}").get("mode")
    except (json.JSONDecodeError, AttributeError):
        return None
    return str(mode) if mode else None


def conversation_for_room(
    session: Session, room_sid: str, *, room_name: str = "", started_at: datetime | None = None
) -> Conversation:
    """Find or make the conversation for a room sid: room events, recordings and transcripts
    can each be the first to arrive. The time is a stand-in until the room's own arrives."""
    found = session.scalar(select(Conversation).where(Conversation.room_sid == room_sid))
    if found is None:
        found = Conversation(
            id=new_id(),
            room_sid=room_sid,
            room_name=room_name,
            started_at=started_at or datetime.now(UTC),
        )
        session.add(found)
    elif room_name and not found.room_name:
        found.room_name = room_name
    return found


def _conversation(session: Session, room: lkmodels.Room) -> Conversation:
    created = _from_millis(room.creation_time_ms) or _from_seconds(room.creation_time)
    found = conversation_for_room(session, room.sid, room_name=room.name, started_at=created)
    # The room's own creation time and name win over what a recording or an agent said.
    if created is not None:
        found.started_at = created
    if room.name:
        found.room_name = room.name
    if found.mode is None:
        found.mode = room_mode(room.metadata)
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


def _is_recorder(info: lkmodels.ParticipantInfo) -> bool:
    # The recorder (like LiveKit Egress) is a hidden participant, not someone in the call.
    return info.kind == lkmodels.ParticipantInfo.Kind.EGRESS


def _on_participant_joined(session: Session, event: WebhookEventProto) -> None:
    if _is_recorder(event.participant):
        _conversation(session, event.room)
        return
    _participant(session, _conversation(session, event.room), event.participant)


def _on_participant_left(session: Session, event: WebhookEventProto) -> None:
    if _is_recorder(event.participant):
        _conversation(session, event.room)
        return
    participant = _participant(session, _conversation(session, event.room), event.participant)
    participant.left_at = _from_seconds(event.created_at) or datetime.now(UTC)


# Reports about one egress may arrive late or out of order: a report never moves a
# recording back to an earlier stage, and within a stage the newest (updated_at) wins.
_STAGE = {
    "starting": 0,
    "active": 1,
    "ending": 2,
    "complete": 3,
    "failed": 3,
    "aborted": 3,
    "limit_reached": 3,
}
_KIND = {
    "room_composite": "room",
    "web": "room",
    "participant": "participant",
    "track_composite": "track",
    "track": "track",
}


def egress_status(info: lkegress.EgressInfo) -> str:
    try:
        return str(lkegress.EgressStatus.Name(info.status)).removeprefix("EGRESS_").lower()
    except ValueError:  # a status newer than our protocol package
        return "unknown"


def _is_stale(recording: Recording, status: str, updated_at: datetime | None) -> bool:
    stage, known = _STAGE.get(status, 0), _STAGE.get(recording.status, 0)
    if stage != known:
        return stage < known
    return (
        updated_at is not None
        and recording.updated_at is not None
        and updated_at < recording.updated_at
    )


def _file(info: lkegress.EgressInfo) -> lkegress.FileInfo | None:
    if info.file_results:
        return info.file_results[0]
    if info.WhichOneof("result") == "file":
        return info.file
    return None


def _egress_identity(info: lkegress.EgressInfo) -> str | None:
    """Whose audio an egress holds: a participant egress names them; a track egress names
    only the track, and Kaiwa's recorder adds the publisher to its details."""
    request = info.WhichOneof("request")
    if request == "participant":
        return info.participant.identity or None
    if request == "track" and info.details.startswith("{"):
        try:
            identity = json.loads(info.details).get("participant_identity")
        except (ValueError, AttributeError):
            return None
        return identity if isinstance(identity, str) and identity else None
    return None


def _on_egress(session: Session, event: WebhookEventProto) -> None:
    info = event.egress_info
    if not info.room_id:
        logger.warning("egress without a room ignored", extra={"egress_id": info.egress_id})
        return
    status = egress_status(info)
    updated_at = _from_nanos(info.updated_at)
    recording = session.scalar(select(Recording).where(Recording.egress_id == info.egress_id))
    if recording is None:
        conversation = conversation_for_room(
            session, info.room_id, room_name=info.room_name, started_at=_from_nanos(info.started_at)
        )
        request = info.WhichOneof("request") or ""
        recording = Recording(
            egress_id=info.egress_id,
            conversation_id=conversation.id,
            kind=_KIND.get(request, "room"),
            status=status,
        )
        session.add(recording)
    elif _is_stale(recording, status, updated_at):
        logger.info(
            "stale egress report ignored",
            extra={"egress_id": info.egress_id, "status": status, "known": recording.status},
        )
        return
    recording.status = status
    # A later report may name whose audio it is when the first did not.
    recording.participant_identity = recording.participant_identity or _egress_identity(info)
    recording.updated_at = updated_at or recording.updated_at
    recording.error = info.error or recording.error
    recording.started_at = _from_nanos(info.started_at) or recording.started_at
    recording.ended_at = _from_nanos(info.ended_at) or recording.ended_at
    recording.manifest_key = info.manifest_location or recording.manifest_key
    # A report without file details (an early one) keeps what an earlier report said.
    file = _file(info)
    if file is not None:
        recording.object_key = file.filename or recording.object_key
        recording.location = file.location or recording.location
        recording.size = file.size or recording.size
        recording.duration_s = file.duration / 1e9 if file.duration else recording.duration_s
    recording.partial = (
        status in ("failed", "aborted") and recording.object_key is not None and recording.size != 0
    )


HANDLERS: dict[str, Callable[[Session, WebhookEventProto], None]] = {
    "room_started": _on_room_started,
    "room_finished": _on_room_finished,
    "participant_joined": _on_participant_joined,
    "participant_left": _on_participant_left,
    "participant_connection_aborted": _on_participant_left,
    "egress_started": _on_egress,
    "egress_updated": _on_egress,
    "egress_ended": _on_egress,
}


def _has_subject(event: WebhookEventProto) -> bool:
    # LiveKit's egress events carry egress_info and usually no room; the others a room.
    if event.event.startswith("egress_"):
        return bool(event.egress_info.egress_id)
    return bool(event.room.sid)


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
                        room_sid=event.room.sid or event.egress_info.room_id or None,
                        created_at=_from_seconds(event.created_at) or datetime.now(UTC),
                    )
                )
                session.flush()
                handler = HANDLERS.get(event.event)
                if handler is not None and _has_subject(event):
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
