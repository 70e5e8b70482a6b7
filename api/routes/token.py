"""POST /api/token: a caller's access token for one room."""

from __future__ import annotations

import aiohttp
from fastapi import APIRouter, HTTPException, Request, Response, status
from livekit import api as lkapi
from pydantic import BaseModel

from core import scenarios

from ..deps import LiveKitDep, LiveNodesDep, SettingsDep, TokenLimiterDep
from ..events import room_mode
from ..ratelimit import client_address, enforce
from ..tokens import (
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
        404: {"description": "No call is going on in the room of that code"},
        409: {"description": "The room is full"},
        422: {"description": "Invalid room, identity, language, mode or scenario"},
        429: {"description": "Too many token requests from this address"},
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
) -> TokenResponse:
    await enforce(limiter, client_address(request), "token requests")
    try:
        rejoin = rejoining(settings, body)
    except ReservedIdentityError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except RejoinRefused as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from exc
    if body.room is not None and not rejoin:
        await _check_room_open(livekit, body.room)
    try:
        minted = mint_caller_token(settings, body, url=await nodes.pick())
    except (ReservedIdentityError, UnknownScenarioError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    response.headers["Cache-Control"] = "no-store"
    return minted


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
