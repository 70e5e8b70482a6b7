"""Admin console sessions: a password exchanged for a short-lived signed token.

The token is an HS256 JWT, but not under LIVEKIT_API_SECRET itself: under a key derived
from it and from the admin password. So no LiveKit or service token (signed with the
secret) can pass as an admin session, an admin token is useless against LiveKit, and
changing ADMIN_PASSWORD ends every session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import jwt

from core.errors import KaiwaError

COOKIE_NAME = "kaiwa_admin"
ADMIN_SUBJECT = "admin"
_KEY_LABEL = b"kaiwa admin session v1"


class AdminTokenInvalid(KaiwaError):
    pass


def _key(api_secret: str, admin_password: str) -> bytes:
    password = hashlib.sha256(admin_password.encode()).digest()
    return hmac.new(api_secret.encode(), _KEY_LABEL + password, hashlib.sha256).digest()


def password_matches(given: str, expected: str) -> bool:
    # Compared as digests: constant time, whatever the lengths.
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


def mint_admin_token(api_secret: str, admin_password: str, ttl_s: int) -> tuple[str, datetime]:
    now = int(time.time())
    claims = {
        "sub": ADMIN_SUBJECT,
        "iat": now,
        "exp": now + ttl_s,
        "jti": secrets.token_hex(8),
        "kaiwa": {"role": "admin"},
    }
    token = jwt.encode(claims, _key(api_secret, admin_password), algorithm="HS256")
    return token, datetime.fromtimestamp(now + ttl_s, UTC)


def verify_admin_token(token: str, api_secret: str, admin_password: str) -> dict[str, Any]:
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            _key(api_secret, admin_password),
            algorithms=["HS256"],
            options={"require": ["exp", "sub"]},
        )
    except jwt.PyJWTError as exc:
        raise AdminTokenInvalid(exc.__class__.__name__) from exc
    kaiwa = claims.get("kaiwa")
    if (
        claims["sub"] != ADMIN_SUBJECT
        or not isinstance(kaiwa, dict)
        or kaiwa.get("role") != "admin"
    ):
        raise AdminTokenInvalid("not an admin session")
    return claims
