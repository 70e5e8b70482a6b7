"""Phone callers: people who reach a room through LiveKit's SIP bridge.

The bridge rings the phone until the first audio track in the room is subscribed, then
answers; until it marks the caller `sip.callStatus = active` (at the phone's first RTP, or
1 s after the answer) it drops what the room says to the phone. A phone the agent calls out
to joins the room as it is dialled and turns `active` when it answers. Whatever the agent
says first must therefore wait for `active`, or its first words are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from livekit import rtc

from core.protocol import SIP_CALL_STATUS_ATTRIBUTE

logger = logging.getLogger("kaiwa.phone")

PHONE = rtc.ParticipantKind.PARTICIPANT_KIND_SIP


PEOPLE = (rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD, PHONE)


async def first_caller(room: rtc.Room, *, timeout_s: float) -> rtc.RemoteParticipant | None:
    """The first person in the room, once there is one. A browser caller is there before the
    agent (their join made the room); a phone called out to joins only once it is dialled."""
    joined = asyncio.Event()

    def present() -> rtc.RemoteParticipant | None:
        return next((p for p in room.remote_participants.values() if p.kind in PEOPLE), None)

    def on_join(_participant: rtc.RemoteParticipant) -> None:
        joined.set()

    if (person := present()) is not None:
        return person
    room.on("participant_connected", on_join)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while (person := present()) is None:
                    await joined.wait()
                    joined.clear()
    finally:
        room.off("participant_connected", on_join)
    return person


def phone_callers(room: rtc.Room) -> list[rtc.RemoteParticipant]:
    return [p for p in room.remote_participants.values() if p.kind == PHONE]


def ringing(room: rtc.Room) -> list[rtc.RemoteParticipant]:
    """The phone callers in the room who do not hear it yet."""
    return [
        p for p in phone_callers(room) if p.attributes.get(SIP_CALL_STATUS_ATTRIBUTE) != "active"
    ]


async def until_answered(room: rtc.Room, *, timeout_s: float) -> None:
    """Return once every phone caller in the room hears it (or has gone), or after
    `timeout_s`: a bridge that never says `active` must not keep the agent silent."""
    if not ringing(room):
        return
    changed = asyncio.Event()

    def on_change(*_args: object) -> None:
        changed.set()

    room.on("participant_attributes_changed", on_change)
    room.on("participant_disconnected", on_change)
    try:
        async with asyncio.timeout(timeout_s):
            while ringing(room):
                await changed.wait()
                changed.clear()
    except TimeoutError:
        logger.warning(
            "a phone caller was not answered in time; speaking anyway",
            extra={"room": room.name, "after_s": timeout_s},
        )
    finally:
        room.off("participant_attributes_changed", on_change)
        room.off("participant_disconnected", on_change)
