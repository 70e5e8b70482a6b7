"""POST /livekit/webhook: LiveKit's room and participant events, verified, stored once."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from core.webhooks import WebhookMalformed, WebhookRejected, verify_webhook

from ..deps import SessionsDep, SettingsDep
from ..events import apply_event
from ..log import logger
from ..metrics import WEBHOOKS_RECEIVED, WEBHOOKS_REJECTED
from ..webhooks import check_event

router = APIRouter(tags=["webhooks"])


class WebhookAck(BaseModel):
    id: str
    duplicate: bool


async def read_limited_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "body too large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "body too large")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/livekit/webhook",
    status_code=200,
    responses={
        400: {"description": "Genuine, but not an event we can read, or values out of range"},
        401: {"description": "Not signed by our LiveKit server, or not over these bytes"},
        413: {"description": "Body over WEBHOOK_MAX_BODY_BYTES"},
    },
)
async def receive_webhook(
    request: Request, settings: SettingsDep, sessions: SessionsDep
) -> WebhookAck:
    try:
        raw = await read_limited_body(request, settings.webhook_max_body_bytes)
    except HTTPException:
        WEBHOOKS_REJECTED.labels("too_large").inc()
        raise
    try:
        event = verify_webhook(
            raw,
            request.headers.get("authorization", ""),
            settings.livekit_api_key,
            settings.livekit_api_secret,
        )
        check_event(event, bucket=settings.s3_bucket, key_prefix=settings.recorder_prefix)
    except WebhookRejected as exc:
        WEBHOOKS_REJECTED.labels("signature").inc()
        logger.warning("webhook rejected", extra={"reason": str(exc)})
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid webhook signature") from exc
    except WebhookMalformed as exc:
        WEBHOOKS_REJECTED.labels("malformed").inc()
        logger.warning("webhook refused", extra={"reason": str(exc)})
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc
    stored = await run_in_threadpool(apply_event, sessions, event)
    WEBHOOKS_RECEIVED.labels("stored" if stored else "duplicate").inc()
    return WebhookAck(id=event.id, duplicate=not stored)
