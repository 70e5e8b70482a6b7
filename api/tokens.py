"""Caller access tokens: the exact room, the least grants, a short life."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import jwt
from livekit import api as lkapi
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from core import scenarios
from core.errors import KaiwaError
from core.languages import Language
from core.protocol import AGENT_DISPLAY_NAME, RESERVED_IDENTITY_PREFIXES, Mode
from core.rooms import call_session, caller_attributes, room_configuration
from core.text import plain_line, poses_as

from .settings import Settings

RoomName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
Identity = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


def _not_the_agent(name: str) -> str:
    # Every page labels the agent by this name: a caller who took it could speak as Kaiwa.
    if poses_as(name, AGENT_DISPLAY_NAME):
        raise ValueError(f"the name {AGENT_DISPLAY_NAME!r} is the agent's")
    return name


DisplayName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, strip_whitespace=True),
    AfterValidator(plain_line),
    AfterValidator(_not_the_agent),
]


class TokenRequest(BaseModel):
    name: DisplayName
    mode: Mode = "dialog"
    language: Language = "en"
    room: RoomName | None = Field(
        default=None, description="Room code to join; a new room is made when omitted."
    )
    identity: Identity | None = Field(
        default=None,
        description="Rejoin as this participant after a reload: needs `rejoin`, the ticket "
        "that came with the first token for this room and identity.",
    )
    rejoin: str | None = Field(
        default=None, max_length=2048, description="The rejoin ticket of `identity`."
    )
    scenario: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,64}$")] | None = None
    record: bool = Field(
        default=True, description="Record the call (applies when this request creates the room)."
    )


class TokenResponse(BaseModel):
    url: str
    token: str
    room: str
    identity: str
    expires_at: datetime
    rejoin: str = Field(
        description="Proof that this caller is `identity` in `room`: send it with `identity` "
        "to rejoin after a reload, and as the bearer token of /api/call/language and "
        "/api/call/leave. Keep it with the call (the page: sessionStorage)."
    )


class UnknownScenarioError(KaiwaError, ValueError):
    pass


class ReservedIdentityError(KaiwaError, ValueError):
    pass


class RejoinRefused(KaiwaError, ValueError):
    """An identity asked for without a valid rejoin ticket for it and the room."""


# A ticket outlives its LiveKit token (which LiveKit refreshes while connected): it must
# last as long as a call may.
REJOIN_TICKET_TTL = timedelta(hours=6)
# Tells a rejoin ticket from every other token signed with the same secret.
REJOIN_AUDIENCE = "kaiwa-rejoin"


def mint_rejoin_ticket(settings: Settings, room: str, identity: str) -> str:
    now = datetime.now(UTC)
    claims = {
        "iss": settings.livekit_api_key,
        "aud": REJOIN_AUDIENCE,
        "sub": identity,
        "room": room,
        "iat": int(now.timestamp()),
        "exp": int((now + REJOIN_TICKET_TTL).timestamp()),
    }
    return jwt.encode(claims, settings.livekit_api_secret, algorithm="HS256")


def _ticket_claims(settings: Settings, ticket: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            ticket,
            settings.livekit_api_secret,
            algorithms=["HS256"],
            audience=REJOIN_AUDIENCE,
            issuer=settings.livekit_api_key,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise RejoinRefused("not a valid rejoin ticket") from exc
    if not isinstance(claims.get("room"), str) or not isinstance(claims.get("sub"), str):
        raise RejoinRefused("not a valid rejoin ticket")
    return claims


def read_rejoin_ticket(settings: Settings, ticket: str) -> tuple[str, str]:
    """(room, identity) of a genuine, current ticket. Raises RejoinRefused."""
    claims = _ticket_claims(settings, ticket)
    return claims["room"], claims["sub"]


def refuse_reserved(identity: str) -> None:
    if identity.lower().startswith(RESERVED_IDENTITY_PREFIXES):
        raise ReservedIdentityError(f"identity {identity!r} is reserved for the platform")


def rejoining(settings: Settings, request: TokenRequest) -> Rejoin | None:
    """The ticket the request rejoins with, as an identity it owns; None for a new caller.
    Raises RejoinRefused when it names an identity without the ticket for it and the room:
    anyone who knows a call's room code could otherwise take a caller's place (LiveKit drops
    the older of two participants with one identity)."""
    if request.identity is None:
        return None
    refuse_reserved(request.identity)
    if request.rejoin is None:
        raise RejoinRefused("rejoining as an identity needs its rejoin ticket")
    claims = _ticket_claims(settings, request.rejoin)
    if claims["sub"] != request.identity or claims["room"] != request.room:
        raise RejoinRefused("the rejoin ticket is for another room or identity")
    young = time.time() - float(claims["iat"]) < settings.token_ttl_s
    return Rejoin(ticket=request.rejoin, room=claims["room"], young=young)


@dataclass(frozen=True)
class Rejoin:
    ticket: str
    room: str
    # Issued less than a token's life ago: the first token, which could still create the
    # room, was minted with it, so a new token for a room not yet begun gives nothing more.
    young: bool


def caller_grants(room: str) -> lkapi.VideoGrants:
    return lkapi.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_publish_sources=["microphone"],
        can_subscribe=True,
        # Their typed messages (text streams on `lk.chat`). A caller can then send on any
        # topic: clients take captions and notices from agents only (participant kind).
        can_publish_data=True,
        # Attributes have one writer, the API (PUT /api/call/language): a caller who could set
        # its own could pose as an agent (`lk.agent.state`) or claim a language no engine has.
        can_update_own_metadata=False,
        room_admin=False,
        room_create=False,
        room_list=False,
        room_record=False,
        hidden=False,
        agent=False,
    )


def mint_caller_token(
    settings: Settings,
    request: TokenRequest,
    url: str | None = None,
    *,
    rejoin: Rejoin | None = None,
) -> TokenResponse:
    identity = request.identity or f"caller-{secrets.token_hex(6)}"
    refuse_reserved(identity)
    if request.scenario is not None and request.scenario not in scenarios.load(
        settings.scenarios_file
    ):
        raise UnknownScenarioError(f"no scenario {request.scenario!r}; see GET /api/scenarios")
    room = request.room or f"{request.mode}-{secrets.token_hex(6)}"
    ttl = timedelta(seconds=settings.token_ttl_s)

    session = call_session(request.mode, request.scenario)
    room_config = room_configuration(
        name=room,
        mode=request.mode,
        scenario=request.scenario,
        record=request.record,
        max_participants=settings.room_max_participants,
    )
    token = (
        lkapi.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(identity)
        .with_name(request.name)
        .with_ttl(ttl)
        .with_grants(caller_grants(room))
        .with_attributes(caller_attributes(request.mode, request.language))
        .with_metadata(session)
        .with_room_config(room_config)
        .to_jwt()
    )
    return TokenResponse(
        # The node the caller connects to (core/livekit_nodes.py); any node serves any room.
        url=url or settings.client_livekit_urls[0],
        token=token,
        room=room,
        identity=identity,
        expires_at=datetime.now(UTC) + ttl,
        # A rejoin keeps its ticket: never renewed, it dies 6 h after the call's first token.
        rejoin=rejoin.ticket if rejoin else mint_rejoin_ticket(settings, room, identity),
    )
