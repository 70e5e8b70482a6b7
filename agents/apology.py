"""The last agent of a call that keeps losing its agents: it says sorry and ends the call.

The watchdog sends it once a room has had REDISPATCH_LIMIT new agents within its window
(agents/watchdog/policy.py): a caller told what happened, spoken and captioned, rather than
one left in silence while workers crash.
"""

from __future__ import annotations

import asyncio
from typing import Any

from livekit.agents import Agent, JobContext, tts

from core.protocol import LANGUAGE_ATTRIBUTE

from .dialog.lines import line
from .dialog.sessions import CallSession
from .phone import first_caller

# The apology plays in well under this; a voice that hangs must not keep the call open.
APOLOGY_TIMEOUT_S = 30.0
CALLER_WAIT_S = 5.0


async def apologise(ctx: JobContext, voice: tts.TTS[Any], language: str) -> None:
    """Say the apology in `language` (spoken, with its caption), then end the call."""
    session = CallSession(tts=voice)
    await session.start(agent=Agent(instructions=""), room=ctx.room, session_host=False)
    try:
        await first_caller(ctx.room, timeout_s=CALLER_WAIT_S)
        handle = session.say(line(language, "apology"), allow_interruptions=False)
        await asyncio.wait_for(handle.wait_for_playout(), APOLOGY_TIMEOUT_S)
    finally:
        await session.aclose()
        await ctx.delete_room()


def callers_language(ctx: JobContext, default: str) -> str:
    """The language the first caller hears in, or the call's own."""
    for participant in ctx.room.remote_participants.values():
        if language := participant.attributes.get(LANGUAGE_ATTRIBUTE):
            return language
    return default
