"""On the real stack: nobody takes a caller's place, poses as the agent, or listens in on a
dialog; and the stack's own services listen on loopback only."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import psutil
import pytest
from livekit import rtc
from livekit.agents.voice import RemoteSession

from kaiwa.caller import SyntheticCaller
from kaiwa.stack.services import Stack

from .support.calls import after_greeting, dialog_caller

pytestmark = pytest.mark.e2e


@pytest.fixture
async def alice(stack: Stack) -> AsyncIterator[SyntheticCaller]:
    caller = SyntheticCaller(stack.cfg.api_url, name="Alice", mode="interpret", language="en")
    await caller.join()
    try:
        yield caller
    finally:
        await caller.leave()


async def token(stack: Stack, **body: object) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.cfg.api_url) as client:
        return await client.post("/api/token", json={"name": "Mallory", **body})


async def test_nobody_takes_a_callers_place_without_its_ticket(
    stack: Stack, alice: SyntheticCaller
) -> None:
    place = {"room": alice.room_name, "identity": alice.identity, "mode": "interpret"}
    # The room code and the identity are not enough: both show on screen and in captions.
    refused = await token(stack, **place)
    assert refused.status_code == 403 and "rejoin ticket" in refused.json()["detail"]
    # Nor is another call's ticket.
    bob = SyntheticCaller(stack.cfg.api_url, name="Bob", mode="interpret")
    grant = await bob.request_token()
    assert (await token(stack, **place, rejoin=grant["rejoin"])).status_code == 403
    assert alice.room.isconnected()

    # Alice's own ticket rejoins her (a reload): same room, same identity.
    again = await token(stack, **place, rejoin=alice.rejoin)
    assert again.status_code == 200, again.text
    assert (again.json()["room"], again.json()["identity"]) == (alice.room_name, alice.identity)


async def test_a_caller_cannot_pose_as_the_agent(stack: Stack, alice: SyntheticCaller) -> None:
    mallory = SyntheticCaller(
        stack.cfg.api_url, name="Mallory", mode="interpret", room_name=alice.room_name
    )
    await mallory.join()
    try:
        for _ in range(100):
            if mallory.identity in alice.room.remote_participants:
                break
            await asyncio.sleep(0.1)
        me = mallory.room.local_participant
        # LiveKit refuses each (the token grants no update of one's own metadata); the SDK
        # may or may not report it, so what counts is what the others see.
        for attempt in (
            me.set_attributes({"lk.agent.state": "speaking", "kaiwa.mode": "dialog"}),
            me.set_name("Kaiwa interpreter"),
            me.set_metadata('{"mode": "dialog"}'),
        ):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(attempt, 5)
        await asyncio.sleep(1.0)
        seen = alice.room.remote_participants[mallory.identity or ""]
        assert "lk.agent.state" not in seen.attributes and seen.metadata != '{"mode": "dialog"}'
        assert seen.attributes.get("kaiwa.mode") == "interpret"
        assert seen.name == "Mallory" and seen.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    finally:
        await mallory.leave()


async def test_a_language_change_goes_through_the_api_and_is_checked(
    stack: Stack, alice: SyntheticCaller
) -> None:
    await alice.set_language("vi")
    # LiveKit tells the caller of the change the API made to its attributes.
    mine = alice.room.local_participant
    for _ in range(50):
        if mine.attributes.get("language") == "vi":
            break
        await asyncio.sleep(0.1)
    assert mine.attributes.get("language") == "vi"
    refused = await alice._as_caller("PUT", "/api/call/language", json={"language": "xx"})
    assert refused.status_code == 422
    forged = httpx.AsyncClient(base_url=stack.cfg.api_url)
    async with forged:
        anonymous = await forged.put("/api/call/language", json={"language": "ja"})
        with_livekit_token = await forged.put(
            "/api/call/language",
            json={"language": "ja"},
            headers={"Authorization": f"Bearer {alice.grant['token']}"},
        )
    assert anonymous.status_code == 401 and with_livekit_token.status_code == 401


async def test_nobody_else_joins_a_dialog_call(stack: Stack) -> None:
    dana = SyntheticCaller(stack.cfg.api_url, name="Dana", mode="dialog")
    await dana.join()
    try:
        for mode in ("dialog", "interpret"):
            response = await token(stack, room=dana.room_name, mode=mode)
            assert response.status_code == 403, response.text
            assert "one caller" in response.json()["detail"]
        # Dana herself comes back after a reload.
        again = await token(
            stack, room=dana.room_name, identity=dana.identity, rejoin=dana.rejoin, mode="dialog"
        )
        assert again.status_code == 200, again.text
    finally:
        await dana.leave()


@pytest.mark.models
async def test_a_caller_neither_watches_nor_drives_the_dialog_agents_session(
    stack: Stack,
) -> None:
    """By default livekit-agents opens an AgentSession to everyone in its room (topic
    `lk.agent.session`): its events, transcripts and usage among them, go to every
    participant, and any of them may read its history, type into it or turn its audio off.
    Here the client LiveKit ships for that, RemoteSession, gets nothing out of the agent."""
    async with dialog_caller(stack, "Erin") as erin:
        agent = await erin.wait_for_agent()
        remote = RemoteSession.from_room(erin.room, agent.identity)
        seen: list[str] = []
        for event in ("agent_state_changed", "conversation_item_added", "session_usage_updated"):
            remote.on(event, lambda _message, event=event: seen.append(event))
        await remote.start()
        try:
            await after_greeting(erin)  # the agent spoke: its state changed, a turn was added
            with pytest.raises(TimeoutError):
                await remote.wait_for_ready(timeout=5)
        finally:
            await remote.aclose()
        assert seen == []


def test_the_stacks_services_listen_on_loopback_only(stack: Stack) -> None:
    """Each service's own port (media sockets of WebRTC aside) is bound to loopback alone."""
    ports = stack.cfg.ports
    expected = {
        "api": ports.api,
        "agent": ports.agent_http,
        "recorder": ports.recorder,
        "livekit": ports.livekit,
        "redis": ports.redis,
        "s3": ports.s3,
        "llm": ports.llm,
    }
    bound = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in expected.values()
    }
    for name, port in expected.items():
        addresses = {ip for ip, p in bound if p == port}
        assert addresses and addresses <= {"127.0.0.1", "::1"}, (name, port, addresses)
