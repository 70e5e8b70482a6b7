"""The history store applies each webhook event once, in any order, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from api.db import make_engine, make_sessionmaker, migrate
from api.events import apply_event
from api.models import Conversation, Participant, WebhookEvent

from .support import events

pytestmark = pytest.mark.integration


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    migrate(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def count(sessions: sessionmaker[Session], model: type[object]) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_migrations_are_idempotent(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    migrate(engine)
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0006"


def test_sqlite_runs_in_wal_with_full_sync(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'kaiwa.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_room_and_participant_events_build_the_conversation(
    sessions: sessionmaker[Session],
) -> None:
    room = events.room(mode="interpret")
    agent = events.participant(sid="PA_agent", identity="agent-AJ_1", kind=4, language="")
    # The recorder: hidden, kind EGRESS (2), not someone in the call.
    recorder = events.participant(sid="PA_rec", identity="recorder-x", kind=2, language="")
    for evt in [
        events.event("room_started", room=room),
        events.event("participant_joined", room=room, participant=recorder),
        events.event("participant_joined", room=room, participant=events.participant()),
        events.event("participant_joined", room=room, participant=agent),
        events.event("participant_left", room=room, participant=recorder),
        events.event("participant_left", room=room, participant=events.participant()),
        events.event("room_finished", room=room),
    ]:
        assert apply_event(sessions, evt) is True

    with sessions() as session:
        (conversation,) = session.scalars(select(Conversation)).all()
        assert conversation.room_sid == "RM_test"
        assert conversation.mode == "interpret"
        assert conversation.started_at is not None and conversation.ended_at is not None
        people = {p.identity: p for p in conversation.participants}
        assert set(people) == {"caller-1", "agent-AJ_1"}
        assert people["caller-1"].language == "en"
        assert people["caller-1"].left_at is not None
        assert people["agent-AJ_1"].kind == "agent"
        assert people["agent-AJ_1"].left_at is None


def test_replayed_event_is_stored_once(sessions: sessionmaker[Session]) -> None:
    evt = events.event("participant_joined", room=events.room(), participant=events.participant())
    assert apply_event(sessions, evt) is True
    assert apply_event(sessions, evt) is False
    assert count(sessions, WebhookEvent) == 1
    assert count(sessions, Participant) == 1


def test_events_out_of_order_still_make_one_conversation(sessions: sessionmaker[Session]) -> None:
    room = events.room()
    apply_event(
        sessions, events.event("participant_left", room=room, participant=events.participant())
    )
    apply_event(
        sessions, events.event("participant_joined", room=room, participant=events.participant())
    )
    apply_event(sessions, events.event("room_started", room=room))
    assert count(sessions, Conversation) == 1
    assert count(sessions, Participant) == 1


def test_concurrent_deliveries_store_each_event_once(sessions: sessionmaker[Session]) -> None:
    """LiveKit retries while the first attempt is still running: both may arrive at once."""
    room = events.room()
    batch = [
        events.event(
            "participant_joined",
            room=room,
            participant=events.participant(sid=f"PA_{i}", identity=f"caller-{i}"),
        )
        for i in range(8)
    ]
    deliveries = batch * 3
    with ThreadPoolExecutor(max_workers=6) as pool:
        stored = list(pool.map(lambda e: apply_event(sessions, e), deliveries))
    assert sum(stored) == len(batch)
    assert count(sessions, WebhookEvent) == len(batch)
    assert count(sessions, Participant) == len(batch)
    assert count(sessions, Conversation) == 1
