"""What a caller's page reads about its own call, with the LiveKit token it joined with."""

from __future__ import annotations

import aiohttp
from fastapi import APIRouter, HTTPException, Response, status
from fastapi.concurrency import run_in_threadpool
from livekit import api as lkapi
from pydantic import BaseModel

from core.languages import Language
from core.protocol import (
    CALLER_ENDED_ATTRIBUTE,
    LANGUAGE_ATTRIBUTE,
    TYPING_ATTRIBUTE,
    VOICE_REPLIES_ATTRIBUTE,
)

from ..conversations import room_transcript
from ..deps import (
    ATTRIBUTE_WRITES_PER_MINUTE,
    AttributeLimiterDep,
    CallerDep,
    CallerGrant,
    LiveKitDep,
    SessionsDep,
    TicketDep,
    TypingLimiterDep,
)
from ..ratelimit import RateLimiter, enforce
from ..schemas import Transcript

router = APIRouter(
    tags=["call"],
    responses={
        401: {"description": "No token, or an invalid or expired one"},
        403: {"description": "A token that grants no room"},
    },
)


@router.get(
    "/api/call/transcript",
    responses={404: {"description": "The room has no conversation on record yet"}},
)
async def call_transcript(
    caller: CallerDep, sessions: SessionsDep, response: Response
) -> Transcript:
    """The final segments so far of the call in the token's room, each with its
    translations. A page that reloads or reconnects subscribes to live captions first, then
    reads this, and merges the two by segment id (`lk.segment_id` of the captions)."""

    def read() -> Transcript | None:
        with sessions() as session:
            return room_transcript(session, caller.room)

    found = await run_in_threadpool(read)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no conversation in this room yet")
    response.headers["Cache-Control"] = "no-store"
    return found


class LanguageChange(BaseModel):
    language: Language


async def _set_attributes(
    livekit: lkapi.LiveKitAPI, caller: CallerGrant, values: dict[str, str]
) -> None:
    """The API is the one writer of a caller's attributes: callers' tokens cannot set them."""
    request = lkapi.UpdateParticipantRequest(
        room=caller.room, identity=caller.identity, attributes=values
    )
    try:
        await livekit.room.update_participant(request)
    except lkapi.TwirpError as exc:
        if exc.code == "not_found":
            raise HTTPException(status.HTTP_404_NOT_FOUND, "not in this call now") from exc
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "LiveKit unavailable") from exc
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "LiveKit unavailable") from exc


TICKET_RESPONSES: dict[int | str, dict[str, str]] = {
    401: {"description": "No rejoin ticket, or an invalid or expired one"},
    404: {"description": "The ticket's participant is not in its call now"},
    503: {"description": "LiveKit cannot be reached"},
}


ATTRIBUTE_RESPONSES: dict[int | str, dict[str, str]] = {
    **TICKET_RESPONSES,
    429: {
        "description": f"More than {ATTRIBUTE_WRITES_PER_MINUTE} language, voice-reply and "
        "leave changes in a minute (Retry-After)"
    },
}


async def _limit_attribute_writes(limiter: RateLimiter, caller: CallerGrant) -> None:
    await enforce(limiter, f"{caller.room}/{caller.identity}", "changes")


@router.put("/api/call/language", status_code=204, responses=ATTRIBUTE_RESPONSES)
async def change_language(
    body: LanguageChange, caller: TicketDep, livekit: LiveKitDep, limiter: AttributeLimiterDep
) -> None:
    """Switch the caller's language mid-call (`Authorization: Bearer <rejoin ticket>`):
    agents read the `language` attribute live, and interpret into the new language."""
    await _limit_attribute_writes(limiter, caller)
    await _set_attributes(livekit, caller, {LANGUAGE_ATTRIBUTE: body.language})


class TypingChange(BaseModel):
    typing: bool


@router.put(
    "/api/call/typing",
    status_code=204,
    responses={
        **TICKET_RESPONSES,
        429: {"description": "More than 60 updates in a minute"},
    },
)
async def change_typing(
    body: TypingChange, caller: TicketDep, livekit: LiveKitDep, limiter: TypingLimiterDep
) -> None:
    """Say whether the caller's message box has text in it (`Authorization: Bearer <rejoin
    ticket>`): the `kaiwa.typing` attribute others' pages show as "… is typing". A page
    says so at most once in 2 s, and clears it on send or after 5 s idle."""
    await enforce(limiter, f"{caller.room}/{caller.identity}", "typing updates")
    # Set to "false", not removed: a removal is not reported to everyone as a change.
    await _set_attributes(livekit, caller, {TYPING_ATTRIBUTE: str(body.typing).lower()})


class VoiceRepliesChange(BaseModel):
    on: bool


@router.put("/api/call/voice-replies", status_code=204, responses=ATTRIBUTE_RESPONSES)
async def change_voice_replies(
    body: VoiceRepliesChange, caller: TicketDep, livekit: LiveKitDep, limiter: AttributeLimiterDep
) -> None:
    """Hear the dialog agent's replies, or read them only (`Authorization: Bearer <rejoin
    ticket>`): off, a reply's text streams as it is written, and nothing is synthesized."""
    await _limit_attribute_writes(limiter, caller)
    await _set_attributes(livekit, caller, {VOICE_REPLIES_ATTRIBUTE: "on" if body.on else "off"})


@router.post("/api/call/leave", status_code=204, responses=ATTRIBUTE_RESPONSES)
async def leave(caller: TicketDep, livekit: LiveKitDep, limiter: AttributeLimiterDep) -> None:
    """Say the caller is leaving on purpose, just before it disconnects: a dialog then ends
    at once, rather than waiting for a reload to come back (docs/mobile.md)."""
    await _limit_attribute_writes(limiter, caller)
    await _set_attributes(livekit, caller, {CALLER_ENDED_ATTRIBUTE: "true"})
