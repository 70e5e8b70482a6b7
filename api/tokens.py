"""Caller access tokens: the exact room, the least grants, a short life."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from livekit import api as lkapi
from pydantic import BaseModel, Field, StringConstraints

from agents.dialog import scenarios
from agents.settings import AGENT_NAME

from .settings import Settings

RoomName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
Identity = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
# BCP 47 language tags as callers send them: "en", "ja", "pt-BR", "zh-Hant".
Language = Annotated[str, StringConstraints(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$")]
DisplayName = Annotated[str, StringConstraints(min_length=1, max_length=64, strip_whitespace=True)]

# Identities of the platform's own participants; a caller may not pose as one.
RESERVED_IDENTITY_PREFIXES = ("agent-", "kaiwa-", "recorder-", "sip_")

Mode = Literal["dialog", "interpret"]

# Attribute names that agents and the web app read (see docs/mobile.md for native apps).
LANGUAGE_ATTRIBUTE = "language"
MODE_ATTRIBUTE = "kaiwa.mode"
# Set by a caller's app just before it leaves on purpose (docs/mobile.md): a dialog then
# ends at once, rather than waiting for a reload to come back.
CALLER_ENDED_ATTRIBUTE = "kaiwa.ended"


class TokenRequest(BaseModel):
    name: DisplayName
    mode: Mode = "dialog"
    language: Language = "en"
    room: RoomName | None = Field(
        default=None, description="Room code to join; a new room is made when omitted."
    )
    identity: Identity | None = Field(
        default=None, description="Reuse to rejoin as the same participant after a reload."
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


class UnknownScenarioError(ValueError):
    pass


class ReservedIdentityError(ValueError):
    pass


def caller_grants(room: str) -> lkapi.VideoGrants:
    return lkapi.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_publish_sources=["microphone"],
        can_subscribe=True,
        # Callers send nothing but their voice; captions and state come from agents.
        can_publish_data=False,
        # Lets the app change its own `language` attribute mid-call without a new token.
        can_update_own_metadata=True,
        room_admin=False,
        room_create=False,
        room_list=False,
        room_record=False,
        hidden=False,
        agent=False,
    )


def mint_caller_token(settings: Settings, request: TokenRequest) -> TokenResponse:
    identity = request.identity or f"caller-{secrets.token_hex(6)}"
    if identity.lower().startswith(RESERVED_IDENTITY_PREFIXES):
        raise ReservedIdentityError(f"identity {identity!r} is reserved for the platform")
    if request.scenario is not None and request.scenario not in scenarios.load(
        settings.scenarios_file
    ):
        raise UnknownScenarioError(f"no scenario {request.scenario!r}; see GET /api/scenarios")
    room = request.room or f"{request.mode}-{secrets.token_hex(6)}"
    ttl = timedelta(seconds=settings.token_ttl_s)

    session = {"mode": request.mode, "scenario": request.scenario}
    # Applied only if this join creates the room: the first caller decides its mode and
    # brings the agent; later callers join what is there.
    room_config = lkapi.RoomConfiguration(
        name=room,
        metadata=json.dumps({"mode": request.mode, "record": request.record}),
        max_participants=settings.room_max_participants,
        agents=[lkapi.RoomAgentDispatch(agent_name=AGENT_NAME, metadata=json.dumps(session))],
    )
    token = (
        lkapi.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(identity)
        .with_name(request.name)
        .with_ttl(ttl)
        .with_grants(caller_grants(room))
        .with_attributes({LANGUAGE_ATTRIBUTE: request.language, MODE_ATTRIBUTE: request.mode})
        .with_metadata(json.dumps(session))
        .with_room_config(room_config)
        .to_jwt()
    )
    return TokenResponse(
        url=settings.client_livekit_url,
        token=token,
        room=room,
        identity=identity,
        expires_at=datetime.now(UTC) + ttl,
    )
