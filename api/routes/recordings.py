"""Playing recordings: a short-lived presigned URL, or the audio streamed through the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from ..conversations import live_conversation
from ..deps import PresignS3Dep, S3Dep, SessionsDep, SettingsDep, require_admin
from ..log import logger
from ..models import Recording
from ..schemas import PlaybackUrl
from ..storage import (
    ObjectMissing,
    RangeNotSatisfiable,
    StorageUnavailable,
    head,
    parse_range,
    presigned_get,
    read_chunks,
)

router = APIRouter(
    tags=["recordings"],
    dependencies=[Depends(require_admin)],
    responses={
        401: {"description": "No admin session, or an expired or invalid one"},
        404: {"description": "No such recording, or it has no stored file"},
    },
)

RecordingId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
BINARY = {"type": "string", "format": "binary"}


def _object_key(sessions: SessionsDep, recording_id: str) -> str:
    """The stored file's key, from the database only; 404 when there is none to play."""
    with sessions() as session:
        recording = session.get(Recording, recording_id)
        if (
            recording is None
            or recording.object_key is None
            or live_conversation(session, recording.conversation_id) is None
        ):
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such recording file")
        return recording.object_key


@router.get("/api/recordings/{recording_id}/play")
async def play(
    recording_id: RecordingId,
    settings: SettingsDep,
    sessions: SessionsDep,
    presign_s3: PresignS3Dep,
) -> PlaybackUrl:
    """A presigned GET URL for the recording's file, valid for RECORDING_URL_TTL_S."""
    key = await run_in_threadpool(_object_key, sessions, recording_id)
    ttl = settings.recording_url_ttl_s
    url = await run_in_threadpool(presigned_get, presign_s3, settings.s3_bucket, key, ttl)
    return PlaybackUrl(url=url, expires_at=datetime.now(UTC) + timedelta(seconds=ttl))


@router.get(
    "/api/recordings/{recording_id}/audio",
    response_class=StreamingResponse,
    responses={
        200: {"description": "The whole file", "content": {"audio/ogg": {"schema": BINARY}}},
        206: {
            "description": "The requested byte range",
            "content": {"audio/ogg": {"schema": BINARY}},
        },
        416: {"description": "A range outside the file, or not one range of bytes"},
        502: {"description": "The recording store answered with an error"},
    },
)
async def audio(
    recording_id: RecordingId,
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
    s3: S3Dep,
) -> Response:
    """The recording's audio through the API, with byte ranges for seeking in <audio>."""
    bucket = settings.s3_bucket
    key = await run_in_threadpool(_object_key, sessions, recording_id)
    try:
        size, content_type = await run_in_threadpool(head, s3, bucket, key)
    except ObjectMissing as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "recording file is missing") from exc
    except StorageUnavailable as exc:
        logger.error(
            "recording store failed", extra={"recording_id": recording_id, "error": str(exc)}
        )
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY, "the recording store is unavailable; try again"
        ) from exc
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, no-store"}
    requested = request.headers.get("range")
    byte_range = None
    if requested is not None:
        try:
            byte_range = parse_range(requested, size)
        except RangeNotSatisfiable as exc:
            raise HTTPException(
                status.HTTP_416_RANGE_NOT_SATISFIABLE,
                "range not satisfiable",
                headers={**headers, "Content-Range": f"bytes */{exc.size}"},
            ) from exc
        headers["Content-Range"] = byte_range.content_range
    headers["Content-Length"] = str(byte_range.length if byte_range else size)
    # A sync generator: Starlette iterates it in a worker thread, S3 calls included.
    return StreamingResponse(
        read_chunks(s3, bucket, key, byte_range),
        status_code=status.HTTP_206_PARTIAL_CONTENT if byte_range else status.HTTP_200_OK,
        media_type=content_type,
        headers=headers,
    )
