"""POST/DELETE /api/admin/session: the admin console signs in and out."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from ..admin_auth import COOKIE_NAME, mint_admin_token, password_matches
from ..deps import AdminLoginLimiterDep, SettingsDep
from ..log import logger
from ..ratelimit import client_address, enforce
from ..schemas import AdminLogin, AdminSession

router = APIRouter(tags=["admin"])


@router.post(
    "/api/admin/session",
    responses={
        401: {"description": "Wrong password"},
        429: {"description": "Too many sign-in attempts from this address"},
        503: {"description": "The rate limiter (Redis) is unavailable"},
    },
)
async def sign_in(
    body: AdminLogin,
    request: Request,
    response: Response,
    settings: SettingsDep,
    limiter: AdminLoginLimiterDep,
) -> AdminSession:
    """Exchange the admin password for a session token, also set as an HttpOnly cookie."""
    await enforce(limiter, client_address(request), "sign-in attempts")
    client = client_address(request)
    if not password_matches(body.password, settings.admin_password):
        logger.warning("admin sign-in refused", extra={"client": client})
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong password")
    token, expires_at = mint_admin_token(
        settings.livekit_api_secret, settings.admin_password, settings.admin_session_ttl_s
    )
    response.set_cookie(
        COOKIE_NAME,
        token,
        max_age=settings.admin_session_ttl_s,
        path="/",
        httponly=True,
        samesite="strict",
        # Plain HTTP only on a development machine.
        secure=settings.kaiwa_env != "dev",
    )
    response.headers["Cache-Control"] = "no-store"
    logger.info("admin signed in", extra={"client": client})
    return AdminSession(token=token, expires_at=expires_at)


@router.delete("/api/admin/session", status_code=status.HTTP_204_NO_CONTENT)
async def sign_out(settings: SettingsDep) -> Response:
    """Clear the session cookie. The token itself stays valid until it expires."""
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    response.delete_cookie(
        COOKIE_NAME,
        path="/",
        httponly=True,
        samesite="strict",
        secure=settings.kaiwa_env != "dev",
    )
    return response
