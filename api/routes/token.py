"""POST /api/token: a caller's access token for one room."""

from __future__ import annotations

from functools import partial

import aiohttp
from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from livekit import api as lkapi
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy.orm import Session, sessionmaker

from core import scenarios

from ..calls_held import CallsHeld
from ..conversations import call_open, rooms_started
from ..deps import (
    CallsHeldDep,
    LiveKitDep,
    LiveNodesDep,
    SessionsDep,
    SettingsDep,
    TokenLimiterDep,
)
from ..events import room_mode
from ..ratelimit import client_address, enforce
from ..tokens import (
    Rejoin,
    RejoinRefused,
    ReservedIdentityError,
    TokenRequest,
    TokenResponse,
    UnknownScenarioError,
    mint_caller_token,
    rejoining,
)

router = APIRouter(tags=["tokens"])


@router.post(
    "/api/token",
    responses={
        403: {
            "description": "An identity without its rejoin ticket, or a second person for "
            "a dialog call"
        },
        409: {"description": "The room is full"},
        422: {"description": "Invalid room, identity, language, mode or scenario"},
        404: {"description": "No call is going on in the room of that code or ticket"},
        429: {
            "description": "Too many token requests, or too many calls held at once, from "
            "this address (Retry-After)"
        },
    },
)
async def create_token(
    body: TokenRequest,
    request: Request,
    response: Response,
    settings: SettingsDep,
    livekit: LiveKitDep,
    nodes: LiveNodesDep,
    limiter: TokenLimiterDep,
    calls: CallsHeldDep,
    sessions: SessionsDep,
) -> TokenResponse:
    address = client_address(request)
    await enforce(limiter, address, "token requests")
    try:
        rejoin = rejoining(settings, body)
    except ReservedIdentityError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except RejoinRefused as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from exc
    if rejoin is not None:
        await _check_call_goes_on(livekit, sessions, rejoin)
    elif body.room is not None:
        await _check_room_open(livekit, body.room)
    try:
        minted = mint_caller_token(settings, body, url=await nodes.pick(), rejoin=rejoin)
    except (ReservedIdentityError, UnknownScenarioError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    if body.room is None:
        await _hold_new_call(calls, livekit, sessions, address, minted.room)
    response.headers["Cache-Control"] = "no-store"
    return minted


async def _live_rooms(livekit: lkapi.LiveKitAPI, names: list[str]) -> set[str]:
    try:
        listed = await livekit.room.list_rooms(lkapi.ListRoomsRequest(names=names))
    except (aiohttp.ClientError, TimeoutError, lkapi.TwirpError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "LiveKit unavailable") from exc
    return {room.name for room in listed.rooms}


async def _check_call_goes_on(
    livekit: lkapi.LiveKitAPI, sessions: sessionmaker[Session], rejoin: Rejoin
) -> None:
    """A ticket rejoins a call in progress, not a room name: after its call, a former
    participant would otherwise make the room again, and read its transcript, for hours."""
    if rejoin.young or await _live_rooms(livekit, [rejoin.room]):
        return

    def is_open() -> bool:
        with sessions() as session:
            return call_open(session, rejoin.room)

    if not await run_in_threadpool(is_open):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "that call is over")


async def _hold_new_call(
    calls: CallsHeld,
    livekit: lkapi.LiveKitAPI,
    sessions: sessionmaker[Session],
    address: str,
    room: str,
) -> None:
    """Count a new call against its address's cap (api/calls_held.py): 429 past it."""

    async def started(names: list[str]) -> set[str]:
        def read() -> set[str]:
            with sessions() as session:
                return rooms_started(session, names)

        return await run_in_threadpool(read)

    try:
        retry_after = await calls.admit(
            address, room, live=partial(_live_rooms, livekit), started=started
        )
    except RedisError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "call count unavailable") from exc
    if retry_after is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many calls from this address at once; end one, then try again",
            headers={"Retry-After": str(retry_after)},
        )


async def _check_room_open(livekit: lkapi.LiveKitAPI, name: str) -> None:
    """A room code joins a call in progress: one that is not, or is full, is refused here
    with a clear answer rather than by LiveKit after the page connects."""
    try:
        listed = await livekit.room.list_rooms(lkapi.ListRoomsRequest(names=[name]))
    except (aiohttp.ClientError, TimeoutError, lkapi.TwirpError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "LiveKit unavailable") from exc
    if not listed.rooms:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no call with room code {name!r}")
    room = listed.rooms[0]
    if room_mode(room.metadata) == "dialog":
        # A dialog is one caller's conversation with the agent: nobody else may listen in
        # by its room code. (Its own caller comes back with a rejoin ticket.)
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a dialog call has one caller")
    if not room.max_participants:
        return
    # The room's own num_participants lags joins by seconds: count the participants, as
    # LiveKit does at join.
    try:
        people = await livekit.room.list_participants(lkapi.ListParticipantsRequest(room=name))
    except (aiohttp.ClientError, TimeoutError, lkapi.TwirpError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "LiveKit unavailable") from exc
    if sum(not _dependent(p) for p in people.participants) >= room.max_participants:
        raise HTTPException(status.HTTP_409_CONFLICT, "that call is full")


def _dependent(participant: lkapi.ParticipantInfo) -> bool:
    """Agents and recorders: LiveKit lets them in past a room's participant limit."""
    kind = participant.kind
    return kind in (lkapi.ParticipantInfo.AGENT, lkapi.ParticipantInfo.EGRESS) or (
        participant.permission.agent or participant.permission.recorder
    )


class ScenarioOut(BaseModel):
    id: str
    title: str
    language: str
    level: str


@router.get("/api/scenarios")
async def list_scenarios(settings: SettingsDep) -> list[ScenarioOut]:
    """The dialog scenarios a caller can pick (`scenario` in the token request)."""
    catalogue = scenarios.load(settings.scenarios_file)
    return [
        ScenarioOut(id=s.id, title=s.title, language=s.language, level=s.level)
        for s in catalogue.values()
    ]
