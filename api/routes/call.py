"""What a caller's page reads about its own call, with the LiveKit token it joined with."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response, status
from fastapi.concurrency import run_in_threadpool

from ..conversations import room_transcript
from ..deps import CallerDep, Deps
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
async def call_transcript(caller: CallerDep, deps: Deps, response: Response) -> Transcript:
    """The final segments so far of the call in the token's room, each with its
    translations. A page that reloads or reconnects subscribes to live captions first, then
    reads this, and merges the two by segment id (`lk.segment_id` of the captions)."""

    def read() -> Transcript | None:
        with deps.sessions() as session:
            return room_transcript(session, caller.room)

    found = await run_in_threadpool(read)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no conversation in this room yet")
    response.headers["Cache-Control"] = "no-store"
    return found
