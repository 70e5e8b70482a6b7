"""What one client may take of a call or of the agents: calls held per address, changes per
caller, and a rejoin ticket that opens its own call and nothing after it. The API runs here
on the session stack's LiveKit, Redis and database, so LiveKit's own webhooks tell it which
calls began and ended."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import redis.asyncio as aioredis
from fastapi.testclient import TestClient
from livekit import api as lkapi
from livekit import rtc

from api.calls_held import CallsHeld
from api.deps import ATTRIBUTE_WRITES_PER_MINUTE
from api.main import create_app
from api.settings import Settings
from api.tokens import REJOIN_AUDIENCE
from kaiwa.stack.services import Stack

from .support.apiclient import admin_headers

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(stack: Stack) -> Settings:
    cfg = stack.cfg
    return Settings(
        kaiwa_env="test",
        livekit_url=cfg.livekit_url,
        livekit_api_key=cfg.secrets.livekit_api_key,
        livekit_api_secret=cfg.secrets.livekit_api_secret,
        redis_url=cfg.redis_url,
        # The stack's own database: LiveKit's webhooks reach the stack's API, which records
        # the rooms that began and ended there.
        database_url=cfg.effective_database_url,
        admin_password=cfg.secrets.admin_password,
        llm_base_url=None,
        calls_per_address=2,
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    # An address of this test's own: the counts live in the session's Redis.
    address = "198.18.{}.{}".format(*secrets.token_bytes(2))
    with TestClient(create_app(settings), client=(address, 50000)) as client:
        yield client


def new_call(api: TestClient) -> Any:
    # Not recorded: nothing here is about recordings, and the recorder need not join.
    return api.post("/api/token", json={"name": "Aiko", "mode": "interpret", "record": False})


async def joined(minted: dict[str, Any]) -> rtc.Room:
    """In the call, with its agent: a call ended before its agent arrives is made again by
    the agent's own join (LiveKit creates a room on any join)."""
    room = rtc.Room()
    await room.connect(minted["url"], minted["token"])
    deadline = time.monotonic() + 60
    while not any(
        p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        for p in room.remote_participants.values()
    ):
        assert time.monotonic() < deadline, "no agent joined the call"
        await asyncio.sleep(0.2)
    return room


async def end_call(api: TestClient, stack: Stack, settings: Settings, room: str) -> None:
    """As an operator ends a call: the room is closed, LiveKit lists it no more, and says so
    by webhook (posted once the room's participants are gone, the agent too, and retried)."""
    async with lkapi.LiveKitAPI(
        stack.cfg.livekit_url, settings.livekit_api_key, settings.livekit_api_secret
    ) as livekit:
        await livekit.room.delete_room(lkapi.DeleteRoomRequest(room=room))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listing = api.get(
                "/api/conversations", params={"room": room}, headers=admin_headers(settings)
            ).json()
            listed = await livekit.room.list_rooms(lkapi.ListRoomsRequest(names=[room]))
            ended = listing["items"] and all(c["ended_at"] for c in listing["items"])
            if ended and not listed.rooms:
                return
            await asyncio.sleep(0.3)
    raise AssertionError(f"room {room} never ended: {listing}, {listed}")


def old_ticket(settings: Settings, room: str, identity: str, age_s: float) -> str:
    """A genuine ticket, issued `age_s` ago: as a former participant still holds one."""
    issued = int(time.time() - age_s)
    claims = {
        "iss": settings.livekit_api_key,
        "aud": REJOIN_AUDIENCE,
        "sub": identity,
        "room": room,
        "iat": issued,
        "exp": issued + 6 * 3600,
    }
    return jwt.encode(claims, settings.livekit_api_secret, algorithm="HS256")


def rejoin(api: TestClient, room: str, identity: str, ticket: str) -> Any:
    body = {"name": "Aiko", "mode": "interpret", "room": room, "identity": identity}
    return api.post("/api/token", json={**body, "rejoin": ticket})


# ---- calls per address -----------------------------------------------------------------


async def test_one_address_holds_at_most_its_calls_until_one_ends(
    api: TestClient, stack: Stack, settings: Settings
) -> None:
    first, second = new_call(api), new_call(api)
    assert first.status_code == second.status_code == 200
    room = await joined(first.json())
    try:
        third = new_call(api)
        assert third.status_code == 429, third.text
        assert 1 <= int(third.headers["Retry-After"]) <= 3600
        # Another address is not held back by this one.
        with TestClient(create_app(settings), client=("198.18.255.1", 50000)) as other:
            assert new_call(other).status_code == 200
        # A reload of a held call, and a second device joining it by code, bring no agent.
        again = rejoin(api, first.json()["room"], first.json()["identity"], first.json()["rejoin"])
        assert again.status_code == 200
        assert (
            api.post(
                "/api/token",
                json={"name": "Ken", "mode": "interpret", "room": first.json()["room"]},
            ).status_code
            == 200
        )
    finally:
        await room.disconnect()
    await end_call(api, stack, settings, first.json()["room"])
    assert new_call(api).status_code == 200


async def test_a_call_ended_before_its_agent_arrived_leaves_no_room(
    api: TestClient, stack: Stack, settings: Settings
) -> None:
    """The caller joins and the call is closed at once, before the agent it brought arrives:
    the agent's join makes the room again, and it must close it and leave, not sit there
    holding a worker slot and its caller's place under the cap."""
    minted = new_call(api).json()
    name = minted["room"]
    room = rtc.Room()
    await room.connect(minted["url"], minted["token"])
    await room.disconnect()
    async with lkapi.LiveKitAPI(
        stack.cfg.livekit_url, settings.livekit_api_key, settings.livekit_api_secret
    ) as livekit:
        await livekit.room.delete_room(lkapi.DeleteRoomRequest(room=name))
        deadline = time.monotonic() + 60
        while True:
            items = api.get(
                "/api/conversations", params={"room": name}, headers=admin_headers(settings)
            ).json()["items"]
            listed = await livekit.room.list_rooms(lkapi.ListRoomsRequest(names=[name]))
            agent_came = any(p.startswith("agent-") for c in items for p in c["participants"])
            if agent_came and all(c["ended_at"] for c in items) and not listed.rooms:
                break
            assert time.monotonic() < deadline, f"a room left behind: {items}"
            await asyncio.sleep(0.5)
    assert new_call(api).status_code == 200
    assert new_call(api).status_code == 200  # the cap (2) counts no call of the first


async def test_a_call_whose_token_was_never_used_stops_counting_when_it_expires(
    redis_url: str,
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    calls = CallsHeld(client, limit=1, pending_s=1)
    address = f"test-{secrets.token_hex(4)}"

    async def nothing_live(names: list[str]) -> set[str]:
        return set()

    try:
        live = started = nothing_live
        assert await calls.admit(address, "r-1", live=live, started=started) is None
        assert await calls.admit(address, "r-2", live=live, started=started) is not None
        await asyncio.sleep(1.2)  # r-1's token could no longer create its room
        assert await calls.admit(address, "r-3", live=live, started=started) is None
    finally:
        await client.aclose()


# ---- changes per caller --------------------------------------------------------------------


async def test_a_callers_changes_are_limited_per_minute(api: TestClient) -> None:
    minted = new_call(api).json()
    room = await joined(minted)
    try:
        ticket = {"Authorization": f"Bearer {minted['rejoin']}"}
        statuses = [
            api.put("/api/call/language", json={"language": lang}, headers=ticket).status_code
            for lang in ["vi", "ja"] * ATTRIBUTE_WRITES_PER_MINUTE
        ]
        # The limiter counts in fixed minutes: a burst that straddles a minute's end is
        # counted in two, so at most twice the limit gets through, never all of them.
        assert statuses.count(204) >= ATTRIBUTE_WRITES_PER_MINUTE
        assert statuses.count(204) < len(statuses), statuses
        assert set(statuses) == {204, 429}
        refused = api.put("/api/call/voice-replies", json={"on": False}, headers=ticket)
        if refused.status_code == 429:
            assert int(refused.headers["Retry-After"]) <= 60
    finally:
        await room.disconnect()


# ---- rejoin tickets ------------------------------------------------------------------------


async def test_a_ticket_rejoins_its_call_and_is_not_renewed(
    api: TestClient, stack: Stack, settings: Settings
) -> None:
    minted = new_call(api).json()
    room_name, identity = minted["room"], minted["identity"]
    # Before the first connection: the first token could still make the room.
    assert rejoin(api, room_name, identity, minted["rejoin"]).status_code == 200
    room = await joined(minted)
    try:
        # An old ticket rejoins a call in progress, and comes back as it was.
        ticket = old_ticket(settings, room_name, identity, age_s=3 * 3600)
        again = rejoin(api, room_name, identity, ticket)
        assert again.status_code == 200, again.text
        assert again.json()["rejoin"] == ticket
    finally:
        await room.disconnect()
    await end_call(api, stack, settings, room_name)
    # After the call, the ticket opens nothing: not the room name, not its transcript.
    over = rejoin(api, room_name, identity, ticket)
    assert over.status_code == 404, over.text


def test_a_ticket_for_a_room_nobody_joined_opens_nothing_later(
    api: TestClient, settings: Settings
) -> None:
    minted = new_call(api).json()
    ticket = old_ticket(settings, minted["room"], minted["identity"], age_s=2 * 3600)
    assert rejoin(api, minted["room"], minted["identity"], ticket).status_code == 404
