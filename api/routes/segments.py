"""Agents' internal routes: final transcript segments and translations; a call's report."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from fastapi.concurrency import run_in_threadpool

from core.payloads import (
    MAX_USAGE_COUNTERS,
    CallClaim,
    CallReport,
    CallReportStored,
    CallState,
    RoomSid,
    SegmentBatch,
    SegmentsStored,
)

from ..deps import AgentDep, SessionsDep
from ..transcripts import (
    ConversationDeleted,
    NoSuchCall,
    StaleGeneration,
    TooManyCounters,
    claim_call,
    store_report,
    store_segments,
)

router = APIRouter(tags=["internal"])

STALE = "stale generation: a newer agent serves this call"


@router.post(
    "/api/internal/segments",
    responses={
        401: {"description": "No token, or not a genuine current one"},
        403: {"description": "A genuine token that is not a service token"},
        409: {"description": "Stale generation: a newer agent serves the call"},
        410: {"description": "The conversation was deleted"},
    },
)
async def post_segments(
    batch: SegmentBatch, sessions: SessionsDep, _agent: AgentDep
) -> SegmentsStored:
    """Store segments once each (by id); translations of known segments are added.

    Each segment is settled on its own: one that is invalid, or whose id another
    conversation holds, is refused in `results` while the rest are stored."""
    try:
        return await run_in_threadpool(store_segments, sessions, batch)
    except StaleGeneration as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, STALE) from exc
    except ConversationDeleted as exc:
        raise HTTPException(status.HTTP_410_GONE, "the conversation was deleted") from exc


@router.post(
    "/api/internal/reports",
    responses={
        401: {"description": "No token, or not a genuine current one"},
        403: {"description": "A genuine token that is not a service token"},
        409: {"description": "Stale generation: a newer agent serves the call"},
        410: {"description": "The conversation was deleted"},
        422: {"description": "Malformed, or too many distinct usage counters"},
    },
)
async def post_report(
    report: CallReport, sessions: SessionsDep, _agent: AgentDep
) -> CallReportStored:
    """Set a call's summary and usage counters, as shown on its conversation."""
    try:
        return await run_in_threadpool(store_report, sessions, report)
    except StaleGeneration as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, STALE) from exc
    except ConversationDeleted as exc:
        raise HTTPException(status.HTTP_410_GONE, "the conversation was deleted") from exc
    except TooManyCounters as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"a call has at most {MAX_USAGE_COUNTERS} counters",
        ) from exc


@router.post(
    "/api/internal/conversations/{room_sid}/claim",
    responses={
        401: {"description": "No token, or not a genuine current one"},
        403: {"description": "A genuine token that is not a service token"},
        404: {"description": "No conversation has this room sid"},
        409: {"description": "Stale generation: a newer agent serves the call"},
        410: {"description": "The conversation was deleted"},
    },
)
async def claim(
    room_sid: RoomSid, body: CallClaim, sessions: SessionsDep, _agent: AgentDep
) -> CallState:
    """An agent joining a call claims it: every older agent's writes are refused from then
    on. The answer is what it restores: the dialog's turns, its summary and engine; each
    speaker's last segment."""
    try:
        return await run_in_threadpool(claim_call, sessions, room_sid, body.generation)
    except NoSuchCall as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such call") from exc
    except StaleGeneration as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, STALE) from exc
    except ConversationDeleted as exc:
        raise HTTPException(status.HTTP_410_GONE, "the conversation was deleted") from exc
