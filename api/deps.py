"""Shared resources of one API process, and FastAPI dependency aliases for them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import jwt
import redis.asyncio as aioredis
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from livekit import api as lkapi
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.livekit_nodes import LiveNodes, NodeAPIs
from core.service_auth import (
    LEEWAY_S,
    ServiceTokenForbidden,
    ServiceTokenInvalid,
    verify_service_token,
)
from core.storage import s3_client

from .admin_auth import COOKIE_NAME, AdminTokenInvalid, verify_admin_token
from .calls_held import CallsHeld
from .db import make_engine, make_sessionmaker, migrate
from .ratelimit import RateLimiter
from .settings import Settings
from .sip_health import OpenRuleWatch
from .tokens import RejoinRefused, read_rejoin_ticket

# A page updates its typing state at most once in 2 s, and clears it on send: 30 a minute,
# and as many again for the clears.
TYPING_UPDATES_PER_MINUTE = 60
# Language, voice-reply and leave changes, together: a person makes a few in a call, and each
# is broadcast to the room (a language change also restarts the caller's speech-to-text), so
# a page that sent more than one in 5 s is a script.
ATTRIBUTE_WRITES_PER_MINUTE = 12


@dataclass
class Resources:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: aioredis.Redis
    # LiveKit's server API, on the first node that answers.
    livekit: NodeAPIs
    s3: Any
    # Signs the recording URLs browsers fetch, with the S3 address browsers use.
    s3_presign: Any
    token_limiter: RateLimiter
    admin_login_limiter: RateLimiter
    # Per caller: a page says it is typing at most once in 2 s (PUT /api/call/typing).
    typing_limiter: RateLimiter
    # Per caller: language, voice-reply and leave changes (PUT /api/call/...).
    attribute_limiter: RateLimiter
    # New calls per client address held at once (POST /api/token).
    calls_held: CallsHeld
    # The LiveKit nodes callers are sent to, in turn.
    nodes: LiveNodes
    # /healthz's cached look at LiveKit's SIP dispatch rules.
    sip_rules: OpenRuleWatch = field(default_factory=OpenRuleWatch)

    @classmethod
    async def open(cls, settings: Settings) -> Resources:
        engine = make_engine(settings.database_url)
        await run_in_threadpool(migrate, engine)  # blocking: kept off the event loop
        client = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            redis=client,
            livekit=settings.livekit_apis(),
            s3=make_s3_client(settings),
            s3_presign=make_s3_client(settings, public=True),
            nodes=LiveNodes(settings.client_livekit_urls),
            token_limiter=RateLimiter(
                client,
                name="token",
                limit=settings.token_rate_limit,
                window_s=settings.token_rate_window_s,
            ),
            admin_login_limiter=RateLimiter(
                client,
                name="admin-login",
                limit=settings.admin_login_rate_limit,
                window_s=settings.admin_login_rate_window_s,
            ),
            typing_limiter=RateLimiter(
                client, name="typing", limit=TYPING_UPDATES_PER_MINUTE, window_s=60
            ),
            attribute_limiter=RateLimiter(
                client, name="attributes", limit=ATTRIBUTE_WRITES_PER_MINUTE, window_s=60
            ),
            calls_held=CallsHeld(
                client, limit=settings.calls_per_address, pending_s=settings.token_ttl_s
            ),
        )

    async def aclose(self) -> None:
        await self.livekit.aclose()
        await self.redis.aclose()
        self.engine.dispose()


def make_s3_client(settings: Settings, *, public: bool = False) -> Any:
    """The API's S3 client; `public` signs URLs for the address browsers use."""
    endpoint = settings.s3_public_endpoint_url if public else None
    return s3_client(settings, endpoint_url=endpoint)


def get_resources(request: Request) -> Resources:
    resources: Resources = request.app.state.resources
    return resources


# Everything at once: for /healthz, which checks every resource. A route takes the narrow
# aliases below, so its signature says what it uses.
Deps = Annotated[Resources, Depends(get_resources)]


def _settings(request: Request) -> Settings:
    return get_resources(request).settings


def _sessions(request: Request) -> sessionmaker[Session]:
    return get_resources(request).sessions


async def _livekit(request: Request) -> lkapi.LiveKitAPI:
    return await get_resources(request).livekit.api()


def _s3(request: Request) -> Any:
    return get_resources(request).s3


def _presign_s3(request: Request) -> Any:
    return get_resources(request).s3_presign


def _nodes(request: Request) -> LiveNodes:
    return get_resources(request).nodes


def _token_limiter(request: Request) -> RateLimiter:
    return get_resources(request).token_limiter


def _admin_login_limiter(request: Request) -> RateLimiter:
    return get_resources(request).admin_login_limiter


def _typing_limiter(request: Request) -> RateLimiter:
    return get_resources(request).typing_limiter


def _attribute_limiter(request: Request) -> RateLimiter:
    return get_resources(request).attribute_limiter


def _calls_held(request: Request) -> CallsHeld:
    return get_resources(request).calls_held


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionsDep = Annotated[sessionmaker[Session], Depends(_sessions)]
LiveKitDep = Annotated[lkapi.LiveKitAPI, Depends(_livekit)]
LiveNodesDep = Annotated[LiveNodes, Depends(_nodes)]
# boto3 clients are untyped; the presigning one signs with the address browsers use.
S3Dep = Annotated[Any, Depends(_s3)]
PresignS3Dep = Annotated[Any, Depends(_presign_s3)]
TokenLimiterDep = Annotated[RateLimiter, Depends(_token_limiter)]
TypingLimiterDep = Annotated[RateLimiter, Depends(_typing_limiter)]
AttributeLimiterDep = Annotated[RateLimiter, Depends(_attribute_limiter)]
CallsHeldDep = Annotated[CallsHeld, Depends(_calls_held)]
AdminLoginLimiterDep = Annotated[RateLimiter, Depends(_admin_login_limiter)]


_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _required_bearer(request: Request, what: str) -> str:
    """The bearer token, or 401 naming what is missing."""
    token = bearer_token(request)
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"missing {what}", headers=_UNAUTHORIZED)
    return token


async def require_admin(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """An admin session from `Authorization: Bearer` or, for <audio> elements and the
    console's own requests, the session cookie."""
    token = bearer_token(request) or request.cookies.get(COOKIE_NAME)
    if not token:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "sign in", headers=_UNAUTHORIZED)
    try:
        return verify_admin_token(token, settings.livekit_api_secret, settings.admin_password)
    except AdminTokenInvalid as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid or expired session", headers=_UNAUTHORIZED
        ) from exc


async def require_agent(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """A service token minted by an agent worker (core/service_auth.py)."""
    token = _required_bearer(request, "token")
    try:
        return verify_service_token(token, settings.livekit_api_key, settings.livekit_api_secret)
    except ServiceTokenInvalid as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid or expired token", headers=_UNAUTHORIZED
        ) from exc
    except ServiceTokenForbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not a service token") from exc


AdminDep = Annotated[dict[str, Any], Depends(require_admin)]
AgentDep = Annotated[dict[str, Any], Depends(require_agent)]


@dataclass(frozen=True)
class CallerGrant:
    room: str
    identity: str


async def require_caller(request: Request, settings: SettingsDep) -> CallerGrant:
    """A caller's own LiveKit access token: it opens the history of its one room, nothing
    more. The web page sends the token it joined with."""
    token = _required_bearer(request, "token")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.livekit_api_secret,
            algorithms=["HS256"],
            issuer=settings.livekit_api_key,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iss", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid or expired token", headers=_UNAUTHORIZED
        ) from exc
    video = claims.get("video")
    room = video.get("room") if isinstance(video, dict) else None
    if not isinstance(video, dict) or not video.get("roomJoin") or not isinstance(room, str):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "not a caller's room token")
    return CallerGrant(room=room, identity=str(claims["sub"]))


CallerDep = Annotated[CallerGrant, Depends(require_caller)]


async def require_ticket(request: Request, settings: SettingsDep) -> CallerGrant:
    """A caller's rejoin ticket (see api/tokens.py): proof that it is this identity in this
    room, for the few changes the API makes on its behalf."""
    token = _required_bearer(request, "ticket")
    try:
        room, identity = read_rejoin_ticket(settings, token)
    except RejoinRefused as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid or expired ticket", headers=_UNAUTHORIZED
        ) from exc
    return CallerGrant(room=room, identity=identity)


TicketDep = Annotated[CallerGrant, Depends(require_ticket)]
