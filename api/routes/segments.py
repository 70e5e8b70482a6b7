"""POST /api/internal/segments: agents store final transcript segments and translations."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool

from ..deps import AgentDep, Deps
from ..schemas import SegmentBatch, SegmentsStored
from ..transcripts import ConversationDeleted, SegmentConflict, store_segments

router = APIRouter(tags=["internal"])


@router.post(
    "/api/internal/segments",
    responses={
        401: {"description": "No token, or not a genuine current one"},
        403: {"description": "A genuine token that is not a service token"},
        409: {"description": "A segment id already used in another conversation"},
        410: {"description": "The conversation was deleted"},
    },
)
async def post_segments(batch: SegmentBatch, deps: Deps, _agent: AgentDep) -> SegmentsStored:
    """Store segments once each (by id); translations of known segments are added."""
    try:
        return await run_in_threadpool(store_segments, deps.sessions, batch)
    except SegmentConflict as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"segment {exc} belongs to another conversation"
        ) from exc
    except ConversationDeleted as exc:
        raise HTTPException(status.HTTP_410_GONE, "the conversation was deleted") from exc
