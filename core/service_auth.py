"""Tokens for Kaiwa's own services (agents) calling the API's internal routes.

Needs only PyJWT, so agent workers import it without FastAPI. A service token is an HS256
JWT signed with LIVEKIT_API_SECRET and issued by LIVEKIT_API_KEY, like LiveKit access
tokens: what sets it apart from a caller's token, signed with the same secret, is the
`kaiwa` claim `{"service": "agent"}` and the absence of a LiveKit `video` grant.
"""

from __future__ import annotations

import time
from typing import Any

import jwt

from .errors import KaiwaError

SERVICE_CLAIM = "kaiwa"
AGENT_SERVICE = "agent"
# A service mints a fresh token for each call or minute; longer-lived ones are refused, so
# a leaked token is soon worthless.
MAX_SERVICE_TOKEN_TTL_S = 600
# Clock difference tolerated between the agent's host and the API's.
LEEWAY_S = 10


class ServiceTokenInvalid(KaiwaError):
    """Not a genuine, current token from our key (answer 401)."""


class ServiceTokenForbidden(KaiwaError):
    """Genuine, but not a service token: a caller's token, for one (answer 403)."""


def mint_service_token(
    api_key: str, api_secret: str, ttl_s: int = 60, *, service: str = AGENT_SERVICE
) -> str:
    """A token for `Authorization: Bearer ...` on /api/internal routes."""
    if not 0 < ttl_s <= MAX_SERVICE_TOKEN_TTL_S:
        raise ValueError(f"ttl_s must be in 1..{MAX_SERVICE_TOKEN_TTL_S}")
    now = int(time.time())
    claims = {
        "iss": api_key,
        "sub": f"kaiwa-{service}",
        "iat": now,
        "nbf": now,
        "exp": now + ttl_s,
        SERVICE_CLAIM: {"service": service},
    }
    return jwt.encode(claims, api_secret, algorithm="HS256")


def verify_service_token(
    token: str, api_key: str, api_secret: str, *, service: str = AGENT_SERVICE
) -> dict[str, Any]:
    """The token's claims if it is a current service token for `service`."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            api_secret,
            algorithms=["HS256"],
            issuer=api_key,
            leeway=LEEWAY_S,
            options={"require": ["exp", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise ServiceTokenInvalid(exc.__class__.__name__) from exc
    if claims["exp"] > time.time() + MAX_SERVICE_TOKEN_TTL_S + LEEWAY_S:
        raise ServiceTokenInvalid("lifetime too long")
    kaiwa = claims.get(SERVICE_CLAIM)
    if "video" in claims or not isinstance(kaiwa, dict) or kaiwa.get("service") != service:
        raise ServiceTokenForbidden("not a service token")
    return claims
