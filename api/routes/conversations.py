"""The call history for the admin console: list and search, details, transcripts, deletion."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from fastapi.concurrency import run_in_threadpool

from core.languages import Language
from core.protocol import Mode

from ..conversations import (
    conversation_detail,
    delete_conversation,
    list_conversations,
    transcript,
)
from ..deps import S3Dep, SessionsDep, SettingsDep, require_admin
from ..export import to_txt, to_vtt
from ..log import logger
from ..schemas import ConversationDetail, ConversationPage, Transcript
from ..search import ConversationFilters, Cursor
from ..search_terms import MAX_QUERY_CHARS, parse_query

router = APIRouter(
    tags=["history"],
    dependencies=[Depends(require_admin)],
    responses={401: {"description": "No admin session, or an expired or invalid one"}},
)

# Only the form our own ids take: anything else is refused before it reaches a query.
ConversationId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such conversation, or it was deleted"}
}


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"`{name}` needs a time zone, e.g. Z"
        )
    return value


@router.get(
    "/api/conversations",
    responses={422: {"description": "Invalid filter, cursor or query"}},
)
async def get_conversations(
    sessions: SessionsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    started_from: Annotated[
        datetime | None, Query(alias="from", description="started_at ≥ this (ISO 8601)")
    ] = None,
    started_to: Annotated[
        datetime | None, Query(alias="to", description="started_at < this (ISO 8601)")
    ] = None,
    room: Annotated[str | None, Query(max_length=128)] = None,
    participant: Annotated[str | None, Query(max_length=128, description="An identity")] = None,
    mode: Mode | None = None,
    language: Annotated[
        Language | None, Query(description="A participant's or a segment's language")
    ] = None,
    has_recording: bool | None = None,
    q: Annotated[
        str | None,
        Query(
            max_length=MAX_QUERY_CHARS,
            description="Words that must all occur in one segment or translation",
        ),
    ] = None,
) -> ConversationPage:
    """Conversations, newest first, one page at a time; `q` searches the transcripts."""
    try:
        after = Cursor.decode(cursor) if cursor else None
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid cursor") from exc
    query = None
    if q is not None:
        query = parse_query(q)
        if query is None:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT, "`q` has no letters or digits"
            )
    filters = ConversationFilters(
        started_from=_aware(started_from, "from"),
        started_to=_aware(started_to, "to"),
        room=room,
        participant=participant,
        mode=mode,
        language=language,
        has_recording=has_recording,
        query=query,
    )

    def page() -> ConversationPage:
        with sessions() as session:
            return list_conversations(session, filters, limit=limit, cursor=after)

    return await run_in_threadpool(page)


@router.get("/api/conversations/{conversation_id}", responses=NOT_FOUND)
async def get_conversation(
    conversation_id: ConversationId, sessions: SessionsDep
) -> ConversationDetail:
    """A conversation with its participants, transcript, summary, usage and recordings."""

    def read() -> ConversationDetail | None:
        with sessions() as session:
            return conversation_detail(session, conversation_id)

    found = await run_in_threadpool(read)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such conversation")
    return found


async def _transcript(sessions: SessionsDep, conversation_id: str) -> Transcript:
    def read() -> Transcript | None:
        with sessions() as session:
            return transcript(session, conversation_id)

    found = await run_in_threadpool(read)
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such conversation")
    return found


@router.get("/api/conversations/{conversation_id}/transcript", responses=NOT_FOUND)
async def get_transcript(conversation_id: ConversationId, sessions: SessionsDep) -> Transcript:
    """The final segments in order of time, each with its translations."""
    return await _transcript(sessions, conversation_id)


EXPORT_TYPES = {
    "json": "application/json",
    "vtt": "text/vtt; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
}


@router.get(
    "/api/conversations/{conversation_id}/export",
    response_class=Response,
    responses={
        200: {
            "description": "The transcript as a file",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Transcript"}},
                "text/vtt": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        },
        **NOT_FOUND,
    },
)
async def export_transcript(
    conversation_id: ConversationId,
    sessions: SessionsDep,
    format: Literal["json", "vtt", "txt"] = "json",
) -> Response:
    """The transcript as a download: JSON, WebVTT (a voice tag per speaker) or text."""
    found = await _transcript(sessions, conversation_id)
    if format == "json":
        body = found.model_dump_json(indent=1)
    elif format == "vtt":
        body = to_vtt(found)
    else:
        body = to_txt(found)
    return Response(
        body,
        media_type=EXPORT_TYPES[format],
        headers={
            "Content-Disposition": (
                f'attachment; filename="conversation-{conversation_id}.{format}"'
            ),
            "Cache-Control": "no-store",
        },
    )


@router.delete(
    "/api/conversations/{conversation_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **NOT_FOUND,
        502: {"description": "Recording storage failed; the conversation was kept"},
    },
)
async def delete(
    conversation_id: ConversationId, settings: SettingsDep, sessions: SessionsDep, s3: S3Dep
) -> Response:
    """Delete the recordings' files and hide the conversation; written to the audit log."""
    try:
        keys = await run_in_threadpool(
            delete_conversation,
            sessions,
            s3,
            settings.s3_bucket,
            conversation_id,
            actor="admin",
        )
    except (BotoCoreError, ClientError) as exc:
        logger.error(
            "recording deletion failed",
            extra={"conversation_id": conversation_id, "error": exc.__class__.__name__},
        )
        raise HTTPException(
            status.HTTP_502_BAD_GATEWAY,
            "recording storage failed; the conversation was not deleted",
        ) from exc
    if keys is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such conversation")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
