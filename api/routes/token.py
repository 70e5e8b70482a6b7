"""POST /api/token: a caller's access token for one room."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status
from redis.exceptions import RedisError

from ..deps import Deps
from ..tokens import ReservedIdentityError, TokenRequest, TokenResponse, mint_caller_token

router = APIRouter(tags=["tokens"])


@router.post(
    "/api/token",
    responses={
        422: {"description": "Invalid room, identity, language or mode"},
        429: {"description": "Too many token requests from this address"},
    },
)
async def create_token(
    body: TokenRequest, request: Request, response: Response, deps: Deps
) -> TokenResponse:
    client = request.client.host if request.client else "unknown"
    try:
        retry_after = await deps.token_limiter.hit(client)
    except RedisError as exc:
        # Fail closed: without the shared counter the limit cannot be enforced.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "rate limiter unavailable"
        ) from exc
    if retry_after is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "too many token requests; try again later",
            headers={"Retry-After": str(retry_after)},
        )
    try:
        minted = mint_caller_token(deps.settings, body)
    except ReservedIdentityError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    response.headers["Cache-Control"] = "no-store"
    return minted
