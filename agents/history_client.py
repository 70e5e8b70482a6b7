"""What agents tell the history API: final segments (exactly once) and call reports.

Each segment is validated here, against the same model the API uses (core/payloads.py), so a
bad one is refused alone, at its source. Valid ones go through a bounded in-memory buffer and
are posted with backoff while the API is away (a restart, a deploy). The API stores each
segment id once, so a retry of a post whose answer was lost is harmless. When the call ends,
what is buffered is flushed before the agent leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import ValidationError

from core.errors import TransientError
from core.payloads import CallState, SegmentIn, validation_summary
from core.retry import RetriesExhausted, RetryPolicy, retry
from core.service_auth import mint_service_token
from core.tasks import TaskOwner

from . import metrics

logger = logging.getLogger("kaiwa.history")

BATCH = 50
# A call's worth of segments many times over; past it, the oldest are given up, loudly.
MAX_BUFFERED = 5000
# Segments were acknowledged to the call (captions went out): posted until the call ends.
SEGMENT_POSTS = RetryPolicy(initial_s=0.5, max_s=10.0)
# A report replaces the stored totals and is sent again later in the call: a few tries do.
REPORT_POSTS = RetryPolicy(initial_s=0.5, attempts=3)
# An agent claims the call before it speaks: a few quick tries, then it goes
# on without the context rather than keep the caller in silence.
CLAIM_POSTS = RetryPolicy(initial_s=0.2, max_s=1.0, attempts=4)
# Answers after which the same segments are posted again: the API is busy, or did not accept
# this worker's service token (yet).
RETRIED_STATUSES = frozenset({401, 403, 408, 429})


class SegmentStore:
    """`generation` is the agent's place in its room's line of agents (agents/lease.py): once
    the API answers that a newer one has written (409), nothing more is posted and
    `on_stale` is called, once."""

    def __init__(
        self,
        api_url: str,
        api_key: str,
        api_secret: str,
        *,
        room_sid: str,
        room_name: str,
        generation: int = 0,
        on_stale: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = httpx.AsyncClient(base_url=api_url, timeout=10)
        self._key, self._secret = api_key, api_secret
        self.room_sid, self.room_name = room_sid, room_name
        self.generation = generation
        self._on_stale = on_stale
        self.stale = False
        # What the history held of the call when this agent claimed it (`claim`).
        self.claimed: CallState | None = None
        self._buffer: deque[SegmentIn] = deque()
        metrics.QUEUE_DEPTHS.track("history_segments", self, lambda store: store.pending)
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._tasks = TaskOwner(logger, room=room_name)
        self.stored = 0
        self.refused = 0
        self._batch = BATCH

    def start(self) -> None:
        self._tasks.spawn(self._run(), "segment-store")

    def add(self, fields: dict[str, Any]) -> None:
        """Buffer one segment for the API, or refuse it here when it is not a valid one."""
        if self.stale:
            return  # a newer agent serves the call and writes its history
        try:
            segment = SegmentIn.model_validate(fields)
        except ValidationError as exc:
            self.refused += 1
            metrics.HISTORY_SEGMENTS.labels("refused").inc()
            logger.error(
                "segment refused at its source",
                extra={"segment_id": fields.get("id"), "reason": validation_summary(exc)},
            )
            return
        if len(self._buffer) >= MAX_BUFFERED:
            lost = self._buffer.popleft()
            metrics.HISTORY_SEGMENTS.labels("lost").inc()
            metrics.QUEUE_DROPPED.labels("history_segments").inc()
            logger.error(
                "history API unreachable too long: segment lost", extra={"segment_id": lost.id}
            )
        self._buffer.append(segment)
        self._drained.clear()
        self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                self._drained.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            self._drained.clear()
            await retry(
                self._post_batch,
                SEGMENT_POSTS,
                name="post-segments",
                logger=logger,
                retry_on=(TransientError,),
                message="history API did not take segments; kept for a retry",
            )

    async def _post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST to an internal route as this worker's service. Raises TransientError when
        the API is away or answers that the same request may succeed later."""
        token = mint_service_token(self._key, self._secret, ttl_s=60)
        try:
            response = await self._client.post(
                path, json=body, headers={"Authorization": f"Bearer {token}"}
            )
        except httpx.HTTPError as exc:
            raise TransientError(f"history API unreachable: {exc}") from exc
        if response.status_code in RETRIED_STATUSES or response.status_code >= 500:
            # 401/403: a clock skewed, or a key rotated mid-call and not yet right here or
            # there. Nothing in the request is at fault, so it waits for a fresh token.
            raise TransientError(f"history API answered {response.status_code}")
        return response

    async def _post_batch(self) -> None:
        """Post the next batch and settle it: each segment stored or refused for good, or the
        batch halved when it was too large. Raises TransientError when nothing was settled
        and the same segments are due again after a wait."""
        batch = [self._buffer[i] for i in range(min(self._batch, len(self._buffer)))]
        body = {
            "room_sid": self.room_sid,
            "room_name": self.room_name,
            "generation": self.generation,
            "segments": [s.model_dump(mode="json", exclude_none=True) for s in batch],
        }
        try:
            response = await self._post("/api/internal/segments", body)
        except TransientError:
            metrics.HISTORY_SEGMENTS.labels("retried").inc(len(batch))
            raise
        if response.status_code == 409:
            self._replaced(len(self._buffer))
            return
        if response.status_code == 413 and len(batch) > 1:
            # Long texts with many translations: the API's body limit takes fewer at a time.
            self._batch = max(1, len(batch) // 2)
            metrics.HISTORY_SEGMENTS.labels("retried").inc(len(batch))
            logger.info("history API took a smaller batch", extra={"batch": self._batch})
            return
        for _ in batch:
            self._buffer.popleft()
        if response.is_success:
            answer = response.json()
            self.stored += int(answer.get("stored", 0))
            for outcome in answer.get("results", []):
                if outcome.get("result") in ("stored", "duplicate", "refused"):
                    metrics.HISTORY_SEGMENTS.labels(outcome["result"]).inc()
                if outcome.get("result") == "refused":
                    self.refused += 1
                    logger.error(
                        "history API refused a segment",
                        extra={"segment_id": outcome.get("id"), "reason": outcome.get("reason")},
                    )
        elif response.status_code == 410:
            logger.info("conversation deleted by an admin: its transcript is not kept")
        else:
            # The batch as a whole is malformed (its room sid, its size): no retry mends it.
            self.refused += len(batch)
            metrics.HISTORY_SEGMENTS.labels("refused").inc(len(batch))
            logger.error(
                "history API refused a batch of segments",
                extra={"status": response.status_code, "segments": len(batch)},
            )

    async def report(self, *, usage: dict[str, float], summary: str | None = None) -> bool:
        """Set the call's usage totals (and summary). Totals replace the stored ones, so a
        report retried, or sent again later in the call, never counts twice."""
        if self.stale:
            return False
        body: dict[str, Any] = {
            "room_sid": self.room_sid,
            "room_name": self.room_name,
            "generation": self.generation,
            "usage": usage,
        }
        if summary:
            body["summary"] = summary

        async def post() -> bool:
            response = await self._post("/api/internal/reports", body)
            if response.status_code == 409:
                self._replaced(0)
                return False
            if not response.is_success:
                logger.error(
                    "history API refused the report", extra={"status": response.status_code}
                )
            return response.is_success

        try:
            return await retry(
                post,
                REPORT_POSTS,
                name="post-report",
                logger=logger,
                retry_on=(TransientError,),
                message="history API did not take the report; retried",
            )
        except RetriesExhausted:  # the next report carries the same totals
            return False

    def _replaced(self, dropped: int) -> None:
        """A newer agent serves the call (this one was paused, not dead): what this one still
        holds is not the call's any more."""
        self._buffer.clear()
        if not self.stale:
            self.stale = True
            logger.warning(
                "history API refused a stale generation (409): a newer agent serves the call",
                extra={"generation": self.generation, "dropped": dropped},
            )
            self._on_stale()

    async def claim(self) -> CallState | None:
        """Join the call as this agent's generation: the API refuses every older agent's
        writes from now on. Answers what the history holds of the call so far; None when
        it has nothing (a new call) or cannot be reached in a few tries. A newer agent's
        claim makes this store stale, as a refused write does."""

        async def post() -> CallState | None:
            token = mint_service_token(self._key, self._secret, ttl_s=60)
            try:
                response = await self._client.post(
                    f"/api/internal/conversations/{self.room_sid}/claim",
                    json={"generation": self.generation},
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError as exc:
                raise TransientError(f"history API unreachable: {exc}") from exc
            if response.status_code in RETRIED_STATUSES or response.status_code >= 500:
                raise TransientError(f"history API answered {response.status_code}")
            if response.status_code == 409:
                self._replaced(dropped=0)
                return None
            if not response.is_success:
                return None
            return CallState.model_validate(response.json())

        try:
            self.claimed = await retry(
                post,
                CLAIM_POSTS,
                name="claim-call",
                logger=logger,
                retry_on=(TransientError,),
                message="history API did not take the agent's claim; retried",
            )
        except RetriesExhausted:
            self.claimed = None
        return self.claimed

    async def flush(self, timeout_s: float) -> None:
        """Wait (within the timeout) until everything buffered is delivered."""
        if self._buffer:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)

    async def aclose(self, timeout_s: float = 30.0) -> None:
        """Flush what is buffered (within the timeout), then stop."""
        await self.flush(timeout_s)
        if self._buffer:
            # Retried until now, the end of the call: what is left is lost, and said so.
            logger.error(
                "call ended before the history API took its segments: segments lost",
                extra={"lost": self.pending, "stored": self.stored},
            )
        await self._tasks.aclose()
        await self._client.aclose()
