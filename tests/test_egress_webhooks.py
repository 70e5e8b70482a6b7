"""Egress reports become one recording row each, in any order, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.db import make_engine, make_sessionmaker, migrate
from api.events import apply_event
from api.main import create_app
from api.models import Conversation, Recording, WebhookEvent
from api.settings import Settings
from core.webhooks import sign_webhook

from .support import events

pytestmark = pytest.mark.integration

T0 = 1_790_000_000.0  # a start time, in seconds since the epoch


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    migrate(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def recordings(sessions: sessionmaker[Session]) -> list[Recording]:
    with sessions() as session:
        return list(session.scalars(select(Recording)))


def test_started_updated_ended_make_one_complete_recording(
    sessions: sessionmaker[Session],
) -> None:
    flow = [
        ("egress_started", events.egress_info("starting", updated_s=T0, started_s=T0)),
        ("egress_updated", events.egress_info("active", updated_s=T0 + 1, started_s=T0)),
        (
            "egress_ended",
            events.egress_info(
                "complete",
                updated_s=T0 + 62,
                started_s=T0,
                ended_s=T0 + 61.5,
                filename="recordings/dialog-abc/EG_test.ogg",
                size=123_456,
                duration_s=61.5,
                manifest="recordings/dialog-abc/EG_test.json",
            ),
        ),
    ]
    seen = []
    for kind, info in flow:
        assert apply_event(sessions, events.egress_event(kind, info)) is True
        (recording,) = recordings(sessions)
        seen.append(recording.status)
    assert seen == ["starting", "active", "complete"]
    assert recording.kind == "room"
    assert recording.partial is False
    assert recording.object_key == "recordings/dialog-abc/EG_test.ogg"
    assert recording.size == 123_456
    assert recording.duration_s == pytest.approx(61.5)
    assert recording.manifest_key == "recordings/dialog-abc/EG_test.json"
    assert recording.started_at is not None and recording.ended_at is not None
    # Nanoseconds in, seconds apart out.
    assert (recording.ended_at - recording.started_at).total_seconds() == pytest.approx(61.5)
    with sessions() as session:
        (conversation,) = session.scalars(select(Conversation))
        assert conversation.room_sid == "RM_test"
        assert conversation.id == recording.conversation_id


def test_duplicate_event_id_makes_one_row(sessions: sessionmaker[Session]) -> None:
    evt = events.egress_event("egress_started", events.egress_info("starting", updated_s=T0))
    assert apply_event(sessions, evt) is True
    assert apply_event(sessions, evt) is False
    assert len(recordings(sessions)) == 1
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(WebhookEvent)) == 1


def test_late_update_does_not_undo_completion(sessions: sessionmaker[Session]) -> None:
    """Ended arrives before updated (retries, several senders): complete stays complete."""
    ended = events.egress_info(
        "complete", updated_s=T0 + 60, ended_s=T0 + 60, filename="recordings/a.ogg", size=10
    )
    late = events.egress_info("active", updated_s=T0 + 5)
    apply_event(sessions, events.egress_event("egress_ended", ended))
    apply_event(sessions, events.egress_event("egress_updated", late))
    apply_event(
        sessions,
        events.egress_event("egress_started", events.egress_info("starting", updated_s=T0)),
    )
    (recording,) = recordings(sessions)
    assert recording.status == "complete"
    assert recording.object_key == "recordings/a.ogg"


def test_newer_report_in_the_same_stage_wins(sessions: sessionmaker[Session]) -> None:
    newer = events.egress_info("failed", updated_s=T0 + 9, error="uploader gave up")
    older = events.egress_info("complete", updated_s=T0 + 8, filename="recordings/a.ogg", size=10)
    apply_event(sessions, events.egress_event("egress_ended", newer))
    apply_event(sessions, events.egress_event("egress_ended", older))
    (recording,) = recordings(sessions)
    assert recording.status == "failed"
    assert recording.error == "uploader gave up"


def test_failed_with_a_file_is_partial(sessions: sessionmaker[Session]) -> None:
    info = events.egress_info(
        "failed",
        updated_s=T0 + 30,
        started_s=T0,
        ended_s=T0 + 29,
        filename="recordings/x/EG_test.ogg",
        size=4096,
        error="S3 upload failed; partial file kept",
    )
    apply_event(sessions, events.egress_event("egress_ended", info))
    (recording,) = recordings(sessions)
    assert (recording.status, recording.partial) == ("failed", True)
    assert recording.error == "S3 upload failed; partial file kept"


def test_aborted_without_a_file_is_not_partial(sessions: sessionmaker[Session]) -> None:
    info = events.egress_info("aborted", updated_s=T0 + 1, error="room closed")
    apply_event(sessions, events.egress_event("egress_ended", info))
    (recording,) = recordings(sessions)
    assert (recording.status, recording.partial, recording.object_key) == (
        "aborted",
        False,
        None,
    )


def test_participant_and_track_egress_kinds(sessions: sessionmaker[Session]) -> None:
    participant = events.egress_info(
        "active", updated_s=T0, egress_id="EG_p", kind="participant", identity="caller-1"
    )
    track = events.egress_info("active", updated_s=T0, egress_id="EG_t", kind="track")
    apply_event(sessions, events.egress_event("egress_started", participant))
    apply_event(sessions, events.egress_event("egress_started", track))
    by_id = {r.egress_id: r for r in recordings(sessions)}
    assert (by_id["EG_p"].kind, by_id["EG_p"].participant_identity) == ("participant", "caller-1")
    assert (by_id["EG_t"].kind, by_id["EG_t"].participant_identity) == ("track", None)
    assert len({r.conversation_id for r in by_id.values()}) == 1


def test_the_recorders_track_egress_names_its_speaker(sessions: sessionmaker[Session]) -> None:
    # Kaiwa's recorder names the track's publisher in the details (a track egress request has
    # no identity); a details string that is not our JSON names nobody.
    ours = events.egress_info("active", updated_s=T0, egress_id="EG_ours", kind="track")
    ours.details = json.dumps({"participant_identity": "caller-1", "track_name": "mic"})
    other = events.egress_info("active", updated_s=T0, egress_id="EG_other", kind="track")
    other.details = "{not json"
    apply_event(sessions, events.egress_event("egress_started", ours))
    apply_event(sessions, events.egress_event("egress_started", other))
    by_id = {r.egress_id: r for r in recordings(sessions)}
    assert by_id["EG_ours"].participant_identity == "caller-1"
    assert by_id["EG_other"].participant_identity is None


def test_recording_before_room_event_joins_the_same_conversation(
    sessions: sessionmaker[Session],
) -> None:
    apply_event(
        sessions,
        events.egress_event("egress_started", events.egress_info("starting", updated_s=T0)),
    )
    room = events.room(sid="RM_test", name="dialog-abc")
    apply_event(sessions, events.event("room_started", room=room))
    with sessions() as session:
        (conversation,) = session.scalars(select(Conversation))
        # The room's own creation time replaces the stand-in the recording gave.
        assert conversation.started_at.timestamp() == room.creation_time
        assert conversation.room_name == "dialog-abc"
    assert recordings(sessions)[0].conversation_id == conversation.id


def test_signed_egress_webhook_through_the_endpoint(database_url: str, tmp_path: Path) -> None:
    """The path real LiveKit Egress takes: a signed POST with egress_info and no room."""
    key, secret = "APIkey", "s" * 40
    settings = Settings(
        livekit_api_key=key,
        livekit_api_secret=secret,
        database_url=database_url,
        web_dir=tmp_path / "no-web",
    )
    info = events.egress_info(
        "complete", updated_s=time.time(), filename="recordings/a.ogg", size=5
    )
    body = events.as_body(events.egress_event("egress_ended", info))
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": sign_webhook(body, key, secret)}
        first = client.post("/livekit/webhook", content=body, headers=headers)
        again = client.post("/livekit/webhook", content=body, headers=headers)
        forged = client.post(
            "/livekit/webhook",
            content=body,
            headers={"Authorization": sign_webhook(body, key, "t" * 40)},
        )
    assert first.status_code == 200 and first.json()["duplicate"] is False
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert forged.status_code == 401
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            (recording,) = session.scalars(select(Recording))
            assert (recording.status, recording.object_key) == ("complete", "recordings/a.ogg")
    finally:
        engine.dispose()
