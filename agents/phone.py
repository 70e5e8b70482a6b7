"""Phone callers: people who reach a room through LiveKit's SIP bridge.

The bridge rings the phone until the first audio track in the room is subscribed, then
answers; until it marks the caller `sip.callStatus = active` (at the phone's first RTP, or
1 s after the answer) it drops what the room says to the phone. Whatever the agent says
first must therefore wait for `active`, or its first words are lost.
"""

from __future__ import annotations

import asyncio
import logging

from livekit import rtc

from core.protocol import SIP_CALL_STATUS_ATTRIBUTE

logger = logging.getLogger("kaiwa.phone")

PHONE = rtc.ParticipantKind.PARTICIPANT_KIND_SIP


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
